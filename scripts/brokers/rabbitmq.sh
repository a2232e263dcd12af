#!/usr/bin/env bash
# RabbitMQ for eventwire's tests and demos, on 127.0.0.1, without systemd.
#
#   scripts/brokers/rabbitmq.sh start     start (or reuse a running one) and wait until ready
#   scripts/brokers/rabbitmq.sh stop      stop cleanly, then stop epmd
#   scripts/brokers/rabbitmq.sh status    print whether it runs; exit 0 if it does, 1 if not
#   scripts/brokers/rabbitmq.sh kill      hard kill of beam.smp (fault tests); `start` brings
#                                         it back with the same state (durable queues kept)
#   scripts/brokers/rabbitmq.sh restart   stop, then start
#   scripts/brokers/rabbitmq.sh wipe      stop, then delete the whole state (queues,
#                                         messages, users): the next start is fresh
#   scripts/brokers/rabbitmq.sh ctl ARGS  rabbitmqctl ARGS against this node
#                                         (e.g. `ctl list_queues name durable`)
#
# AMQP 0-9-1 (and AMQP 1.0 through rabbitmq_amqp1_0) on 5672, STOMP on 61613;
# the same over TLS: AMQP 0-9-1/1.0 on 5671, STOMP on 61612 (61614 and 61616
# are ActiveMQ's). $EW_RMQ_AMQP_PORT, $EW_RMQ_STOMP_PORT, $EW_RMQ_AMQPS_PORT,
# $EW_RMQ_STOMPS_PORT and $EW_RMQ_NODENAME (with its own $EW_BROKER_STATE)
# run a second node beside it. $EW_RMQ_BIND=0.0.0.0 makes the listeners
# take every address and lets guest log in from any of them: only inside a
# network namespace a test made (tests/hosts), which the script checks. The TLS listeners present a certificate for localhost and
# 127.0.0.1 signed by the test CA that scripts/brokers/certs.sh makes in
# ${EW_BROKER_STATE:-/tmp/eventwire-brokers}/tls (ca.pem; wrong-ca.pem is a CA
# that signed nothing); clients need no certificate. A running node whose
# config lacks these listeners or this certificate is restarted by `start`.
# guest/guest works from 127.0.0.1. All state (config, plugins file, mnesia,
# logs, pid file) lives in ${EW_BROKER_STATE:-/tmp/eventwire-brokers}/rabbitmq,
# owned by the user rabbitmq; nothing under /etc or /var is written.
set -euo pipefail
export EW_SCRIPT=rabbitmq.sh
# shellcheck source=scripts/brokers/lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

RMQ_STATE=$EW_BROKER_STATE/rabbitmq
# A second, private node (e.g. for a fault test that kills its broker) takes
# other ports, a node name and its own EW_BROKER_STATE through these.
AMQP_PORT=${EW_RMQ_AMQP_PORT:-5672}
STOMP_PORT=${EW_RMQ_STOMP_PORT:-61613}
AMQPS_PORT=${EW_RMQ_AMQPS_PORT:-5671}
STOMPS_PORT=${EW_RMQ_STOMPS_PORT:-61612}
PORTS=("$AMQP_PORT" "$STOMP_PORT" "$AMQPS_PORT" "$STOMPS_PORT")
BIND=${EW_RMQ_BIND:-127.0.0.1}
if [ "$BIND" != 127.0.0.1 ] &&
   [ "$(readlink /proc/self/ns/net)" = "$(readlink /proc/1/ns/net)" ]; then
    die "EW_RMQ_BIND=$BIND outside a network namespace: the test brokers listen on 127.0.0.1 only"
fi
TLS_DIR=$EW_BROKER_STATE/tls
CERTS=$(dirname "$(readlink -f "$0")")/certs.sh

export RABBITMQ_NODENAME=${EW_RMQ_NODENAME:-rabbit@localhost}
# Erlang distribution: AMQP port + 20000, as RabbitMQ's own default for 5672.
if [ -n "${EW_RMQ_AMQP_PORT:-}" ]; then
    export RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000))
fi
export RABBITMQ_CONFIG_FILE=$RMQ_STATE/etc/rabbitmq.conf
export RABBITMQ_ADVANCED_CONFIG_FILE=$RMQ_STATE/etc/advanced.config
export RABBITMQ_CONF_ENV_FILE=$RMQ_STATE/etc/rabbitmq-env.conf
export RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_STATE/etc/enabled_plugins
export RABBITMQ_MNESIA_BASE=$RMQ_STATE/mnesia
export RABBITMQ_LOG_BASE=$RMQ_STATE/log
export RABBITMQ_PID_FILE=$RMQ_STATE/rabbitmq.pid
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

PLUGINS=(rabbitmq_stomp rabbitmq_amqp1_0)
# Open files for the node: every durable queue needs handles at recovery, and
# test runs leave many queues behind. With Debian's 1024 the node stalls
# while recovering ~1000 queues ("Please increase max open file handles").
NOFILE=65536
WAIT_S=150

