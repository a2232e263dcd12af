#!/usr/bin/env bash
# A TLS front for the plain AMQP port of the test RabbitMQ, for the
# rabbitmqs:// test (the broker scripts start no TLS listener yet): socat
# terminates TLS on 127.0.0.1:PORT and forwards to 127.0.0.1:5672.
#
#   tls_front.sh start DIR PORT   makes the certificates in DIR, starts socat
#                                 on PORT and PORT+1, waits until both accept
#   tls_front.sh stop DIR         stops those socats
# PORT presents a certificate for IP 127.0.0.1 and localhost, PORT+1 one for
# other.example only, both signed by DIR/ca.pem; DIR/wrong-ca.pem signed
# nothing here.
set -euo pipefail
dir=${2:?usage: tls_front.sh start|stop DIR [PORT]}
case "${1:-}" in
start)
    port=${3:?PORT}
    mkdir -p "$dir" && cd "$dir"
    for ca in ca wrong-ca; do
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout "$ca.key" -out "$ca.pem" \
            -subj "/CN=eventwire $ca" 2>/dev/null
    done
    cert() { # name CN SAN
        openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" \
            -subj "/CN=$2" 2>/dev/null
        echo "subjectAltName=$3" > "$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
            -extfile "$1.ext" -out "$1.crt" 2>/dev/null
        cat "$1.crt" "$1.key" > "$1.pem"
    }
    cert server localhost IP:127.0.0.1,DNS:localhost
    cert other other.example DNS:other.example
    : > socat.pid
    for p in "$port:server" "$((port + 1)):other"; do
        socat "OPENSSL-LISTEN:${p%%:*},bind=127.0.0.1,reuseaddr,fork,cert=${p#*:}.pem,verify=0" \
            TCP:127.0.0.1:5672 2>>socat.log &
        echo $! >> socat.pid
    done
    for p in "$port" "$((port + 1))"; do
        ok=0
        for _ in $(seq 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ok=1; break; fi
            sleep 0.05
        done
        if [ "$ok" = 0 ]; then
            echo "tls_front.sh: socat does not listen on 127.0.0.1:$p" >&2
            cat socat.log >&2
            exit 1
        fi
    done
    ;;
stop)
    if [ -s "$dir/socat.pid" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/socat.pid"
    fi
    rm -f "$dir/socat.pid"
    ;;
*)
    echo "usage: tls_front.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
