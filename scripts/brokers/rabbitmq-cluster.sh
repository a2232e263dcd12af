#!/usr/bin/env bash
# A three-node RabbitMQ cluster on 127.0.0.1 for eventwire's cluster tests,
# beside the single broker of rabbitmq.sh (other ports, other node names).
#
#   scripts/brokers/rabbitmq-cluster.sh start          three fresh nodes joined into one
#                                                      cluster (reused when all three run
#                                                      clustered already)
#   scripts/brokers/rabbitmq-cluster.sh stop           stop the three nodes (state kept until
#                                                      the next start, which wipes it)
#   scripts/brokers/rabbitmq-cluster.sh status         each node, and the cluster's running
#                                                      members; exit 0 when all three run
#   scripts/brokers/rabbitmq-cluster.sh kill NODE      hard kill of node NODE (1, 2 or 3)
#   scripts/brokers/rabbitmq-cluster.sh restart NODE   start node NODE again (after kill or
#                                                      stop): it rejoins the cluster
#   scripts/brokers/rabbitmq-cluster.sh stop_app NODE  rabbitmqctl stop_app on node NODE
#   scripts/brokers/rabbitmq-cluster.sh ctl NODE ARGS  rabbitmqctl ARGS against node NODE
#
# Node N (1..3) is ewcN@localhost with AMQP 0-9-1/1.0 on 5681+N (5682, 5683,
# 5684), STOMP on 61681+N, TLS AMQP on 5691+N and TLS STOMP on 61691+N,
# Erlang distribution on its AMQP port + 20000; its state is
# ${EW_BROKER_STATE:-/tmp/eventwire-brokers}/rmq-cluster/nN (each node is a
# rabbitmq.sh node with its own EW_BROKER_STATE). The nodes share the
# Erlang cookie of the user rabbitmq. Every node runs the STOMP and AMQP 1.0
# plugins (AMQP 1.0 on the node's AMQP port). URLs for the cluster:
#   rabbitmq://guest:guest@127.0.0.1:5682,127.0.0.1:5683,127.0.0.1:5684/
#   stomp://guest:guest@127.0.0.1:61682,127.0.0.1:61683,127.0.0.1:61684/?dialect=rabbitmq&amqp_port=5682,5683,5684
#   amqp://guest:guest@127.0.0.1:5682,127.0.0.1:5683,127.0.0.1:5684/?dialect=rabbitmq
# EW_RMQC_BASE_PORT (default 5681) and EW_RMQC_STOMP_BASE (61681),
# EW_RMQC_TLS_BASE (5691), EW_RMQC_STOMPS_BASE (61691) move the ports.
set -euo pipefail
export EW_SCRIPT=rabbitmq-cluster.sh
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=scripts/brokers/lib.sh
. "$HERE/lib.sh"

BASE=$EW_BROKER_STATE/rmq-cluster
NODES=(1 2 3)
AMQP_BASE=${EW_RMQC_BASE_PORT:-5681}
STOMP_BASE=${EW_RMQC_STOMP_BASE:-61681}
AMQPS_BASE=${EW_RMQC_TLS_BASE:-5691}
STOMPS_BASE=${EW_RMQC_STOMPS_BASE:-61691}

node_name() { echo "ewc$1@localhost"; }

# node N CMD ARGS...: rabbitmq.sh CMD for node N.
node() {
    local n=$1; shift
    EW_BROKER_STATE=$BASE/n$n \
    EW_RMQ_NODENAME=$(node_name "$n") \
    EW_RMQ_AMQP_PORT=$((AMQP_BASE + n)) \
    EW_RMQ_STOMP_PORT=$((STOMP_BASE + n)) \
    EW_RMQ_AMQPS_PORT=$((AMQPS_BASE + n)) \
    EW_RMQ_STOMPS_PORT=$((STOMPS_BASE + n)) \
        "$HERE/rabbitmq.sh" "$@" 9>&-
}

check_node() {
    case "${1:-}" in
        1 | 2 | 3) ;;
        *) die "NODE must be 1, 2 or 3 (not '${1:-}')" ;;
    esac
}

# members N: the running nodes of the cluster as node N sees them, sorted.
members() {
    node "$1" ctl cluster_status --formatter json 2>/dev/null |
        python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["running_nodes"])))'
}

all_three() { echo "$(node_name 1) $(node_name 2) $(node_name 3)"; }

clustered() {
    local n
    for n in "${NODES[@]}"; do
        node "$n" status >/dev/null 2>&1 || return 1
    done
    [ "$(members 1 || true)" = "$(all_three)" ]
}

