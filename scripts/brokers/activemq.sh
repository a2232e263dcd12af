#!/usr/bin/env bash
# ActiveMQ 5 classic (Debian's package) for eventwire's tests, on 127.0.0.1, without systemd.
#
#   scripts/brokers/activemq.sh start    start (or reuse a running one) and wait until ready
#   scripts/brokers/activemq.sh stop     stop (TERM, then KILL after 30 s)
#   scripts/brokers/activemq.sh status   print whether it runs; exit 0 if it does, 1 if not
#   scripts/brokers/activemq.sh kill     hard kill of the JVM (fault tests); `start` brings
#                                        it back with the same KahaDB
#   scripts/brokers/activemq.sh restart  stop, then start
#
# OpenWire on 127.0.0.1:61616, STOMP on 127.0.0.1:61614 (61613 is RabbitMQ's);
# $EW_AMQ_OPENWIRE_PORT and $EW_AMQ_STOMP_PORT (with its own $EW_BROKER_STATE)
# run a second broker beside it.
# Debian builds ActiveMQ without AMQP 1.0 support, so there is no amqp connector.
# The JVM runs as user activemq; config, logs and KahaDB live in
# ${EW_BROKER_STATE:-/tmp/eventwire-brokers}/activemq.
set -euo pipefail
export EW_SCRIPT=activemq.sh
# shellcheck source=scripts/brokers/lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

AMQ_STATE=$EW_BROKER_STATE/activemq
AMQ_HOME=/usr/share/activemq
PIDFILE=$AMQ_STATE/activemq.pid
LOG=$AMQ_STATE/log/activemq.log
OUT=$AMQ_STATE/log/jvm.out
# A second, private broker (with its own EW_BROKER_STATE) takes other ports.
OPENWIRE_PORT=${EW_AMQ_OPENWIRE_PORT:-61616}
STOMP_PORT=${EW_AMQ_STOMP_PORT:-61614}
PORTS=("$OPENWIRE_PORT" "$STOMP_PORT")
JAVA=${JAVA:-/usr/bin/java}

logs() { show_logs "$LOG" "$OUT"; }

broker_pid() { pid_from "$PIDFILE"; }

running() { pid_alive "$(broker_pid)"; }

write_config() {
    mkdir -p "$AMQ_STATE/conf" "$AMQ_STATE/data" "$AMQ_STATE/log" "$AMQ_STATE/tmp"
    cat > "$AMQ_STATE/conf/activemq.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/brokers/activemq.sh; rewritten at every start. -->
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
                           http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core"
          brokerName="eventwire" useJmx="false" advisorySupport="true"
          dataDirectory="$AMQ_STATE/data" tmpDataDirectory="$AMQ_STATE/tmp">
    <persistenceAdapter>
      <kahaDB directory="$AMQ_STATE/data/kahadb"/>
    </persistenceAdapter>
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage limit="256 mb"/></memoryUsage>
        <storeUsage><storeUsage limit="2 gb"/></storeUsage>
        <tempUsage><tempUsage limit="1 gb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:$OPENWIRE_PORT"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$STOMP_PORT"/>
    </transportConnectors>
  </broker>
</beans>
XML
    cat > "$AMQ_STATE/conf/log4j.properties" <<PROPS
# Written by scripts/brokers/activemq.sh (Debian's ActiveMQ logs through log4j 1.2).
log4j.rootLogger=INFO, file
log4j.logger.org.apache.activemq.spring=WARN
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$LOG
log4j.appender.file.MaxFileSize=10MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n
PROPS
    chown -R activemq:activemq "$AMQ_STATE"
}

