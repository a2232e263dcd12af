#!/usr/bin/env bash
# A primary/backup pair of ActiveMQ Artemis brokers with replication on
# 127.0.0.1, for eventwire's failover tests, beside the single broker of
# artemis.sh (other ports, other state).
#
#   scripts/brokers/artemis-pair.sh start          a fresh pair: the primary, then the
#                                                  backup, until it is in sync
#   scripts/brokers/artemis-pair.sh stop           stop both (state kept until the next
#                                                  start, which wipes it)
#   scripts/brokers/artemis-pair.sh status         each broker; exit 0 when the primary is
#                                                  active and the backup in sync
#   scripts/brokers/artemis-pair.sh kill primary   hard kill of the primary's JVM: the
#                                                  backup becomes active
#   scripts/brokers/artemis-pair.sh kill backup    hard kill of the backup's JVM
#   scripts/brokers/artemis-pair.sh wait-active backup
#                                                  wait until the backup serves clients
#
# Ports on 127.0.0.1 (the backup opens its acceptors only when it becomes
# active):
#                     primary  backup
#   AMQP 1.0          5701     5711
#   STOMP             61701    61711
#   AMQP over TLS     5702     5712
#   STOMP over TLS    61702    61712
#   core              61703    61713   (replication and the cluster connection)
# URLs with both hosts:
#   amqp://artemis:artemis@127.0.0.1:5701,127.0.0.1:5711/?dialect=artemis
#   stomp://artemis:artemis@127.0.0.1:61701,127.0.0.1:61711/?dialect=artemis
# Each broker is an artemis.sh instance (EW_ARTEMIS_HA=primary|backup) with
# its state in ${EW_BROKER_STATE:-/tmp/eventwire-brokers}/artemis-pair/{primary,backup}.
set -euo pipefail
export EW_SCRIPT=artemis-pair.sh
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=scripts/brokers/lib.sh
. "$HERE/lib.sh"

BASE=$EW_BROKER_STATE/artemis-pair

# member ROLE CMD ARGS...: artemis.sh CMD for the primary or the backup.
member() {
    local role=$1 amqp stomp amqps stomps core peer; shift
    case "$role" in
        primary) amqp=5701 stomp=61701 amqps=5702 stomps=61702 core=61703 peer=61713 ;;
        backup)  amqp=5711 stomp=61711 amqps=5712 stomps=61712 core=61713 peer=61703 ;;
        *) die "ROLE must be primary or backup (not '$role')" ;;
    esac
    EW_BROKER_STATE=$BASE/$role EW_ARTEMIS_HA=$role EW_ARTEMIS_PEER_CORE=$peer \
    EW_ARTEMIS_AMQP_PORT=$amqp EW_ARTEMIS_STOMP_PORT=$stomp \
    EW_ARTEMIS_AMQPS_PORT=$amqps EW_ARTEMIS_STOMPS_PORT=$stomps EW_ARTEMIS_CORE_PORT=$core \
        "$HERE/artemis.sh" "$@" 9>&-
}

do_start() {
    need_root
    if member primary status >/dev/null 2>&1 && member backup status >/dev/null 2>&1; then
        say "already running, in sync: reusing it"
        return 0
    fi
    do_stop
    local role
    for role in primary backup; do
        case "$BASE/$role" in
            */artemis-pair/*) rm -rf "${BASE:?}/$role" ;;
        esac
    done
    member primary start
    member backup start
    say "ready: primary AMQP 127.0.0.1:5701 STOMP 127.0.0.1:61701; backup (in sync) AMQP 127.0.0.1:5711 STOMP 127.0.0.1:61711"
}

do_stop() {
    member backup stop
    member primary stop
}

do_status() {
    local rc=0
    member primary status || rc=1
    member backup status || rc=1
    return $rc
}

# wait_active ROLE: until ROLE is active with its ports open (after a failover).
wait_active() {
    local role=$1 deadline=$((SECONDS + 120))
    until member "$role" status 2>/dev/null | grep -q 'ports .* accept'; do
        [ "$SECONDS" -lt "$deadline" ] || die "the $role did not become active within 120 s"
        sleep 0.2
    done
    say "the $role is active"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    start)  with_lock artemis-pair do_start ;;
    stop)   with_lock artemis-pair do_stop ;;
    status) do_status ;;
    kill)   member "${1:-}" kill ;;
    wait-active) wait_active "${1:-}" ;;
    *) sed -n '2,31p' "$0" >&2; exit 2 ;;
esac
