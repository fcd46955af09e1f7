#!/usr/bin/env bash
# Emulated hosts for scaling runs on one machine: N network namespaces, each joined by a veth pair
# to one bridge, with a private test address and a tbf rate limit on its link (both directions:
# the namespace end shapes what the host sends, the bridge end what it receives). This kernel has
# no netem, so there is no delay injection: a link is a rate and the bridge's own latency.
#
#   scripts/cluster/hosts.sh up N [--rate 1gbit] [--queue MS]   make (or remake) hosts 0..N-1
#                                  --queue: the most a packet waits in a link's shaper (tbf latency,
#                                  100 ms by default); a queue shorter than a burst of one message
#                                  drops packets and TCP recovers at less than the rate
#   scripts/cluster/hosts.sh down                  remove every host and the bridge
#   scripts/cluster/hosts.sh status                list hosts, addresses and qdiscs
#   scripts/cluster/hosts.sh exec N [--rate R] -- CMD...   up, run CMD, down (also on failure)
#   scripts/cluster/hosts.sh hostfile              print an Open MPI hostfile (one slot per host)
#
# Names (all prefixed so they never collide with anything else on the machine; T is the tag):
#   namespace  pipelm-TI                      address 10.77.0.(I+1)/24 on its "eth0"
#   bridge     pipelm-Tbr (root namespace)    address 10.77.0.254/24 (mpirun may run here)
#   veth       plT-I (bridge end, root namespace) <-> eth0 (inside the namespace)
# Environment: PIPELM_CLUSTER_TAG (h; 1-3 lower-case letters: a second set of hosts, e.g. the
# tests' "t", lives beside the first), PIPELM_NET (10.77.0: the first three octets, /24).
#
# Needs root (CAP_NET_ADMIN). Exit codes: 0 ok, 2 bad arguments, 4 not root / no namespaces here,
# 5 a command failed (everything this run made is removed again).
set -euo pipefail

TAG=${PIPELM_CLUSTER_TAG:-h}
[[ $TAG =~ ^[a-z]{1,3}$ ]] || { echo "hosts.sh: PIPELM_CLUSTER_TAG=$TAG: use 1-3 lower-case letters" >&2; exit 2; }
PREFIX=pipelm-$TAG
NET=${PIPELM_NET:-10.77.0}
[[ $NET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || { echo "hosts.sh: PIPELM_NET=$NET: give three octets like 10.77.0" >&2; exit 2; }
BRIDGE=pipelm-${TAG}br
VETH=pl$TAG
MAX_HOSTS=64

die() { local code=$1; shift; echo "hosts.sh: $*" >&2; exit "$code"; }
usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die 4 "needs root (network namespaces and tc need CAP_NET_ADMIN); run it with sudo"
    command -v ip >/dev/null || die 4 "'ip' is missing: apt-get install iproute2"
    command -v tc >/dev/null || die 4 "'tc' is missing: apt-get install iproute2"
}

# Namespaces of ours, in index order.
our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" | sort -V || true; }

# tbf needs a bucket of at least rate/HZ bytes; 2 ms of traffic (min 16 KiB) keeps any rate exact.
burst_for() {
    local rate=$1 num unit bits
    [[ $rate =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]] || die 2 "--rate $rate: give a rate like 100mbit, 1gbit or 500kbit"
    num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
    case $unit in bit) bits=$num ;; kbit) bits=$((num * 1000)) ;; mbit) bits=$((num * 1000000)) ;; gbit) bits=$((num * 1000000000)) ;; esac
    ((bits > 0)) || die 2 "--rate $rate: the rate must be > 0"
    local b=$((bits / 8 / 500))
    ((b < 16384)) && b=16384
    echo "$b"
}

