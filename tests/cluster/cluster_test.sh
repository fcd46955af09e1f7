#!/usr/bin/env bash
# Multi-host runs across emulated hosts (scripts/cluster/hosts.sh): for 2, 3 and 4 network
# namespaces, `mpirun` with one rank per namespace (hostfile + ns-rsh.sh agent, MPI's TCP
# transport over the veths) and TCP workers in namespaces 1.. with the coordinator in namespace 0
# must give logits byte-identical to one in-process stage (exact kernels: a stage split never
# changes the bits). Also checks hosts.sh up/status/down and that the ranks really ran in the
# namespaces, and that --trace over TCP has a track per stage. The hosts use tag "t" and 10.78.0.0/24, so a user's own hosts.sh hosts are left alone.
#
#   tests/cluster/cluster_test.sh PIPELM_BINARY SOURCE_DIR
# Exit: 0 pass, 1 fail, 77 skipped (not root, or no network namespaces here; the reason is printed).
set -uo pipefail
PIPELM=$1
SRC=$2
HOSTS=$SRC/scripts/cluster/hosts.sh
MPIRUN=$SRC/scripts/cluster/mpirun.sh  # hostfile + ns-rsh.sh agent + TCP over the test subnet
MODEL=$SRC/tests/data/models/glm4-tiny/model.gguf  # 61 layers, vocab 666
export PIPELM_CLUSTER_TAG=t PIPELM_NET=10.78.0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

skip() { echo "SKIPPED: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root to make network namespaces (run ctest as root)"
ip netns add pipelm-tprobe 2>/dev/null || skip "this machine does not allow network namespaces (ip netns add failed)"
ip netns del pipelm-tprobe

DIR=$(mktemp -d /tmp/pipelm-cluster.XXXXXX)
fails=0
workers=()
cleanup() {
    local p
    for p in "${workers[@]}"; do kill "$p" 2>/dev/null; done
    "$HOSTS" down >/dev/null 2>&1
    if ((fails == 0)); then rm -rf "$DIR"; else echo "logs kept in $DIR"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
pass() { echo "ok: $*"; }

# 40 prompt ids; --ubatch 16 gives 3 ubatches, so the stages overlap.
TOKENS=$(seq -s, 1 40)
logits() { echo logits -m "$MODEL" --tokens "$TOKENS" --ubatch 16 --threads 1; }
split_for() { case $1 in 2) echo 30,31 ;; 3) echo 20,20,21 ;; 4) echo 16,15,15,15 ;; esac; }

timeout 60 "$PIPELM" $(logits) --out "$DIR/ref.f32" >"$DIR/ref.log" 2>&1 || { fail "one-stage reference"; cat "$DIR/ref.log"; exit 1; }
[[ $(stat -c %s "$DIR/ref.f32") -eq $((40 * 666 * 4)) ]] || { fail "reference has the wrong size"; exit 1; }

# hosts.sh: up twice is the same as once; status lists every host with its rate; down removes all.
"$HOSTS" up 3 --rate 1gbit >/dev/null && "$HOSTS" up 2 --rate 1gbit >"$DIR/up.log" 2>&1 || fail "hosts.sh up"
st=$("$HOSTS" status)
[[ $(grep -c '^pipelm-t[01] .*10\.78\.0\.[12]/24.*tbf.*1Gbit' <<<"$st") -eq 2 && $(wc -l <<<"$st") -eq 2 ]] \
    && pass "hosts.sh up is idempotent" || fail "hosts.sh status after up 3, up 2:"$'\n'"$st"
"$HOSTS" down >/dev/null
[[ -z $(ip netns list | grep '^pipelm-t') && -z $(ip -br link | grep -E '^(plt-|pipelm-tbr)') ]] \
    && pass "hosts.sh down removes everything" || fail "hosts.sh down left $(ip netns list | grep pipelm-t)"

