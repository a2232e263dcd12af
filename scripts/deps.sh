#!/usr/bin/env bash
# Install what eventwire's build and tests need on Debian 12, idempotently.
#
#   scripts/deps.sh             build + test tools and libraries
#   scripts/deps.sh --brokers   the same plus what scripts/brokers/ needs:
#                               rabbitmq-server, activemq, a Java 17 runtime,
#                               Maven (fetches Artemis), openssl (the test
#                               certificates), iproute2 (ss)
#   scripts/deps.sh --bench     the same plus gnuplot-nox (the plots of
#                               scripts/bench); not needed by the tests
#
# Fast path: when every package is already installed (checked with
# dpkg-query) no apt-get runs at all. Otherwise the package lists are
# refreshed once if they are missing or older than a day, and only the
# missing packages are installed, without recommends.
set -euo pipefail

BUILD_PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev
            libmsgpack-dev libjansson-dev uuid-dev libssl-dev libcmocka-dev
            librabbitmq-dev libqpid-proton11-dev python3-qpid-proton
            valgrind gdb python3        # gdb: a test service that hangs prints its stacks
            python3-prometheus-client   # tests/unit/check_prometheus.py: the Prometheus text parser
            python3-venv python3-dev    # scripts/python-env.sh: venv, headers to build python-qpid-proton
            libmicrohttpd-dev           # eventwire serve, the HTTP gateway
            chromium nodejs npm)        # tests/gateway: the page in headless Chromium (playwright-core)
# activemq depends on "default-jre-headless | java7-runtime-headless"; name
# the runtime explicitly so that --no-install-recommends never leaves the
# broker without a JVM.
# scripts/brokers/artemis.sh fetches Artemis with Maven (a `mvn` already on
# PATH, e.g. one unpacked by hand, is used as it is); certs.sh makes the test
# certificates with the openssl command; lib.sh names a port's owner with ss.
# docker-compose: the test command checks docker/'s compose files with it.
BROKER_PKGS=(rabbitmq-server activemq default-jre-headless maven openssl iproute2
             docker-compose)

BENCH_PKGS=(gnuplot-nox)

want_brokers=0 want_bench=0
for arg in "$@"; do
    case "$arg" in
        --brokers) want_brokers=1 ;;
        --bench) want_bench=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "deps.sh: unknown argument '$arg' (use --brokers, --bench or --help)" >&2; exit 2 ;;
    esac
done

pkgs=("${BUILD_PKGS[@]}")
[ "$want_brokers" = 1 ] && pkgs+=("${BROKER_PKGS[@]}")
[ "$want_bench" = 1 ] && pkgs+=("${BENCH_PKGS[@]}")

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${pkgs[@]}"; do
    # Any installed Java 17+ runtime satisfies activemq: do not pull a second one.
    if [ "$p" = default-jre-headless ] && { is_installed openjdk-17-jre-headless || is_installed default-jre-headless; }; then
        continue
    fi
    # Any Node.js 18 or later with npm on PATH will do (the browser test).
    if { [ "$p" = nodejs ] || [ "$p" = npm ]; } && command -v npm >/dev/null 2>&1 &&
       [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge 18 ]; then
        continue
    fi
    # Any Maven on PATH will do (artemis.sh only runs `mvn`).
    if [ "$p" = maven ] && command -v mvn >/dev/null 2>&1; then
        continue
    fi
    is_installed "$p" || missing+=("$p")
done

# promtool (`promtool check metrics`, the Prometheus project's own checker of
# the text format, run by the metrics tests) ships in Debian's prometheus
# package, which also brings a server and its service: only the promtool
# binary is taken out of the package, into /usr/local/bin.
need_promtool=0
command -v promtool >/dev/null 2>&1 || need_promtool=1

if [ "${#missing[@]}" -eq 0 ] && [ "$need_promtool" = 0 ]; then
    echo "deps.sh: all required packages present, nothing to do"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    [ "${#missing[@]}" -eq 0 ] || echo "deps.sh: missing packages: ${missing[*]}" >&2
    [ "$need_promtool" = 0 ] || echo "deps.sh: missing: promtool (from the prometheus package)" >&2
    echo "deps.sh: run as root to install them" >&2
    exit 1
fi

# Refresh the lists once when they are absent or older than a day: on a fresh
# image they are usually absent, and installing from stale lists fails with 404s.
lists=/var/lib/apt/lists
fresh=$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)
if [ -z "$fresh" ]; then
    echo "deps.sh: package lists missing or older than a day: apt-get update"
    apt-get update
fi

if [ "${#missing[@]}" -ne 0 ]; then
    echo "deps.sh: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    still=()
    for p in "${missing[@]}"; do is_installed "$p" || still+=("$p"); done
    if [ "${#still[@]}" -ne 0 ]; then
        echo "deps.sh: FAILED, still missing after install: ${still[*]}" >&2
        exit 1
    fi
fi

if [ "$need_promtool" = 1 ]; then
    echo "deps.sh: promtool: taken from Debian's prometheus package into /usr/local/bin"
    tmp=$(mktemp -d)
    chmod 755 "$tmp" # apt fetches as the user _apt
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download prometheus >/dev/null) ||
        { echo "deps.sh: FAILED: apt-get download prometheus" >&2; exit 1; }
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    install -m 0755 "$tmp/x/usr/bin/promtool" /usr/local/bin/promtool
    promtool --version >/dev/null 2>&1 || { echo "deps.sh: FAILED: promtool does not run" >&2; exit 1; }
fi
echo "deps.sh: done"
