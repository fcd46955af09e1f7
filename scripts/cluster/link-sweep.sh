#!/usr/bin/env bash
# A scaling study over emulated links: for every rate in RATES, S emulated hosts (hosts.sh) with
# that tbf rate on each link, TCP workers for stages 1..S-1 in hosts 1..S-1 and the coordinator
# (`pipelm bench`, stage 0) in host 0; plus the same bench as one stage in host 0. Every row goes
# to OUT as jsonl (with the machine, the rate label and every parameter) and a summary is printed.
# Needs root (hosts.sh).
#
#   MODEL=model.gguf scripts/cluster/link-sweep.sh
#   MODEL=m.gguf RATES="10mbit 1gbit" STAGES="2 4" BENCH="-p 64 -n 16 --sequences 1,4 -r 2" scripts/cluster/link-sweep.sh
#
# Environment: MODEL (required), PIPELM (build-h3/pipelm, else build/pipelm), RATES
# ("10mbit 100mbit 1gbit"), STAGES ("2"), THREADS (1 per stage), BENCH ("-p 64 -n 16 -r 2 -ub 64":
# bench flags), OUT (link-sweep.jsonl), WIRE (f32), QUEUE (each link's shaper queue in ms, hosts.sh
# --queue; 100).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PIPELM=${PIPELM:-$( [[ -x $ROOT/build-h3/pipelm ]] && echo "$ROOT/build-h3/pipelm" || echo "$ROOT/build/pipelm")}
MODEL=${MODEL:?set MODEL=path/to/model.gguf}
RATES=${RATES:-10mbit 100mbit 1gbit}
STAGES=${STAGES:-2}
THREADS=${THREADS:-1}
WIRE=${WIRE:-f32}
QUEUE=${QUEUE:-100}
OUT=${OUT:-link-sweep.jsonl}
read -r -a bench <<<"${BENCH:--p 64 -n 16 -r 2 -ub 64}"
NET=${PIPELM_NET:-10.77.0}
PREFIX=pipelm-${PIPELM_CLUSTER_TAG:-h}
work=$(mktemp -d /tmp/pipelm-sweep.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$HERE/hosts.sh" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token"
chmod 600 "$work/token"
: >"$OUT"

run_bench() {  # $1 = link-rate label, rest = extra flags; runs in host 0
    local rate=$1
    shift
    ip netns exec "${PREFIX}0" "$PIPELM" bench -m "$MODEL" -t "$THREADS" --wire "$WIRE" "${bench[@]}" -o jsonl \
        --link-rate "$rate" "$@" 2>"$work/bench.log" | tee -a "$OUT" >/dev/null || { cat "$work/bench.log" >&2; return 1; }
}

"$HERE/hosts.sh" up 1 >/dev/null
echo "[sweep] 1 stage" >&2
run_bench none
for s in $STAGES; do
    for rate in $RATES; do
        echo "[sweep] $s stages over $rate links" >&2
        "$HERE/hosts.sh" up "$s" --rate "$rate" --queue "$QUEUE" >/dev/null
        list=""
        pids=()
        for ((i = 1; i < s; ++i)); do
            ip netns exec "$PREFIX$i" "$PIPELM" worker --once --listen "$NET.$((i + 1)):7700" --token-file "$work/token" \
                -t "$THREADS" -m "$MODEL" >"$work/worker$i.log" 2>&1 &
            pids+=($!)
            list+="${list:+,}$NET.$((i + 1)):7700"
        done
        for ((i = 1; i < s; ++i)); do
            for _ in $(seq 1 100); do grep -q "worker listening on" "$work/worker$i.log" && break; sleep 0.1; done
        done
        run_bench "$rate" --workers "$list" --token-file "$work/token"
        for p in "${pids[@]}"; do wait "$p" || true; done
        pids=()
    done
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| stages | link | rate | test | t/s | busy % per stage | bubble % | link MB/run |")
print("|---:|---|---|---|---:|---|---:|---:|")
for r in rows:
    busy = "/".join("%.0f" % b for b in r["busy_pct"])
    print("| %d | %s | %s | %s | %.2f ± %.2f | %s | %.1f | %.2f |" % (r["stages"], r["link"], r["link_rate"] or "-", r["test"],
          r["tps"], r["tps_sd"], busy, r["bubble_pct"], r["link_mb"]))
if rows:
    r = rows[0]
    print("\nmachine: %s, %d cores, %s, CPU kernels %s, %d thread(s) per stage" % (r["cpu_model"], r["cores"], r["kernel"], r["cpu_isa"], r["threads"]))
PY
