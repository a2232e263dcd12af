# shellcheck shell=bash
# Shared helpers for the broker scripts (sourced, not run).
# Every broker binds to 127.0.0.1 only; state lives under EW_BROKER_STATE.

EW_BROKER_STATE=${EW_BROKER_STATE:-/tmp/eventwire-brokers}

say()  { printf '%s: %s\n' "$EW_SCRIPT" "$*"; }
die()  { printf '%s: ERROR: %s\n' "$EW_SCRIPT" "$*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it starts the broker as its own system user)"
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PID: true when PID runs and is not a zombie. PID 1 does not reap
# here, so a killed broker can linger as a zombie that kill -0 still sees.
pid_alive() {
    local pid=$1 state
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# pid_from FILE: the pid in FILE, or nothing.
pid_from() {
    [ -s "$1" ] && tr -dc '0-9' < "$1" || true
}

# wait_ports TIMEOUT PORT...: wait until every port accepts, or fail.
wait_ports() {
    local timeout=$1; shift
    local deadline=$((SECONDS + timeout)) p
    for p in "$@"; do
        until port_open "$p"; do
            [ "$SECONDS" -lt "$deadline" ] || return 1
            sleep 0.2
        done
    done
}

# wait_ports_closed TIMEOUT PORT...: wait until no port accepts any more.
wait_ports_closed() {
    local timeout=$1; shift
    local deadline=$((SECONDS + timeout)) p
    for p in "$@"; do
        while port_open "$p"; do
            [ "$SECONDS" -lt "$deadline" ] || return 1
            sleep 0.2
        done
    done
}

# who_listens PORT: a line naming the process that listens on PORT.
who_listens() {
    ss -ltnpH "sport = :$1" 2>/dev/null | head -n 3
}

# show_logs FILE...: print the last lines of every existing, non-empty file.
show_logs() {
    local f shown=0
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf '%s: ---- last lines of %s ----\n' "$EW_SCRIPT" "$f" >&2
        tail -n 40 "$f" >&2
        shown=1
    done
    [ "$shown" = 1 ] || printf '%s: (the broker wrote nothing to %s)\n' "$EW_SCRIPT" "$*" >&2
}

# rotate_logs FILE...: move each FILE to FILE.prev (one generation kept).
rotate_logs() {
    local f
    for f in "$@"; do
        [ -e "$f" ] && mv -f "$f" "$f.prev"
    done
    return 0
}

# with_lock NAME CMD...: serialise concurrent start/stop of one broker (other
# engineers and test runs may call these scripts at the same time). The lock
# is fd 9: commands that may outlive the script must run with 9>&-.
with_lock() {
    local name=$1; shift
    mkdir -p "$EW_BROKER_STATE"
    exec 9>"$EW_BROKER_STATE/.$name.lock"
    flock -w 300 9 || die "could not take the lock $EW_BROKER_STATE/.$name.lock within 300 s"
    "$@"
}

# hard_kill WHAT STATE: SIGKILL the broker of broker_pid (each script defines
# it, and PORTS), as the fault tests need; waits until the process is gone
# and its ports (PORTS) no longer accept. STATE is kept, only named.
hard_kill() {
    need_root
    local pid
    pid=$(broker_pid)
    if ! pid_alive "$pid"; then
        say "not running, nothing to kill"
        return 0
    fi
    say "hard kill of $1 (pid $pid), state kept in $2"
    kill -KILL "$pid"
    local deadline=$((SECONDS + 10))
    while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    pid_alive "$pid" && die "pid $pid survived SIGKILL"
    wait_ports_closed 10 "${PORTS[@]}" || die "ports ${PORTS[*]} still accept after the kill"
    say "killed"
}
