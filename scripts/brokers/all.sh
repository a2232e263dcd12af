#!/usr/bin/env bash
# Every broker eventwire tests against: RabbitMQ and ActiveMQ 5, on 127.0.0.1.
#
#   scripts/brokers/all.sh start    start both (reusing running ones); fails if either fails
#   scripts/brokers/all.sh stop     stop both, even when one of them fails to stop
#   scripts/brokers/all.sh status   status of both; exit 0 only if both run
set -uo pipefail
here=$(dirname "$(readlink -f "$0")")

case "${1:-}" in
    start)
        "$here/rabbitmq.sh" start || { echo "all.sh: ERROR: RabbitMQ did not start" >&2; exit 1; }
        "$here/activemq.sh" start || { echo "all.sh: ERROR: ActiveMQ did not start" >&2; exit 1; }
        echo "all.sh: both brokers ready"
        ;;
    stop)
        rc=0
        "$here/activemq.sh" stop || rc=1
        "$here/rabbitmq.sh" stop || rc=1
        [ "$rc" = 0 ] && echo "all.sh: both brokers stopped" || echo "all.sh: ERROR: a broker did not stop" >&2
        exit "$rc"
        ;;
    status)
        rc=0
        "$here/rabbitmq.sh" status || rc=1
        "$here/activemq.sh" status || rc=1
        exit "$rc"
        ;;
    *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
