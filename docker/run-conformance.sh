#!/usr/bin/env bash
# Runs eventwire's conformance suite against the brokers of
# docker/docker-compose.yml: ActiveMQ Artemis (AMQP 1.0 and STOMP, the
# artemis dialects, on the image's version) and RabbitMQ 3.x (AMQP 1.0 and
# STOMP, the rabbitmq dialects), plus the AMQP 1.0 integration tests against
# that RabbitMQ. Needs a Docker engine with Compose v2 (docker compose) or
# docker-compose, and a build with tests (cmake -S . -B build).
#
#   docker/run-conformance.sh [BUILD_DIR]   default: build
#
# Environment: ARTEMIS_USER/ARTEMIS_PASSWORD, RABBITMQ_USER/RABBITMQ_PASSWORD
# (the compose file's defaults otherwise), EW_KEEP_CONTAINERS=1 to leave the
# containers running afterwards, EW_COMPOSE=0 when the brokers were started
# elsewhere (the hosted CI starts them on the runner and runs this script in
# a Debian 12 container on the host network). Exit status: 0 when every run
# passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-$root/build}
[ -d "$build" ] || { echo "run-conformance: no build directory $build" >&2; exit 2; }
conformance=$build/tests/conformance/conformance
[ -x "$conformance" ] || { echo "run-conformance: $conformance is not built" >&2; exit 2; }

export ARTEMIS_USER=${ARTEMIS_USER:-artemis} ARTEMIS_PASSWORD=${ARTEMIS_PASSWORD:-artemis}
export RABBITMQ_USER=${RABBITMQ_USER:-eventwire} RABBITMQ_PASSWORD=${RABBITMQ_PASSWORD:-eventwire}

compose=()
if [ "${EW_COMPOSE:-1}" != 0 ]; then
    if docker compose version >/dev/null 2>&1; then
        compose=(docker compose -f "$here/docker-compose.yml")
    elif command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose -f "$here/docker-compose.yml")
    else
        echo "run-conformance: neither 'docker compose' nor docker-compose is available" >&2
        exit 2
    fi
    if [ "${EW_KEEP_CONTAINERS:-0}" != 1 ]; then
        trap '"${compose[@]}" down -v >/dev/null 2>&1 || true' EXIT
    fi
    echo "run-conformance: starting the brokers"
    "${compose[@]}" up -d
fi

# Ready when each port accepts a connection (--wait is not in every Compose).
wait_port() {
    local port=$1 deadline=$((SECONDS + 180))
    until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "run-conformance: nothing listens on 127.0.0.1:$port after 180 s" >&2
            [ "${#compose[@]}" -eq 0 ] || "${compose[@]}" logs --tail 50 >&2 || true
            exit 1
        fi
        sleep 1
    done
}
for p in 5673 61623 5674 61633; do wait_port "$p"; done
# Artemis opens its acceptors a moment before it is active; RabbitMQ its
# plugins' listeners before the vhost is ready. A short grace period.
sleep 5

failed=()
run() {
    local label=$1; shift
    echo
    echo "==== $label"
    if "$@"; then echo "==== $label: passed"; else echo "==== $label: FAILED"; failed+=("$label"); fi
}

a_auth="$ARTEMIS_USER:$ARTEMIS_PASSWORD"
r_auth="$RABBITMQ_USER:$RABBITMQ_PASSWORD"
run "conformance amqp artemis" "$conformance" "amqp://$a_auth@127.0.0.1:5673?dialect=artemis"
run "conformance stomp artemis" "$conformance" "stomp://$a_auth@127.0.0.1:61623?dialect=artemis"
run "conformance amqp rabbitmq" "$conformance" "amqp://$r_auth@127.0.0.1:5674?dialect=rabbitmq"
run "conformance stomp rabbitmq" "$conformance" \
    "stomp://$r_auth@127.0.0.1:61633?dialect=rabbitmq&amqp_port=5674"
run "amqp integration tests on the rabbitmq container" \
    env EW_TEST_AMQP_URL="amqp://$r_auth@127.0.0.1:5674?dialect=rabbitmq" \
    ctest --test-dir "$build" --output-on-failure -R '^amqp_(interop|headers|errors)$'

echo
if [ "${#failed[@]}" -ne 0 ]; then
    echo "run-conformance: FAILED: ${failed[*]}"
    exit 1
fi
echo "run-conformance: all passed"
