#!/usr/bin/env bash
# Three network hosts for the multi-host tests, as Linux network namespaces
# joined by veth pairs (iproute2): a broker host and two service hosts, each
# service host on a link of its own to the broker host.
#
#   netns.sh up NAME        make NAME-b, NAME-h1, NAME-h2 and their links
#   netns.sh down NAME      delete them (processes inside are the caller's to stop)
#   netns.sh cut NAME h1    take h1's link down (its side: no RST, no FIN)
#   netns.sh restore NAME h1
#
# Addresses: h1 is 10.201.1.2 and reaches the broker host at 10.201.1.1;
# h2 is 10.201.2.2 and reaches it at 10.201.2.1. Nothing else is routed:
# the namespaces see only each other, never the machine's own network.
set -euo pipefail
cmd=${1:-} name=${2:-}
die() { echo "netns.sh: $*" >&2; exit 2; }
[ -n "$cmd" ] && [ -n "$name" ] || die "usage: netns.sh up|down|cut|restore NAME [h1|h2]"
b=$name-b
case "$cmd" in
up)
    ip netns add "$b"
    ip -n "$b" link set lo up
    for i in 1 2; do
        h=$name-h$i
        ip netns add "$h"
        ip -n "$h" link set lo up
        ip link add "$name-v$i" netns "$b" type veth peer name eth0 netns "$h"
        ip -n "$b" addr add "10.201.$i.1/24" dev "$name-v$i"
        ip -n "$b" link set "$name-v$i" up
        ip -n "$h" addr add "10.201.$i.2/24" dev eth0
        ip -n "$h" link set eth0 up
    done
    ;;
down)
    for ns in "$b" "$name-h1" "$name-h2"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    ;;
cut|restore)
    h=${3:-}
    [ "$h" = h1 ] || [ "$h" = h2 ] || die "which host: h1 or h2"
    ip -n "$name-$h" link set eth0 "$([ "$cmd" = cut ] && echo down || echo up)"
    ;;
*) die "unknown command '$cmd'" ;;
esac