do_start() {
    need_root
    if running; then
        if wait_ports 30 "${PORTS[@]}"; then
            say "already running (pid $(broker_pid)), reusing it"
            return 0
        fi
        logs
        die "ActiveMQ runs (pid $(broker_pid)) but ports ${PORTS[*]} do not accept"
    fi
    local p
    for p in "${PORTS[@]}"; do
        if port_open "$p"; then
            die "port $p on 127.0.0.1 is taken by a process this script did not start (state $AMQ_STATE): $(who_listens "$p")"
        fi
    done
    [ -x "$JAVA" ] || die "no Java runtime at $JAVA (run scripts/deps.sh --brokers)"
    [ -r "$AMQ_HOME/bin/activemq.jar" ] || die "ActiveMQ is not installed (run scripts/deps.sh --brokers)"
    write_config
    rm -f "$PIDFILE"
    # Keep only this start's lines in the logs a failure prints.
    rotate_logs "$LOG" "$OUT"
    say "starting ActiveMQ as user activemq (state $AMQ_STATE)"
    # Java 17 closes the JDK internals ActiveMQ 5.17 reflects into.
    local opens=() m
    for m in java.base/java.lang java.base/java.util java.base/java.net java.base/java.security \
             java.base/java.util.concurrent java.base/java.util.concurrent.atomic \
             java.naming/javax.naming.spi; do
        opens+=("--add-opens=$m=ALL-UNNAMED")
    done
    if ! start-stop-daemon --start --background --make-pidfile --pidfile "$PIDFILE" \
            --chuid activemq:activemq --chdir "$AMQ_STATE" --output "$OUT" \
            --exec "$JAVA" -- -Xms64m -Xmx512m "${opens[@]}" \
            -Djava.io.tmpdir="$AMQ_STATE/tmp" \
            -Dlog4j.configuration="file:$AMQ_STATE/conf/log4j.properties" \
            -Dactivemq.home="$AMQ_HOME" -Dactivemq.base="$AMQ_STATE" \
            -Dactivemq.conf="$AMQ_STATE/conf" -Dactivemq.data="$AMQ_STATE/data" \
            -jar "$AMQ_HOME/bin/activemq.jar" start "xbean:file:$AMQ_STATE/conf/activemq.xml" \
            9>&-; then
        logs
        die "start-stop-daemon could not start the JVM"
    fi
    say "waiting for ports ${PORTS[*]}"
    local deadline=$((SECONDS + 60)) pid
    while :; do
        pid=$(broker_pid)
        if ! pid_alive "$pid"; then
            logs
            die "ActiveMQ exited during start-up"
        fi
        local ok=1
        for p in "${PORTS[@]}"; do port_open "$p" || ok=0; done
        [ "$ok" = 1 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            logs
            die "ActiveMQ (pid $pid) did not open ports ${PORTS[*]} within 60 s"
        fi
        sleep 0.2
    done
    say "ready: pid $pid, OpenWire 127.0.0.1:$OPENWIRE_PORT, STOMP 127.0.0.1:$STOMP_PORT, state $AMQ_STATE"
}

do_stop() {
    need_root
    local pid
    pid=$(broker_pid)
    if ! pid_alive "$pid"; then
        say "not running"
        return 0
    fi
    say "stopping ActiveMQ (pid $pid)"
    start-stop-daemon --stop --quiet --pidfile "$PIDFILE" --retry TERM/30/KILL/5 >/dev/null 2>&1 || true
    # start-stop-daemon waits for the process to vanish; a zombie (nobody
    # reaps here) counts as gone for us.
    local deadline=$((SECONDS + 10))
    while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    pid_alive "$pid" && die "ActiveMQ (pid $pid) is still alive after stop"
    wait_ports_closed 10 "${PORTS[@]}" || die "ports ${PORTS[*]} still accept after stop"
    say "stopped"
}

do_kill() {
    hard_kill "the ActiveMQ JVM" "$AMQ_STATE"
}

do_status() {
    local pid
    pid=$(broker_pid)
    if pid_alive "$pid"; then
        local down=() p
        for p in "${PORTS[@]}"; do port_open "$p" || down+=("$p"); done
        if [ "${#down[@]}" -eq 0 ]; then
            say "running (pid $pid), ports ${PORTS[*]} accept, state $AMQ_STATE"
            return 0
        fi
        say "process runs (pid $pid) but ports ${down[*]} do not accept (starting or broken)"
        return 1
    fi
    say "not running (state $AMQ_STATE)"
    return 1
}

cmd=${1:-}
case "$cmd" in
    start)   with_lock activemq do_start ;;
    stop)    with_lock activemq do_stop ;;
    restart) with_lock activemq do_stop; with_lock activemq do_start ;;
    kill)    with_lock activemq do_kill ;;
    status)  do_status ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
