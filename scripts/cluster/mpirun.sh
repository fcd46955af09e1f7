#!/usr/bin/env bash
# mpirun across the emulated hosts of hosts.sh, one rank per host, the way it runs on a cluster:
# a hostfile of the hosts' addresses, ns-rsh.sh as the rsh agent (it enters each host's network
# namespace), MPI's TCP transport and Open MPI's out-of-band channel over the hosts' subnet only.
#
#   scripts/cluster/mpirun.sh -np 4 build/pipelm logits -m model.gguf --tokens 1,2,3 --out l.f32
#
# Every argument goes to mpirun after these. Environment: PIPELM_CLUSTER_TAG and PIPELM_NET as
# for hosts.sh. --mca rtc_hwloc_vmhole none: Open MPI 4.1's orted shares its hwloc topology
# through a shared-memory segment mapped at a "hole" of its address space, and with several
# orteds starting at once on one machine that write segfaults now and then (seen here about 1 in
# 10 launches of 4 ranks); "none" skips the sharing and costs nothing at this scale.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NET=${PIPELM_NET:-10.77.0}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
hostfile=$(mktemp /tmp/pipelm-hostfile.XXXXXX)
trap 'rm -f "$hostfile"' EXIT
"$HERE/hosts.sh" hostfile >"$hostfile"
[[ -s $hostfile ]] || { echo "mpirun.sh: no emulated hosts (run scripts/cluster/hosts.sh up N first)" >&2; exit 4; }
mpirun --hostfile "$hostfile" --bind-to none --mca plm_rsh_agent "$HERE/ns-rsh.sh" --mca rtc_hwloc_vmhole none \
    --mca btl tcp,self --mca btl_tcp_if_include "$NET.0/24" --mca oob_tcp_if_include "$NET.0/24" "$@"
