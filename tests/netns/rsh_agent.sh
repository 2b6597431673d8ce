#!/bin/sh
# The remote-shell agent Open MPI launches its daemons with on the test hosts of
# tests/netns/hosts.sh (--mca plm_rsh_agent): "ssh" into host 198.18.0.I is entering
# the namespace of host I and running the command there. MLM_NETNS_TAG names the
# hosts' set (hosts.sh TAG). Called as `rsh_agent.sh [options] HOST COMMAND...`.
set -u
while [ $# -gt 0 ]; do
    case "$1" in -*) shift ;; *) break ;; esac
done
host=${1:?rsh_agent.sh: no host}; shift
tag=${MLM_NETNS_TAG:?rsh_agent.sh: MLM_NETNS_TAG is not set}
case "$host" in
    198.18.0.*) i=${host#198.18.0.} ;;
    *) echo "rsh_agent.sh: $host is not a test host (198.18.0.I)" >&2; exit 255 ;;
esac
# as ssh fails when the host is down or its cable pulled: no such host, or its eth0 has no carrier
if ! ip -n "mh$tag-$i" link show eth0 2>/dev/null | grep -q 'state UP'; then
    echo "ssh: connect to host $host port 22: No route to host" >&2
    exit 255
fi
exec "$(dirname "$0")/hosts.sh" exec "$tag" "$i" /bin/sh -c "$*"
