#!/usr/bin/env bash
# An rsh/ssh stand-in for mpirun across the emulated hosts of hosts.sh: `ns-rsh.sh [-opts] HOST
# CMD...` runs CMD (one shell command line, as ssh would hand it to the remote shell) inside the
# network namespace that owns address HOST. Everything else (files, users, PIDs) is shared with
# the machine, like a cluster with a shared file system.
#
#   mpirun --hostfile HOSTFILE --mca plm_rsh_agent scripts/cluster/ns-rsh.sh \
#          --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 ...
#
# Exit codes: CMD's, or 2 (no host given) / 4 (no namespace has that address; run hosts.sh up).
set -euo pipefail
PREFIX=pipelm-${PIPELM_CLUSTER_TAG:-h}  # as in hosts.sh
while [[ $# -gt 0 && $1 == -* ]]; do shift; done  # ssh options mpirun may add (-x, -T, ...)
[[ $# -ge 1 ]] || { echo "ns-rsh.sh: usage: ns-rsh.sh HOST CMD..." >&2; exit 2; }
host=$1
shift
for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$"); do
    if ip -n "$ns" -4 -o addr show 2>/dev/null | awk '{print $4}' | grep -qx "$host/[0-9]*"; then
        # Every emulated host has the machine's hostname and /tmp, so the orteds would race to
        # make the same session directory (/tmp/ompi.HOST.UID/jf.N: "File exists", about 1 launch
        # in 10); a temporary directory per host keeps them apart, as separate machines would.
        tmp=/tmp/pipelm-ompi-$ns
        mkdir -p "$tmp"
        exec ip netns exec "$ns" env OMPI_MCA_orte_tmpdir_base="$tmp" sh -c "$*"
    fi
done
echo "ns-rsh.sh: no namespace ${PREFIX}* has address $host (run scripts/cluster/hosts.sh up N first)" >&2
exit 4