logs() {
    show_logs "$RMQ_STATE/log/$RABBITMQ_NODENAME.log" "$RMQ_STATE/log/startup.log" \
              "$RMQ_STATE/log/startup_err"
}

broker_pid() { pid_from "$RABBITMQ_PID_FILE"; }

running() { pid_alive "$(broker_pid)"; }

# rabbitmqctl as the user rabbitmq (Debian's wrapper does the su and keeps
# RABBITMQ_*). Erlang tools may outlive this script (an orphaned `wait`):
# none of them may inherit the lock on fd 9.
ctl() { rabbitmqctl "$@" 9>&-; }

# tls_stamp: one config line naming the TLS setup (ports and the server
# certificate's fingerprint). A running node whose config lacks the current
# line was started without these listeners or with other certificates.
tls_stamp() {
    printf '# tls: %s %s %s\n' "$AMQPS_PORT" "$STOMPS_PORT" \
        "$(openssl x509 -noout -fingerprint -sha256 -in "$TLS_DIR/server.pem" | sed 's/.*=//')"
}

# make_certs: the test CA and server certificate (kept when they exist).
make_certs() {
    "$CERTS" "$TLS_DIR" >/dev/null 9>&- || die "could not make the TLS certificates in $TLS_DIR"
}

write_config() {
    mkdir -p "$RMQ_STATE/etc" "$RMQ_STATE/mnesia" "$RMQ_STATE/log"
    cat > "$RABBITMQ_CONFIG_FILE" <<CONF
# Written by scripts/brokers/rabbitmq.sh; rewritten at every start.
$(tls_stamp)
listeners.tcp.1 = $BIND:$AMQP_PORT
stomp.listeners.tcp.1 = $BIND:$STOMP_PORT
listeners.ssl.default = $BIND:$AMQPS_PORT
stomp.listeners.ssl.1 = $BIND:$STOMPS_PORT
ssl_options.cacertfile = $TLS_DIR/ca.pem
ssl_options.certfile = $TLS_DIR/server.pem
ssl_options.keyfile = $TLS_DIR/server.key
# Clients present no certificate: they authenticate with user and password.
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users.guest = $([ "$BIND" = 127.0.0.1 ] && echo true || echo false)
log.file.level = info
log.console = false
CONF
    echo '[].' > "$RABBITMQ_ADVANCED_CONFIG_FILE"
    # Sourced by rabbitmq-server after `su rabbitmq`, which resets the soft
    # open-files limit to 1024: a restart after a hard kill rebuilds every
    # durable queue's index at once and hangs for good once the queues
    # outnumber the file handles (seen with ~950 queues). Raise it to the hard limit.
    # shellcheck disable=SC2016 # expanded when rabbitmq-server sources it
    echo 'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true' > "$RABBITMQ_CONF_ENV_FILE"
    chown -R rabbitmq:rabbitmq "$RMQ_STATE"
    local want p
    want=1
    for p in "${PLUGINS[@]}"; do
        grep -q "$p" "$RABBITMQ_ENABLED_PLUGINS_FILE" 2>/dev/null || want=0
    done
    if [ "$want" = 0 ]; then
        say "enabling plugins offline: ${PLUGINS[*]}"
        rabbitmq-plugins enable --offline "${PLUGINS[@]}" >/dev/null 9>&- \
            || die "rabbitmq-plugins enable --offline ${PLUGINS[*]} failed"
        chown rabbitmq:rabbitmq "$RABBITMQ_ENABLED_PLUGINS_FILE"
    fi
}

wait_ready() {
    local pid
    say "waiting for the node (rabbitmqctl wait, await_startup; at most ${WAIT_S} s each)"
    # rabbitmqctl wait's own --timeout covers the pid file only, not a boot
    # that hangs: bound the whole call.
    if ! timeout "$WAIT_S" rabbitmqctl wait --timeout "$WAIT_S" "$RABBITMQ_PID_FILE" \
            >/dev/null 2>"$RMQ_STATE/log/ctl_wait.err" 9>&-; then
        cat "$RMQ_STATE/log/ctl_wait.err" >&2
        logs
        die "RabbitMQ did not start within ${WAIT_S} s (rabbitmqctl wait failed); state in $RMQ_STATE"
    fi
    if ! timeout "$WAIT_S" rabbitmqctl await_startup --timeout "$WAIT_S" >/dev/null \
            2>"$RMQ_STATE/log/ctl_wait.err" 9>&-; then
        cat "$RMQ_STATE/log/ctl_wait.err" >&2
        logs
        die "RabbitMQ did not finish booting (rabbitmqctl await_startup failed)"
    fi
    if ! wait_ports 30 "${PORTS[@]}"; then
        logs
        die "RabbitMQ runs but ports ${PORTS[*]} do not all accept on 127.0.0.1"
    fi
    pid=$(broker_pid)
    say "ready: pid $pid, AMQP 127.0.0.1:$AMQP_PORT, STOMP 127.0.0.1:$STOMP_PORT," \
        "TLS: AMQP 127.0.0.1:$AMQPS_PORT, STOMP 127.0.0.1:$STOMPS_PORT (CA $TLS_DIR/ca.pem)," \
        "state $RMQ_STATE"
}

