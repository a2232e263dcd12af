#!/usr/bin/env bash
# Multi-host tests: services on two network hosts, the broker on a third
# (network namespaces with their own addresses, made by netns.sh), a link
# cut in the middle of a stream (scenario.py). RabbitMQ and Artemis run in
# the broker namespace (scripts/brokers/*.sh with EW_RMQ_BIND /
# EW_ARTEMIS_BIND=0.0.0.0, which there means the namespace's addresses
# only), with their own state; the namespaces and the brokers go at the end,
# also on failure or interruption. A broker starts only when a URL needs it
# (a label starting with "artemis" needs Artemis).
#
#   run.sh SERVICE [LABEL=URL_TEMPLATE...]
#
# A URL template names the broker host as BROKER (h1 and h2 reach it at
# different addresses). Default: rabbitmq://, stomp:// and amqp:// with the
# rabbitmq dialect, and amqp:// and stomp:// on Artemis, heart-beats of 1 s
# and reconnects within 2 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
service=${1:?usage: run.sh SERVICE [LABEL=URL_TEMPLATE...]}
shift
[ -x "$service" ] || { echo "run.sh: $service is not an executable" >&2; exit 2; }
if [ $# -eq 0 ]; then
    opts="heartbeat_ms=1000&reconnect_max_ms=2000"
    set -- "rabbitmq=rabbitmq://guest:guest@BROKER:5672/?$opts" \
           "stomp-rabbitmq=stomp://guest:guest@BROKER:61613/?dialect=rabbitmq&$opts" \
           "amqp-rabbitmq=amqp://guest:guest@BROKER:5672?dialect=rabbitmq&$opts" \
           "artemis-amqp=amqp://artemis:artemis@BROKER:5673?dialect=artemis&$opts" \
           "artemis-stomp=stomp://artemis:artemis@BROKER:61623?dialect=artemis&$opts"
fi
need_rmq=0 need_art=0
for spec in "$@"; do
    case "$spec" in artemis*) need_art=1 ;; *) need_rmq=1 ;; esac
done

name=ewh$$
state=/tmp/eventwire-hosts-$name
rmq() {
    ip netns exec "$name-b" env EW_RMQ_BIND=0.0.0.0 EW_BROKER_STATE="$state" \
        "$root/scripts/brokers/rabbitmq.sh" "$@"
}
art() {
    ip netns exec "$name-b" env EW_ARTEMIS_BIND=0.0.0.0 EW_BROKER_STATE="$state" \
        "$root/scripts/brokers/artemis.sh" "$@"
}
cleanup() {
    set +e
    [ "$need_rmq" = 1 ] && rmq stop >/dev/null 2>&1
    [ "$need_art" = 1 ] && art stop >/dev/null 2>&1
    # What survived a failed stop, in the broker's namespace only.
    for pid in $(ip netns pids "$name-b" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    for ns in "$name-h1" "$name-h2"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    done
    "$here/netns.sh" down "$name"
    rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$here/netns.sh" up "$name"
echo "run.sh: hosts $name-b (10.201.1.1, 10.201.2.1), $name-h1 (10.201.1.2), $name-h2 (10.201.2.2)"
[ "$need_rmq" = 1 ] && rmq start
[ "$need_art" = 1 ] && art start
# What scenario.py needs to prove that Artemis stranded a delivery, and to
# restart it then.
art_cmd="ip netns exec $name-b env EW_ARTEMIS_BIND=0.0.0.0 EW_BROKER_STATE=$state $root/scripts/brokers/artemis.sh"
export EW_HOSTS_BROKER_STAT="$art_cmd ctl queue stat --json --maxRows=1000"
export EW_HOSTS_BROKER_RESTART="$art_cmd stop && $art_cmd start"
status=0
for spec in "$@"; do
    label=${spec%%=*} template=${spec#*=}
    echo "==== $label"
    if ! /usr/bin/python3 "$here/scenario.py" "$service" "$name" "$label" \
            "${template//BROKER/10.201.1.1}" "${template//BROKER/10.201.2.1}"; then
        echo "run.sh: $label FAILED"
        # The broker's view: messages held, delivering, consumers per queue.
        case "$label" in
            artemis*) art ctl queue stat 2>&1 | grep -v '^$' | tail -n 30 || true
                      echo "run.sh: the broker's warnings and errors:"
                      grep -E ' (WARN|ERROR) ' "$state/artemis/instance/log/artemis.log" 2>/dev/null |
                          tail -n 40 || true ;;
            *) rmq ctl list_queues name messages_ready messages_unacknowledged consumers 2>&1 |
                   tail -n 30 || true ;;
        esac
        status=1
    fi
done
exit $status
