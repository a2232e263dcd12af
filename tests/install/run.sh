#!/usr/bin/env bash
# run.sh BUILD_DIR WORK_DIR CONSUMER_SRC "EXTRA_FLAGS"
set -euo pipefail
build=$1 work=$2 src=$3 flags=${4:-}
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null

# 1. CMake package, shared and static library.
for kind in shared static; do
    cmake -S "$src" -B "$work/cmake-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
          -DEW_CONSUMER_STATIC=$([ $kind = static ] && echo ON || echo OFF) \
          -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
    cmake --build "$work/cmake-$kind" >/dev/null
    out=$(LD_LIBRARY_PATH="$prefix/lib:$prefix/lib64:${LD_LIBRARY_PATH:-}" "$work/cmake-$kind/consumer")
    echo "cmake ($kind): $out"
    [ "$out" = "consumer got 42 over local://" ]
done
if ldd "$work/cmake-static/consumer" | grep -q libeventwire; then
    echo "static consumer links libeventwire dynamically" >&2
    exit 1
fi

# 2. pkg-config.
libdir=$(ls -d "$prefix"/lib*/pkgconfig | head -n1)
cflags=$(PKG_CONFIG_PATH=$libdir pkg-config --cflags eventwire)
libs=$(PKG_CONFIG_PATH=$libdir pkg-config --libs eventwire)
cc -std=c11 $flags $cflags "$src/consumer.c" -o "$work/pc-consumer" $libs -lpthread
out=$(LD_LIBRARY_PATH="$(dirname "$libdir")" "$work/pc-consumer")
echo "pkg-config: $out"
[ "$out" = "consumer got 42 over local://" ]

# 3. The eventwire command, when the build has it (EW_BUILD_TOOLS).
if [ -e "$build/tools/eventwire/eventwire" ]; then
    "$prefix/bin/eventwire" --help | grep -q "^Usage: eventwire <command>"
    echo "bin/eventwire: installed and runs"
fi
echo "1 passed, 0 failed"