# join_node N: node N leaves whatever it was part of and joins node 1;
# up to three attempts, each from a reset node.
join_node() {
    local n=$1 try
    for try in 1 2 3; do
        node "$n" ctl stop_app >/dev/null || die "stop_app on node $n failed"
        if [ "$try" -gt 1 ]; then
            node "$n" ctl reset >/dev/null || die "reset on node $n failed"
        fi
        if node "$n" ctl join_cluster "$(node_name 1)" >"$BASE/n$n.join.log" 2>&1; then
            node "$n" ctl start_app >/dev/null || die "start_app on node $n failed"
            return 0
        fi
        say "node $n: join attempt $try failed:"
        tail -n 5 "$BASE/n$n.join.log" >&2
    done
    die "node $n could not join $(node_name 1) in three attempts"
}

do_start() {
    need_root
    local t0=$SECONDS n
    if clustered; then
        say "the three nodes run clustered already, reusing them"
        return 0
    fi
    say "starting three fresh nodes (state $BASE)"
    for n in "${NODES[@]}"; do
        node "$n" stop >/dev/null 2>&1 || true
    done
    case "$BASE" in
        */rmq-cluster) rm -rf "$BASE" ;;
        *) die "refusing to delete $BASE" ;;
    esac
    # The three boot at the same time; each start waits for its own node.
    local pids=() failed=0
    for n in "${NODES[@]}"; do
        # The plugins file written here spares each node an offline
        # rabbitmq-plugins run (an Erlang VM start) while the three boot.
        mkdir -p "$BASE/n$n/rabbitmq/etc"
        echo '[rabbitmq_stomp,rabbitmq_amqp1_0].' >"$BASE/n$n/rabbitmq/etc/enabled_plugins"
        node "$n" start >"$BASE/n$n.start.log" 2>&1 &
        pids+=($!)
    done
    for n in "${NODES[@]}"; do
        if ! wait "${pids[$((n - 1))]}"; then
            say "node $n did not start:"
            cat "$BASE/n$n.start.log" >&2
            failed=1
        fi
    done
    [ "$failed" = 0 ] || die "the cluster did not start (state $BASE)"
    say "three nodes up after $((SECONDS - t0)) s; joining 2 and 3 to $(node_name 1)"
    # One node at a time: two joins at once change the schema on the seed
    # node concurrently, and mnesia may abort one of them ("sync_dump_log,
    # schema_prepare"). A join that fails anyway is retried on a reset node.
    for n in 2 3; do
        join_node "$n"
    done
    local deadline=$((SECONDS + 60))
    until [ "$(members 1 || true)" = "$(all_three)" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "the cluster has running nodes '$(members 1 || true)', not '$(all_three)'"
        sleep 0.5
    done
    say "cluster ready after $((SECONDS - t0)) s: $(all_three); AMQP on" \
        "127.0.0.1:$((AMQP_BASE + 1)),127.0.0.1:$((AMQP_BASE + 2)),127.0.0.1:$((AMQP_BASE + 3))"
}

do_stop() {
    need_root
    local n
    # The joined nodes first, the seed node last.
    for n in 3 2 1; do
        if [ -d "$BASE/n$n" ]; then
            node "$n" stop || say "node $n: stop failed"
        fi
    done
}

do_status() {
    local n rc=0
    for n in "${NODES[@]}"; do
        if node "$n" status >/dev/null 2>&1; then
            say "node $n ($(node_name "$n"), AMQP $((AMQP_BASE + n))): running"
        else
            say "node $n ($(node_name "$n"), AMQP $((AMQP_BASE + n))): not running"
            rc=1
        fi
    done
    for n in "${NODES[@]}"; do
        if node "$n" status >/dev/null 2>&1; then
            say "running members as node $n sees them: $(members "$n" || echo '?')"
            break
        fi
    done
    return "$rc"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    start)    with_lock rmq-cluster do_start ;;
    stop)     with_lock rmq-cluster do_stop ;;
    status)   do_status ;;
    kill)     check_node "${1:-}"; node "$1" kill ;;
    restart)  check_node "${1:-}"; node "$1" start ;;
    stop_app) check_node "${1:-}"; node "$1" ctl stop_app ;;
    ctl)      check_node "${1:-}"; n=$1; shift; node "$n" ctl "$@" ;;
    *) sed -n '2,29p' "$0" >&2; exit 2 ;;
esac
