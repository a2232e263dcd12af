#!/usr/bin/env bash
# ActiveMQ Artemis for eventwire's tests, on 127.0.0.1, without systemd.
#
#   scripts/brokers/artemis.sh start     start (or reuse a running one) and wait until ready
#   scripts/brokers/artemis.sh stop      stop (TERM: a clean shutdown; KILL after 30 s)
#   scripts/brokers/artemis.sh status    print whether it runs; exit 0 if it does, 1 if not
#   scripts/brokers/artemis.sh kill      hard kill of the JVM (fault tests); `start` brings
#                                        it back with the same journal
#   scripts/brokers/artemis.sh restart   stop, then start
#   scripts/brokers/artemis.sh wipe      stop, then delete the instance (queues, messages,
#                                        config): the next start creates a fresh one
#   scripts/brokers/artemis.sh ctl ARGS  the instance's `artemis ARGS` against this broker,
#                                        logged in (e.g. `ctl queue stat`, `ctl address show`)
#
# Ports on 127.0.0.1 (environment variables override them, e.g. for a
# private second instance with its own EW_BROKER_STATE):
#   AMQP 1.0          5673   EW_ARTEMIS_AMQP_PORT
#   STOMP             61623  EW_ARTEMIS_STOMP_PORT
#   AMQP 1.0 over TLS 5675   EW_ARTEMIS_AMQPS_PORT
#   STOMP over TLS    61625  EW_ARTEMIS_STOMPS_PORT
#   core (management) 61626  EW_ARTEMIS_CORE_PORT   (the `artemis` CLI talks to it)
# 5672/61613 are RabbitMQ's and 61616/61614 ActiveMQ 5's. AMQP and STOMP use
# the host ports of docker/docker-compose.yml, so one URL serves both.
# Login required (no anonymous access): user artemis, password artemis
# (EW_ARTEMIS_USER / EW_ARTEMIS_PASSWORD, read when the instance is created).
# The TLS acceptors present the server certificate of scripts/brokers/certs.sh
# (${EW_BROKER_STATE:-/tmp/eventwire-brokers}/tls, CA ca.pem); clients need none.
#
# EW_ARTEMIS_HA=primary|backup makes the instance one half of a primary/backup
# pair with replication (scripts/brokers/artemis-pair.sh starts both): it is
# created clustered with its peer's core acceptor EW_ARTEMIS_PEER_CORE as its
# static cluster connector. A backup opens no acceptor until it is active:
# `start` waits until it is in sync with its primary instead.
#
# Address settings (auto-create on, auto-delete off, dead letters, expiry)
# come from docker/etc-override/broker.properties, the file docker-compose
# mounts: it is copied into the instance at every start.
#
# Artemis is not packaged by Debian: its binary distribution
# (org.apache.activemq:apache-artemis:<version>:tar.gz:bin) is fetched once
# with Maven (`mvn dependency:copy`, through Maven's configured repositories
# and its local repository ~/.m2) and unpacked under
# ${EW_ARTEMIS_CACHE:-/var/cache/eventwire}. The instance (`artemis create`),
# its journal, logs and pid file live in ${EW_BROKER_STATE:-/tmp/eventwire-brokers}/artemis.
# The JVM runs as root, like the script.
set -euo pipefail
export EW_SCRIPT=artemis.sh
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=scripts/brokers/lib.sh
. "$here/lib.sh"

# Pinned to 2.40.0: the newest of the releases whose binary distribution
# Maven Central was seen to serve (2.31.2, 2.35.0, 2.37.0, 2.39.0, 2.40.0),
# and it runs on the Java 17 runtime of Debian 12 that the other brokers use.
# Every test result names this version; EW_ARTEMIS_VERSION tries another one.
ARTEMIS_VERSION=${EW_ARTEMIS_VERSION:-2.40.0}
CACHE=${EW_ARTEMIS_CACHE:-/var/cache/eventwire}
ARTEMIS_HOME=$CACHE/apache-artemis-$ARTEMIS_VERSION

ART_STATE=$EW_BROKER_STATE/artemis
INSTANCE=$ART_STATE/instance
PIDFILE=$ART_STATE/artemis.pid
OUT=$ART_STATE/jvm.out
AMQP_PORT=${EW_ARTEMIS_AMQP_PORT:-5673}
STOMP_PORT=${EW_ARTEMIS_STOMP_PORT:-61623}
AMQPS_PORT=${EW_ARTEMIS_AMQPS_PORT:-5675}
STOMPS_PORT=${EW_ARTEMIS_STOMPS_PORT:-61625}
CORE_PORT=${EW_ARTEMIS_CORE_PORT:-61626}
PORTS=("$AMQP_PORT" "$STOMP_PORT" "$AMQPS_PORT" "$STOMPS_PORT" "$CORE_PORT")
# EW_ARTEMIS_BIND=0.0.0.0: the AMQP and STOMP acceptors take every address,
# only inside a network namespace a test made (tests/hosts), which is checked.
BIND=${EW_ARTEMIS_BIND:-127.0.0.1}
if [ "$BIND" != 127.0.0.1 ] &&
   [ "$(readlink /proc/self/ns/net)" = "$(readlink /proc/1/ns/net)" ]; then
    die "EW_ARTEMIS_BIND=$BIND outside a network namespace: the test brokers listen on 127.0.0.1 only"