for n in 2 3 4; do
    split=$(split_for "$n")
    "$HOSTS" up "$n" --rate 1gbit >"$DIR/up$n.log" 2>&1 || { fail "hosts.sh up $n: $(cat "$DIR/up$n.log")"; continue; }
    if command -v mpirun >/dev/null; then
        # Each rank prints the namespace it runs in (MPI rank I must be host I).
        timeout 60 "$MPIRUN" -np "$n" sh -c 'echo "rank $OMPI_COMM_WORLD_RANK in $(ip netns identify)"' >"$DIR/where$n.log" 2>&1
        want=$(for ((i = 0; i < n; ++i)); do echo "rank $i in pipelm-t$i"; done)
        [[ $(grep "^rank " "$DIR/where$n.log" | sort) == "$want" ]] || fail "mpirun ranks are not one per namespace: $(cat "$DIR/where$n.log")"
        timeout 90 "$MPIRUN" -np "$n" "$PIPELM" $(logits) --split "$split" --out "$DIR/mpi$n.f32" >"$DIR/mpi$n.log" 2>&1
        rc=$?
        if [[ $rc -eq 0 ]] && grep -q "$n stages, one per MPI rank" "$DIR/mpi$n.log" && cmp -s "$DIR/mpi$n.f32" "$DIR/ref.f32"; then
            pass "mpirun over $n namespaces: logits byte-identical to one stage"
        else
            fail "mpirun over $n namespaces (exit $rc): $(tail -5 "$DIR/mpi$n.log")"
        fi
    else
        echo "note: mpirun is not on PATH; the MPI part is skipped (apt-get install openmpi-bin)"
    fi
    # TCP: workers 1..n-1 listen on their host's address; the coordinator runs in host 0.
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/token"
    chmod 600 "$DIR/token"
    list=""
    workers=()
    for ((i = 1; i < n; ++i)); do
        ip netns exec "pipelm-t$i" timeout 90 "$PIPELM" worker --once --listen "$PIPELM_NET.$((i + 1)):7700" \
            --token-file "$DIR/token" --threads 1 -m "$MODEL" >"$DIR/worker$n-$i.log" 2>&1 &
        workers+=($!)
        list+="${list:+,}$PIPELM_NET.$((i + 1)):7700"
    done
    for ((i = 1; i < n; ++i)); do
        for _ in $(seq 1 100); do grep -q "worker listening on" "$DIR/worker$n-$i.log" && break; sleep 0.1; done
    done
    ip netns exec pipelm-t0 timeout 90 "$PIPELM" $(logits) --split "$split" --workers "$list" --token-file "$DIR/token" \
        --out "$DIR/tcp$n.f32" --trace "$DIR/tcp$n.json" >"$DIR/tcp$n.log" 2>&1
    rc=$?
    wrc=0
    for p in "${workers[@]}"; do wait "$p" || wrc=$?; done
    workers=()
    if [[ $rc -eq 0 && $wrc -eq 0 ]] && grep -q "$n stages, TCP workers" "$DIR/tcp$n.log" && cmp -s "$DIR/tcp$n.f32" "$DIR/ref.f32"; then
        pass "TCP workers in $((n - 1)) namespace(s), coordinator in another: logits byte-identical to one stage"
    else
        fail "TCP over $n namespaces (coordinator exit $rc, worker exit $wrc): $(tail -5 "$DIR/tcp$n.log")"
    fi
    # --trace over TCP: 3 ubatches (40 tokens in 16s), each with a compute span on every stage,
    # the stages' clocks being one (namespaces share the machine's clock).
    spans=$(grep -c '"cat":"compute"' "$DIR/tcp$n.json" 2>/dev/null)
    last=$(grep -c "\"tid\":$((2 * (n - 1))),.*\"cat\":\"compute\"" "$DIR/tcp$n.json" 2>/dev/null)
    [[ $spans -eq $((3 * n)) && $last -eq 3 ]] && pass "--trace over TCP: a compute span per ubatch on each of $n stages" \
        || fail "--trace over TCP: $spans compute spans ($last on stage $((n - 1))), expected $((3 * n)) (3 on the last)"
done
"$HOSTS" down >/dev/null
((fails == 0)) && echo "all cluster checks passed" || echo "$fails cluster check(s) failed"
((fails == 0))
