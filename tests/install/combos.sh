#!/usr/bin/env bash
# combos.sh SOURCE_DIR WORK_DIR CONSUMER_SRC
# For each choice of transports (none, each alone, all), builds only the
# libraries of SOURCE_DIR (no optimisation, no tests), installs them into a
# scratch prefix and builds and runs the consumer against the installed
# package with the shared and the static library: the package of every
# combination must link.
set -euo pipefail
src=$1 work=$2 consumer=$3
rm -rf "$work"
mkdir -p "$work"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
pass=0
for combo in "OFF OFF OFF" "ON OFF OFF" "OFF ON OFF" "OFF OFF ON" "ON ON ON"; do
    read -r rmq stomp amqp <<<"$combo"
    name=rabbitmq-$rmq.stomp-$stomp.amqp-$amqp
    b=$work/$name
    cmake -S "$src" -B "$b/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O0 \
          -DEW_WITH_RABBITMQ=$rmq -DEW_WITH_STOMP=$stomp -DEW_WITH_AMQP=$amqp \
          -DEW_BUILD_TESTS=OFF -DEW_BUILD_EXAMPLES=OFF -DEW_BUILD_BENCH=OFF \
          -DEW_BUILD_TOOLS=OFF >"$b.log" 2>&1 || { cat "$b.log" >&2; echo "$name: configure failed" >&2; exit 1; }
    cmake --build "$b/build" -j2 >>"$b.log" 2>&1 || { tail -n 40 "$b.log" >&2; echo "$name: build failed" >&2; exit 1; }
    cmake --install "$b/build" --prefix "$b/prefix" >>"$b.log" 2>&1
    for kind in shared static; do
        cmake -S "$consumer" -B "$b/consumer-$kind" -DCMAKE_PREFIX_PATH="$b/prefix" \
              -DEW_CONSUMER_STATIC=$([ $kind = static ] && echo ON || echo OFF) >>"$b.log" 2>&1 &&
            cmake --build "$b/consumer-$kind" >>"$b.log" 2>&1 ||
            { tail -n 40 "$b.log" >&2; echo "$name: the consumer ($kind) does not build against the installed package" >&2; exit 1; }
        out=$(LD_LIBRARY_PATH="$b/prefix/lib:$b/prefix/lib64:${LD_LIBRARY_PATH:-}" "$b/consumer-$kind/consumer")
        echo "$name ($kind): $out"
        [ "$out" = "consumer got 42 over local://" ] || { echo "$name ($kind): unexpected output" >&2; exit 1; }
    done
    pass=$((pass + 1))
    rm -rf "$b/build" # keep the log and the prefix, not the objects
done
echo "$pass passed, 0 failed"