# Whether namespace $1 reaches address $2: a TCP connect to the unused port 9 is answered (refused)
# once the path works (no ping on minimal systems; bash's /dev/tcp needs nothing else).
reaches() {
    local out
    out=$(timeout 1 ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/9" 2>&1) && return 0
    [[ $out == *refused* ]]
}

down() {
    local ns i
    for ns in $(our_namespaces); do
        i=${ns#"$PREFIX"}
        ip link del "$VETH-$i" 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/tmp/pipelm-ompi-$ns"  # ns-rsh.sh's Open MPI session directory of this host
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

up() {
    local n=$1 rate=$2 queue=${3:-100} burst=""
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= MAX_HOSTS)) || die 2 "up $n: give a host count 1..$MAX_HOSTS"
    [[ -n $rate ]] && burst=$(burst_for "$rate")
    down  # idempotent: `up` always gives exactly the hosts asked for
    trap 'echo "hosts.sh: setup failed; removing what was made" >&2; down' ERR
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.254/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local i ns
    for ((i = 0; i < n; ++i)); do
        ns=$PREFIX$i
        ip netns add "$ns"
        ip link add "$VETH-$i" type veth peer name eth0 netns "$ns"
        ip link set "$VETH-$i" master "$BRIDGE" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$NET.$((i + 1))/24" dev eth0
        ip -n "$ns" link set eth0 up
        if [[ -n $rate ]]; then
            tc -n "$ns" qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency "${queue}ms"
            tc qdisc replace dev "$VETH-$i" root tbf rate "$rate" burst "$burst" latency "${queue}ms"
        fi
    done
    trap - ERR
    # The bridge forwards once its ports leave the learning state; wait until every host answers.
    for ((i = 0; i < n; ++i)); do
        local ok=0 t
        for t in $(seq 1 50); do
            if reaches "$PREFIX$i" "$NET.254"; then ok=1; break; fi
            sleep 0.1
        done
        ((ok)) || { down; die 5 "host $PREFIX$i does not reach the bridge at $NET.254"; }
    done
    echo "hosts.sh: $n host(s) up: ${PREFIX}0..${PREFIX}$((n - 1)) at $NET.1..$NET.$n, bridge $BRIDGE $NET.254${rate:+, link rate $rate each way}"
}

status() {
    local ns any=0
    for ns in $(our_namespaces); do
        any=1
        local addr qd
        addr=$(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}')
        qd=$(tc -n "$ns" qdisc show dev eth0 2>/dev/null | head -1)
        echo "$ns  ${addr:-no address}  ${qd:-no qdisc}"
    done
    ((any)) || echo "hosts.sh: no hosts (run: hosts.sh up N)"
}

hostfile() {
    local ns
    for ns in $(our_namespaces); do echo "$NET.$((${ns#"$PREFIX"} + 1)) slots=1"; done
}

cmd=${1:-}
[[ -n $cmd ]] || { usage; exit 2; }
shift
case $cmd in
    -h|--help|help) usage ;;
    up|exec)
        n=${1:-}; [[ -n $n ]] || die 2 "$cmd: give the number of hosts, e.g. $cmd 4"
        shift
        rate="" queue=100
        while (($#)); do
            case $1 in
                --rate) [[ $# -ge 2 ]] || die 2 "--rate needs a value like 1gbit"; rate=$2; shift 2 ;;
                --queue) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] && (($2 >= 1 && $2 <= 10000)) ||
                             die 2 "--queue needs milliseconds 1..10000, e.g. --queue 1000"
                         queue=$2; shift 2 ;;
                --) shift; break ;;
                *) die 2 "$cmd: unknown argument '$1' (usage: hosts.sh up N [--rate 1gbit] [--queue MS] | exec N [--rate R] [--queue MS] -- CMD...)" ;;
            esac
        done
        need_root
        if [[ $cmd == up ]]; then
            up "$n" "$rate" "$queue"
        else
            (($#)) || die 2 "exec: give a command after --"
            trap down EXIT INT TERM
            up "$n" "$rate" "$queue"
            "$@"
        fi
        ;;
    down) need_root; down; echo "hosts.sh: hosts removed" ;;
    status) need_root; status ;;
    hostfile) need_root; hostfile ;;
    *) die 2 "unknown command '$cmd' (use up N [--rate R], down, status, exec, hostfile)" ;;
esac