fi
HA=${EW_ARTEMIS_HA:-}
case "$HA" in
    '' | primary | backup) ;;
    *) die "EW_ARTEMIS_HA must be primary or backup (not '$HA')" ;;
esac
[ -z "$HA" ] || [ -n "${EW_ARTEMIS_PEER_CORE:-}" ] ||
    die "EW_ARTEMIS_HA=$HA needs EW_ARTEMIS_PEER_CORE (the peer's core port)"
ART_USER=${EW_ARTEMIS_USER:-artemis}
ART_PASSWORD=${EW_ARTEMIS_PASSWORD:-artemis}
TLS_DIR=$EW_BROKER_STATE/tls
KEYSTORE_PASSWORD=eventwire   # server.p12's password (certs.sh)
PROPERTIES=$(readlink -f "$here/../../docker/etc-override/broker.properties")
WAIT_S=120

logs() { show_logs "$OUT" "$INSTANCE/log/artemis.log"; }

broker_pid() { pid_from "$PIDFILE"; }

running() { pid_alive "$(broker_pid)"; }

# fetch_dist: the unpacked distribution in $ARTEMIS_HOME (fetched and unpacked once).
fetch_dist() {
    [ -x "$ARTEMIS_HOME/bin/artemis" ] && return 0
    command -v mvn >/dev/null || die "Maven (mvn) is missing: it fetches Artemis (run scripts/deps.sh --brokers)"
    mkdir -p "$CACHE"
    exec 7>"$CACHE/.artemis.lock"
    flock -w 600 7 || die "could not take the lock $CACHE/.artemis.lock"
    if [ ! -x "$ARTEMIS_HOME/bin/artemis" ]; then
        local tgz=$CACHE/apache-artemis-$ARTEMIS_VERSION-bin.tar.gz tmp
        if [ ! -s "$tgz" ]; then
            say "fetching Artemis $ARTEMIS_VERSION with Maven (once; cached in $CACHE)"
            if ! mvn -B -C -Dstyle.color=never dependency:copy \
                    -Dartifact="org.apache.activemq:apache-artemis:$ARTEMIS_VERSION:tar.gz:bin" \
                    -DoutputDirectory="$CACHE" >"$CACHE/mvn.log" 2>&1 </dev/null 9>&- 7>&-; then
                tail -n 30 "$CACHE/mvn.log" >&2
                die "mvn could not fetch org.apache.activemq:apache-artemis:$ARTEMIS_VERSION:tar.gz:bin"
            fi
            [ -s "$tgz" ] || die "mvn left no $tgz"
        fi
        tmp=$(mktemp -d "$CACHE/.unpack.XXXXXX")
        if ! tar -xzf "$tgz" -C "$tmp"; then
            rm -rf "$tmp" "$tgz"
            die "could not unpack $tgz (deleted: the next start fetches it again)"
        fi
        rm -rf "$ARTEMIS_HOME"
        mv "$tmp/apache-artemis-$ARTEMIS_VERSION" "$ARTEMIS_HOME"
        rm -rf "$tmp"
        say "Artemis $ARTEMIS_VERSION unpacked in $ARTEMIS_HOME"
    fi
    exec 7>&-
}

make_certs() {
    "$here/certs.sh" "$TLS_DIR" >/dev/null 9>&- || die "could not make the TLS certificates in $TLS_DIR"
}

