#!/bin/sh
# Test hosts for the multi-node suite (tests/test_multinode.c): N Linux network
# namespaces joined by a bridge, each with one interface eth0 at 198.18.0.I/24 (the
# benchmarking range, never routed), so mpirun runs across them as across nodes.
#
#   hosts.sh up TAG N       make bridge mb<TAG> and hosts mh<TAG>-1 .. mh<TAG>-N
#   hosts.sh down TAG       SIGKILL every process in the hosts (by pid), delete them and the bridge
#   hosts.sh cut TAG I      take host I's link down (its cable pulled); restore TAG I puts it back
#   hosts.sh kill TAG I     SIGKILL every process of host I (by pid), the host stays
#   hosts.sh pids TAG I     the pids running in host I
#   hosts.sh exec TAG I CMD...   run CMD in host I (its network, its host name mh<TAG>-I)
#
# TAG (up to 8 letters or digits) keeps concurrent runs apart. Exit 3: namespaces or
# bridges cannot be made here (not root, no CAP_NET_ADMIN, no iproute2); the
# reason is on stderr.
set -u
cmd=${1:-}; tag=${2:-}
case "$tag" in
    ''|*[!A-Za-z0-9]*) echo "hosts.sh: TAG must be 1-8 letters or digits" >&2; exit 2 ;;
esac
[ ${#tag} -le 8 ] || { echo "hosts.sh: TAG longer than 8" >&2; exit 2; }
br="mb$tag"
ns() { echo "mh$tag-$1"; }
hostlink() { echo "mv$tag-$1"; }   # host end of host I's cable, on the bridge

kill_ns() {   # SIGKILL the processes of namespace $1, by pid, until none is left
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$1" 2>/dev/null) || return 0
        [ -n "$pids" ] || return 0
        for p in $pids; do kill -9 "$p" 2>/dev/null; done
        sleep 0.1
    done
}

case "$cmd" in
up)
    n=${3:?hosts.sh up TAG N}
    command -v ip >/dev/null 2>&1 || { echo "no ip command (apt-get install iproute2)" >&2; exit 3; }
    if ! err=$(ip link add "$br" type bridge 2>&1); then
        echo "cannot make a bridge: $err" >&2; exit 3
    fi
    ip link set "$br" up || exit 3
    i=1
    while [ "$i" -le "$n" ]; do
        h=$(ns "$i"); v=$(hostlink "$i")
        if ! err=$(ip netns add "$h" 2>&1); then
            echo "cannot make a network namespace: $err" >&2; "$0" down "$tag"; exit 3
        fi
        ip link add "$v" type veth peer name "mp$tag-$i" &&
        ip link set "mp$tag-$i" netns "$h" &&
        ip -n "$h" link set "mp$tag-$i" name eth0 &&
        ip -n "$h" addr add "198.18.0.$i/24" dev eth0 &&
        ip -n "$h" link set eth0 up &&
        ip -n "$h" link set lo up &&
        ip link set "$v" master "$br" &&
        ip link set "$v" up || { echo "cannot wire host $i" >&2; "$0" down "$tag"; exit 3; }
        i=$((i + 1))
    done
    ;;
down)
    for h in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^mh$tag-"); do
        kill_ns "$h"
        ip netns del "$h" 2>/dev/null
    done
    ip link del "$br" 2>/dev/null
    for v in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^mv$tag-"); do
        ip link del "$v" 2>/dev/null
    done
    exit 0
    ;;
cut) ip link set "$(hostlink "${3:?}")" down ;;
restore) ip link set "$(hostlink "${3:?}")" up ;;
kill) kill_ns "$(ns "${3:?}")" ;;
pids) ip netns pids "$(ns "${3:?}")" ;;
exec)   # in the host's namespace, under its own host name (a UTS namespace): Open MPI
        # tells nodes apart by name, and with one name for all its TCP links hang
    i=${3:?}; shift 3
    # MLM_NETNS_HOSTNAME=shared: keep the machine's name (nodes that share one name)
    [ "${MLM_NETNS_HOSTNAME:-}" = shared ] && exec ip netns exec "$(ns "$i")" "$@"
    exec ip netns exec "$(ns "$i")" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' "$(ns "$i")" "$@" ;;
*) echo "usage: hosts.sh up|down|cut|restore|kill|pids|exec TAG ..." >&2; exit 2 ;;
esac
