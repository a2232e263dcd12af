#!/usr/bin/env bash
# A socat front for the local RabbitMQ, for tests that need what the shared
# broker cannot give: TLS (it has no TLS listener), or an outage that hits
# only this test's connections (stopping the proxy cuts them; the broker and
# everyone else's tests go on).
#
#   proxy.sh start tls DIR PORT [TARGET_PORT]   TLS on 127.0.0.1:PORT
#   proxy.sh start tcp DIR PORT [TARGET_PORT]   plain TCP on 127.0.0.1:PORT
#   proxy.sh stop DIR                           stops it and cuts its
#                                               connections
# Both print socat's pid once it listens. For tls, certificates are made
# fresh in DIR:
#   ca.pem        the CA that signed the server certificate
#   other-ca.pem  a CA that did not (a client trusting it must refuse)
#   server.pem    certificate (SAN IP:127.0.0.1, DNS:localhost) and key
# socat runs in its own session (setsid): stop signals that process group,
# which holds the listener and one child per open connection.
set -euo pipefail
cmd=${1:?start|stop}
case "$cmd" in
start)
    kind=${2:?tls|tcp}
    dir=${3:?DIR}
    port=${4:?PORT}
    target=${5:-5672}
    mkdir -p "$dir"
    cd "$dir"
    if [ "$kind" = tls ]; then
        subj() { openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$1.key" \
                     -out "$1.pem" -subj "/CN=$2" 2>/dev/null; }
        [ -f ca.pem ] || subj ca "eventwire test CA"
        [ -f other-ca.pem ] || subj other-ca "eventwire other CA"
        if [ ! -f server.pem ]; then
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
                -subj "/CN=localhost" 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.cnf
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -out server.crt -days 2 -extfile san.cnf 2>/dev/null
            cat server.crt server.key > server.pem
        fi
        listen="OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,cert=server.pem,verify=0"
    elif [ "$kind" = tcp ]; then
        listen="TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork"
    else
        echo "proxy.sh: kind must be tls or tcp" >&2
        exit 2
    fi
    setsid socat "$listen" "TCP:127.0.0.1:$target" 2>"$dir/socat.log" </dev/null &
    echo $! > socat.pid
    for _ in $(seq 200); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            cat socat.pid
            exit 0
        fi
        sleep 0.05
    done
    echo "proxy.sh: socat does not listen on $port" >&2
    exit 1
    ;;
stop)
    dir=${2:?DIR}
    if [ -f "$dir/socat.pid" ]; then
        pid=$(cat "$dir/socat.pid")
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
        rm -f "$dir/socat.pid"
    fi
    ;;
*)
    echo "usage: proxy.sh start tls|tcp DIR PORT [TARGET_PORT] | stop DIR" >&2
    exit 2
    ;;
esac
