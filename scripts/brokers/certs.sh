#!/usr/bin/env bash
# Test certificates for the brokers' TLS listeners (openssl CLI), made once.
#
#   scripts/brokers/certs.sh [DIR]   make what is missing, print DIR
#
# DIR defaults to ${EW_BROKER_STATE:-/tmp/eventwire-brokers}/tls and holds:
#   ca.pem, ca.key             the test CA ("eventwire test CA")
#   server.pem, server.key     the brokers' certificate: CN=localhost,
#                              SAN DNS:localhost and IP:127.0.0.1, signed by ca.pem
#   wrong-ca.pem, wrong-ca.key an unrelated CA that signed nothing here: a client
#                              trusting only it must refuse the brokers
#   server.p12                 server.pem, its key and ca.pem as a PKCS12 keystore
#                              (password "eventwire") for Java brokers (Artemis)
#   other-host.pem, other-host.key  signed by ca.pem for other.example only: a
#                              client checking the name must refuse it on 127.0.0.1
# Idempotent: files that exist, belong together and stay valid for at least a
# day are kept (a second run changes nothing and takes ~20 ms); otherwise
# the whole set is made again. The certificates are public (0644), the
# server key is readable by the group rabbitmq (the broker runs as that
# user), the CA keys by root only. Tests read the CA files from here.
set -euo pipefail
export EW_SCRIPT=certs.sh
# shellcheck source=scripts/brokers/lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

dir=${1:-$EW_BROKER_STATE/tls}
DAYS=825

# complete: every file is there, the server certificate verifies against the
# CA for 127.0.0.1 and localhost, and nothing expires within a day.
complete() {
    local f
    for f in ca.pem ca.key server.pem server.key wrong-ca.pem wrong-ca.key; do
        [ -s "$dir/$f" ] || return 1
    done
    for f in ca.pem server.pem wrong-ca.pem; do
        openssl x509 -noout -checkend 86400 -in "$dir/$f" >/dev/null 2>&1 || return 1
    done
    openssl verify -CAfile "$dir/ca.pem" -verify_ip 127.0.0.1 "$dir/server.pem" \
        >/dev/null 2>&1 || return 1
    openssl verify -CAfile "$dir/ca.pem" -verify_hostname localhost "$dir/server.pem" \
        >/dev/null 2>&1 || return 1
    # The key must be the certificate's.
    [ "$(openssl x509 -noout -pubkey -in "$dir/server.pem" 2>/dev/null)" = \
      "$(openssl pkey -pubout -in "$dir/server.key" 2>/dev/null)" ]
}

make_all() {
    local tmp
    mkdir -p "$dir"
    tmp=$(mktemp -d "$dir/.new.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the trap must remove this tmp
    trap "rm -rf '$tmp'" EXIT
    (
        cd "$tmp"
        for ca in ca wrong-ca; do
            openssl req -x509 -newkey rsa:2048 -nodes -days "$DAYS" -sha256 \
                -keyout "$ca.key" -out "$ca.pem" -subj "/CN=eventwire test $ca" \
                -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        done
        openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr \
            -subj "/CN=localhost" 2>/dev/null
        cat > server.ext <<EXT
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
EXT
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days "$DAYS" -sha256 -extfile server.ext -out server.pem 2>/dev/null
        rm -f server.csr server.ext ca.srl
    ) || die "openssl failed to make the certificates in $tmp"
    chmod 0644 "$tmp"/*.pem
    chmod 0600 "$tmp"/ca.key "$tmp"/wrong-ca.key
    chmod 0640 "$tmp"/server.key
    if getent group rabbitmq >/dev/null; then chgrp rabbitmq "$tmp/server.key"; fi
    # Keys first, certificates last: a reader that sees the new server.pem
    # also finds its key.
    local f
    for f in ca.key wrong-ca.key server.key wrong-ca.pem ca.pem server.pem; do
        mv -f "$tmp/$f" "$dir/$f"
    done
    say "made a test CA, a server certificate (localhost, 127.0.0.1) and a wrong CA in $dir"
}

# other-host.pem: signed by the CA there is (made after the rest, so that a
# set made before it existed is kept).
make_other_host() {
    (
        cd "$dir"
        openssl req -newkey rsa:2048 -nodes -sha256 -keyout .other-host.key \
            -out .other.csr -subj "/CN=other.example" 2>/dev/null
        printf 'basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n%s\n' \
            'subjectAltName = DNS:other.example' > .other.ext
        openssl x509 -req -in .other.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -CAserial .other.srl -days "$DAYS" -sha256 -extfile .other.ext \
            -out .other-host.pem 2>/dev/null
        chmod 0600 .other-host.key
        chmod 0644 .other-host.pem
        mv -f .other-host.key other-host.key
        mv -f .other-host.pem other-host.pem
        rm -f .other.csr .other.ext .other.srl
    ) || die "openssl failed to make other-host.pem in $dir"
}

command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
# Serialise with other starts (each broker script may call this).
mkdir -p "$dir"
exec 8>"$dir/.lock"
flock -w 60 8 || die "could not take the lock $dir/.lock"
chmod 0755 "$dir"
if ! complete; then
    make_all
    rm -f "$dir/other-host.pem" "$dir/other-host.key"
fi
if ! openssl verify -CAfile "$dir/ca.pem" -verify_hostname other.example \
        "$dir/other-host.pem" >/dev/null 2>&1; then
    make_other_host
fi
# The PKCS12 form of the server certificate, made again whenever server.pem
# is newer (it is derived, never part of the set that decides a remake).
if [ ! -s "$dir/server.p12" ] || [ "$dir/server.pem" -nt "$dir/server.p12" ]; then
    p12=$(mktemp "$dir/.server.p12.XXXXXX")
    openssl pkcs12 -export -in "$dir/server.pem" -inkey "$dir/server.key" \
        -certfile "$dir/ca.pem" -name server -passout pass:eventwire -out "$p12" 2>/dev/null \
        || { rm -f "$p12"; die "openssl could not make $dir/server.p12"; }
    chmod 0640 "$p12"
    mv -f "$p12" "$dir/server.p12"
fi
# Group rabbitmq may have appeared after the files were made.
if getent group rabbitmq >/dev/null && [ "$(stat -c %G "$dir/server.key")" != rabbitmq ]; then
    chgrp rabbitmq "$dir/server.key"
fi
echo "$dir"