# create_instance: `artemis create` once per state directory (and again when
# the pinned version changed: the journal in data/ is kept).
create_instance() {
    local role="${HA:-single}" ha=()
    if [ -s "$INSTANCE/etc/broker.xml" ] &&
       grep -qF "ARTEMIS_HOME='$ARTEMIS_HOME'" "$INSTANCE/etc/artemis.profile" 2>/dev/null &&
       [ "$(cat "$ART_STATE/role" 2>/dev/null)" = "$role" ]; then
        return 0
    fi
    say "creating the Artemis $ARTEMIS_VERSION instance $INSTANCE (user $ART_USER, login required${HA:+, $HA of a replicated pair})"
    mkdir -p "$ART_STATE"
    if [ -n "$HA" ]; then
        ha=(--clustered --replicated --cluster-user ew-cluster --cluster-password ew-cluster
            --staticCluster "tcp://127.0.0.1:$EW_ARTEMIS_PEER_CORE")
        [ "$HA" = backup ] && ha+=(--backup)
    fi
    # --no-web: no console and no Jolokia; management goes through the core
    # acceptor (`ctl`). The journal is written without fsync: a hard kill of
    # the JVM loses nothing (the page cache survives it); a machine crash could.
    if ! "$ARTEMIS_HOME/bin/artemis" create --silent --force \
            --user "$ART_USER" --password "$ART_PASSWORD" --require-login \
            --host 127.0.0.1 --http-host 127.0.0.1 --no-web \
            --default-port "$CORE_PORT" --no-hornetq-acceptor --no-mqtt-acceptor \
            --no-fsync --java-memory 512M "${ha[@]}" \
            "$INSTANCE" >"$ART_STATE/create.log" 2>&1 </dev/null 9>&-; then
        cat "$ART_STATE/create.log" >&2
        die "artemis create failed"
    fi
    echo "$role" > "$ART_STATE/role"
}

# acceptors: the <acceptors> element of broker.xml for the configured ports.
acceptors() {
    local common="tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;useEpoll=true"
    local amqp="protocols=AMQP;amqpCredits=1000;amqpLowCredits=300;amqpMinLargeMessageSize=102400;amqpDuplicateDetection=true"
    local tls="sslEnabled=true;keyStoreType=PKCS12;keyStorePath=$TLS_DIR/server.p12;keyStorePassword=$KEYSTORE_PASSWORD"
    cat <<XML
      <acceptors>
         <!-- Written by scripts/brokers/artemis.sh; rewritten at every start. -->
         <acceptor name="artemis">tcp://127.0.0.1:$CORE_PORT?$common;protocols=CORE</acceptor>
         <acceptor name="amqp">tcp://$BIND:$AMQP_PORT?$common;$amqp</acceptor>
         <acceptor name="stomp">tcp://$BIND:$STOMP_PORT?$common;protocols=STOMP</acceptor>
         <acceptor name="amqps">tcp://127.0.0.1:$AMQPS_PORT?$common;$amqp;$tls</acceptor>
         <acceptor name="stomps">tcp://127.0.0.1:$STOMPS_PORT?$common;protocols=STOMP;$tls</acceptor>
      </acceptors>
XML
}

write_config() {
    local xml=$INSTANCE/etc/broker.xml new
    new=$(mktemp "$xml.XXXXXX")
    acceptors > "$new.acc"
    awk -v accfile="$new.acc" '
        /<acceptors>/  { while ((getline l < accfile) > 0) print l; skip = 1; next }
        /<\/acceptors>/ { skip = 0; next }
        !skip           { print }' "$xml" > "$new"
    rm -f "$new.acc"
    grep -q "name=\"amqps\">tcp://127.0.0.1:$AMQPS_PORT?" "$new" || { rm -f "$new"; die "could not write the acceptors into $xml"; }
    mv -f "$new" "$xml"
    [ -r "$PROPERTIES" ] || die "missing $PROPERTIES (the address settings shared with docker-compose)"
    cp -f "$PROPERTIES" "$INSTANCE/etc/broker.properties"
}

# active: whether the broker is active with every port open; a backup of a
# pair is ready when it is in sync with its primary (AMQ221024), with no port
# open until it becomes active.
active() {
    local p
    if [ "$HA" = backup ] && ! grep -q 'AMQ221007' "$OUT" 2>/dev/null; then
        grep -q 'AMQ221024' "$OUT" 2>/dev/null
        return
    fi
    grep -q 'AMQ221007' "$OUT" 2>/dev/null || return 1
    for p in "${PORTS[@]}"; do port_open "$p" || return 1; done
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_S)) pid
    if [ "$HA" = backup ]; then
        say "waiting until the backup is in sync with its primary (at most ${WAIT_S} s)"
    else
        say "waiting for 'Server is now active' and ports ${PORTS[*]} (at most ${WAIT_S} s)"
    fi
    while :; do
        pid=$(broker_pid)
        if ! pid_alive "$pid"; then
            logs
            die "Artemis exited during start-up"
        fi
        active && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            logs
            die "Artemis (pid $pid) was not ${HA:+(as $HA) }ready within ${WAIT_S} s"
        fi
        sleep 0.2
    done
    if [ "$HA" = backup ] && ! grep -q 'AMQ221007' "$OUT"; then
        say "ready: Artemis $ARTEMIS_VERSION pid $pid, backup in sync; when active: AMQP 127.0.0.1:$AMQP_PORT, STOMP 127.0.0.1:$STOMP_PORT, state $ART_STATE"
        return 0
    fi
    say "ready: Artemis $ARTEMIS_VERSION pid $pid, AMQP 127.0.0.1:$AMQP_PORT, STOMP 127.0.0.1:$STOMP_PORT," \
        "TLS: AMQP 127.0.0.1:$AMQPS_PORT, STOMP 127.0.0.1:$STOMPS_PORT (CA $TLS_DIR/ca.pem)," \
        "core 127.0.0.1:$CORE_PORT, user $ART_USER, state $ART_STATE"
}

