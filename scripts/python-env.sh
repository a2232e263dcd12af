#!/usr/bin/env bash
# A Python virtual environment with aspyx-event and its dependencies at
# pinned versions, for the tests and benchmarks that run a real aspyx-event
# service. Idempotent: an environment already made from the same pins is
# reused as it is.
#
#   scripts/python-env.sh DIR [VERSION]
#
#   DIR      where the environment lives (the test command uses
#            <build dir>/python-env)
#   VERSION  aspyx-event version, default 0.9.3; its pins are
#            tests/aspyx/requirements-aspyx-event-VERSION.txt
#
# The interpreter is Debian's /usr/bin/python3 (3.11, from scripts/deps.sh
# with python3-venv and python3-dev), not a pyenv or other python3 that may
# come first on PATH: it is the one every Debian 12 machine and container the
# project runs on has, and python-qpid-proton is built from source against
# its headers. EW_PYTHON overrides it. Needs the Python package index once;
# pip's cache makes later environments quick.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: scripts/python-env.sh DIR [VERSION]}
version=${2:-0.9.3}
python=${EW_PYTHON:-/usr/bin/python3}
req=$root/tests/aspyx/requirements-aspyx-event-$version.txt

if [ ! -f "$req" ]; then
    echo "python-env: no pins for aspyx-event $version (expected $req)" >&2
    exit 2
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "python-env: $python lacks venv/ensurepip: run scripts/deps.sh (python3-venv)" >&2
    exit 1
fi

mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9    # one maker at a time (parallel ctest runs share the directory)

want=$( { "$python" -c 'import sys; print(sys.version)'; cat "$req"; } | sha256sum | cut -d' ' -f1)
stamp=$dir/.eventwire-pins
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
   "$dir/bin/python" -c 'import aspyx_event, proton' 2>/dev/null; then
    echo "python-env: $dir is up to date (aspyx-event $version)"
    exit 0
fi

echo "python-env: creating $dir (aspyx-event $version, $("$python" --version))"
rm -rf "$dir"
"$python" -m venv "$dir"
# Exact pins only: --no-deps keeps pip's resolver from adding or moving
# anything; pip check then proves the set is complete and consistent.
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$req"
"$dir/bin/python" -m pip check
"$dir/bin/python" -c 'import importlib.metadata as m, aspyx_event, proton; print("python-env: aspyx-event", m.version("aspyx-event"), "aspyx", m.version("aspyx"), "python-qpid-proton", m.version("python-qpid-proton"))'
echo "$want" > "$stamp"
echo "python-env: ready $dir"
