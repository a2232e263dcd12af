#!/usr/bin/env bash
# A TLS front for the local RabbitMQ, for the amqps:// test: the test broker
# has no TLS listener, so socat terminates TLS on 127.0.0.1:PORT and forwards
# to the plain port. Certificates are made fresh in DIR:
#   ca.pem        the CA that signed the server certificate
#   other-ca.pem  a CA that did not (a client trusting it must refuse)
#   server.pem    certificate (SAN IP:127.0.0.1, DNS:localhost) and key
#
#   tls_proxy.sh start DIR PORT [TARGET_PORT]   prints socat's pid when ready
#   tls_proxy.sh stop DIR                       stops the socat it started
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?DIR}
case "$cmd" in
start)
    port=${3:?PORT}
    target=${4:-5672}
    mkdir -p "$dir"
    cd "$dir"
    subj() { openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$1.key" \
                 -out "$1.pem" -subj "/CN=$2" 2>/dev/null; }
    subj ca "eventwire test CA"
    subj other-ca "eventwire other CA"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.crt -days 2 -extfile san.cnf 2>/dev/null
    cat server.crt server.key > server.pem
    socat "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,cert=server.pem,verify=0" \
        "TCP:127.0.0.1:$target" 2>"$dir/socat.log" &
    echo $! > socat.pid
    for _ in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            cat socat.pid
            exit 0
        fi
        sleep 0.05
    done
    echo "tls_proxy: socat does not listen on $port" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/socat.pid" ]; then
        kill "$(cat "$dir/socat.pid")" 2>/dev/null || true
        rm -f "$dir/socat.pid"
    fi
    ;;
*)
    echo "usage: tls_proxy.sh start DIR PORT [TARGET_PORT] | stop DIR" >&2
    exit 2
    ;;
esac
