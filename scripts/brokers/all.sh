#!/usr/bin/env bash
# Every broker eventwire tests against: RabbitMQ, ActiveMQ 5 and ActiveMQ
# Artemis, on 127.0.0.1.
#
#   scripts/brokers/all.sh start    start all three (reusing running ones); fails if any fails
#   scripts/brokers/all.sh stop     stop all three, even when one of them fails to stop
#   scripts/brokers/all.sh status   status of all three; exit 0 only if all run
set -uo pipefail
here=$(dirname "$(readlink -f "$0")")

case "${1:-}" in
    start)
        "$here/rabbitmq.sh" start || { echo "all.sh: ERROR: RabbitMQ did not start" >&2; exit 1; }
        "$here/activemq.sh" start || { echo "all.sh: ERROR: ActiveMQ did not start" >&2; exit 1; }
        "$here/artemis.sh" start || { echo "all.sh: ERROR: Artemis did not start" >&2; exit 1; }
        echo "all.sh: all three brokers ready"
        ;;
    stop)
        rc=0
        "$here/artemis.sh" stop || rc=1
        "$here/activemq.sh" stop || rc=1
        "$here/rabbitmq.sh" stop || rc=1
        [ "$rc" = 0 ] && echo "all.sh: all three brokers stopped" || echo "all.sh: ERROR: a broker did not stop" >&2
        exit "$rc"
        ;;
    status)
        rc=0
        "$here/rabbitmq.sh" status || rc=1
        "$here/activemq.sh" status || rc=1
        "$here/artemis.sh" status || rc=1
        exit "$rc"
        ;;
    *) sed -n '2,7p' "$0" >&2; exit 2 ;;
esac