do_start() {
    need_root
    make_certs
    if running && ! grep -qxF "$(tls_stamp)" "$RABBITMQ_CONFIG_FILE" 2>/dev/null; then
        say "the running node (pid $(broker_pid)) was started without the TLS listeners" \
            "on $AMQPS_PORT and $STOMPS_PORT or with other certificates: restarting it"
        do_stop
    fi
    if running; then
        if wait_ports 5 "${PORTS[@]}"; then
            say "already running (pid $(broker_pid)), reusing it"
            return 0
        fi
        # Up but not (yet) listening: a start in progress or a boot that hangs.
        wait_ready
        return 0
    fi
    local p
    for p in "${PORTS[@]}"; do
        if port_open "$p"; then
            die "port $p on 127.0.0.1 is taken by a process this script did not start (state $RMQ_STATE): $(who_listens "$p")"
        fi
    done
    write_config
    rm -f "$RABBITMQ_PID_FILE"
    # Keep only this start's lines in the logs a failure prints.
    rotate_logs "$RMQ_STATE/log/$RABBITMQ_NODENAME.log"
    say "starting RabbitMQ as user rabbitmq (node $RABBITMQ_NODENAME, state $RMQ_STATE, open files: min($NOFILE, hard limit $(ulimit -Hn)))"
    # Debian's wrapper switches user with su, whose PAM session drops the
    # open-files limit to 1024; setpriv keeps the limit raised here. The
    # detached node must not keep our stdout/stderr open (callers may
    # capture this script's output through a pipe), nor the lock on fd 9.
    if ! (cd /var/lib/rabbitmq &&
          { ulimit -Hn "$NOFILE" 2>/dev/null || true; } &&
          ulimit -Sn "$(ulimit -Hn)" &&
          exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
              env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server -detached) \
            >"$RMQ_STATE/log/startup.log" 2>"$RMQ_STATE/log/startup_err" </dev/null 9>&-; then
        logs
        die "rabbitmq-server -detached failed"
    fi
    wait_ready
}

do_stop() {
    need_root
    local pid
    pid=$(broker_pid)
    if ! pid_alive "$pid"; then
        say "not running"
    else
        say "stopping RabbitMQ (pid $pid)"
        if ! timeout 60 rabbitmqctl stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 9>&-; then
            say "rabbitmqctl stop failed; sending SIGTERM, then SIGKILL"
            kill -TERM "$pid" 2>/dev/null || true
            local deadline=$((SECONDS + 20))
            while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
            pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
        fi
        local deadline=$((SECONDS + 10))
        while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        pid_alive "$pid" && die "RabbitMQ (pid $pid) is still alive after stop"
        say "stopped"
    fi
    # epmd outlives the node; it only serves Erlang nodes, stop it as well.
    if epmd -names >/dev/null 2>&1 9>&-; then
        epmd -kill >/dev/null 2>&1 9>&- || true
        say "epmd stopped"
    fi
}

do_kill() {
    hard_kill "beam.smp" "$RMQ_STATE"
}

do_status() {
    local pid
    pid=$(broker_pid)
    if pid_alive "$pid"; then
        local up=() down=() p
        for p in "${PORTS[@]}"; do
            if port_open "$p"; then up+=("$p"); else down+=("$p"); fi
        done
        if [ "${#down[@]}" -eq 0 ]; then
            say "running (pid $pid), ports ${up[*]} accept, state $RMQ_STATE"
            return 0
        fi
        say "process runs (pid $pid) but ports ${down[*]} do not accept (starting or broken)"
        return 1
    fi
    say "not running (state $RMQ_STATE)"
    return 1
}

do_wipe() {
    do_stop
    case "$RMQ_STATE" in
        */rabbitmq) rm -rf "$RMQ_STATE" ;;
        *) die "refusing to delete $RMQ_STATE" ;;
    esac
    say "state deleted ($RMQ_STATE)"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    start)   with_lock rabbitmq do_start ;;
    stop)    with_lock rabbitmq do_stop ;;
    restart) with_lock rabbitmq do_stop; with_lock rabbitmq do_start ;;
    kill)    with_lock rabbitmq do_kill ;;
    wipe)    with_lock rabbitmq do_wipe ;;
    status)  do_status ;;
    ctl)     need_root; running || die "not running (start it with: $0 start)"; ctl "$@" ;;
    *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