do_start() {
    need_root
    if running; then
        if active; then
            say "already running (pid $(broker_pid)), reusing it"
            return 0
        fi
        # Up but not (yet) active: a start in progress or a boot that hangs.
        wait_ready
        return 0
    fi
    local p
    for p in "${PORTS[@]}"; do
        if port_open "$p"; then
            die "port $p on 127.0.0.1 is taken by a process this script did not start (state $ART_STATE): $(who_listens "$p")"
        fi
    done
    command -v java >/dev/null || die "no Java runtime (run scripts/deps.sh --brokers)"
    fetch_dist
    make_certs
    create_instance
    write_config
    rm -f "$PIDFILE"
    # Keep only this start's lines in the logs a failure prints.
    rotate_logs "$OUT"
    say "starting Artemis $ARTEMIS_VERSION (state $ART_STATE)"
    # bin/artemis execs the JVM, so the pid start-stop-daemon records is the broker's.
    if ! start-stop-daemon --start --background --make-pidfile --pidfile "$PIDFILE" \
            --chdir "$INSTANCE" --output "$OUT" --startas "$INSTANCE/bin/artemis" -- run \
            </dev/null 9>&-; then
        logs
        die "start-stop-daemon could not start Artemis"
    fi
    wait_ready
}

do_stop() {
    need_root
    local pid
    pid=$(broker_pid)
    if ! pid_alive "$pid"; then
        say "not running"
        return 0
    fi
    say "stopping Artemis (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if pid_alive "$pid"; then
        say "still alive after 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    fi
    pid_alive "$pid" && die "Artemis (pid $pid) is still alive after stop"
    wait_ports_closed 10 "${PORTS[@]}" || die "ports ${PORTS[*]} still accept after stop"
    rm -f "$PIDFILE"
    say "stopped"
}

do_kill() {
    hard_kill "the Artemis JVM" "$ART_STATE"
}

do_wipe() {
    do_stop
    case "$ART_STATE" in
        */artemis) rm -rf "$ART_STATE" ;;
        *) die "refusing to delete $ART_STATE" ;;
    esac
    say "state deleted ($ART_STATE)"
}

do_status() {
    local pid
    pid=$(broker_pid)
    if pid_alive "$pid"; then
        local down=() p
        for p in "${PORTS[@]}"; do port_open "$p" || down+=("$p"); done
        if [ "$HA" = backup ] && ! grep -q 'AMQ221007' "$OUT" 2>/dev/null && active; then
            say "running (pid $pid), a backup in sync with its primary, state $ART_STATE"
            return 0
        fi
        if [ "${#down[@]}" -eq 0 ] && grep -q 'AMQ221007' "$OUT" 2>/dev/null; then
            say "running (pid $pid), ports ${PORTS[*]} accept, state $ART_STATE"
            return 0
        fi
        say "process runs (pid $pid) but is not active or ports ${down[*]} do not accept (starting or broken)"
        return 1
    fi
    say "not running (state $ART_STATE)"
    return 1
}

# do_ctl ARGS: the instance's CLI, logged in over the core acceptor. Options
# go after the command words (the CLI takes them anywhere after them).
do_ctl() {
    running || die "not running (start it with: $0 start)"
    # A short-lived JVM: start it quickly (the CLI's own default flags kept).
    JAVA_ARGS=${JAVA_ARGS:-"-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xms32m -Xmx256m -XX:-UsePerfData -Dlog4j2.disableJmx=true --add-opens java.base/jdk.internal.misc=ALL-UNNAMED"} \
        "$INSTANCE/bin/artemis" "$@" --url "tcp://127.0.0.1:$CORE_PORT" \
        --user "$ART_USER" --password "$ART_PASSWORD" 9>&-
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    start)   with_lock artemis do_start ;;
    stop)    with_lock artemis do_stop ;;
    restart) with_lock artemis do_stop; with_lock artemis do_start ;;
    kill)    with_lock artemis do_kill ;;
    wipe)    with_lock artemis do_wipe ;;
    status)  do_status ;;
    ctl)     do_ctl "$@" ;;
    *) sed -n '2,39p' "$0" >&2; exit 2 ;;
esac
