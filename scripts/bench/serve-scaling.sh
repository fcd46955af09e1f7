#!/usr/bin/env bash
# Serving throughput acceptance (issue 15), side by side on one machine: 16 concurrent clients
# against `pipelm serve` with 2 stages x 1 thread, against 1 stage x 1 thread, and a single
# client against the same 2-stage server, on a >= 300 M parameter model made by `pipelm mkmodel`.
# Targets: 2 stages / 1 stage >= 1.6x output tokens/s with 16 clients; 16 clients / 1 client on 2
# stages >= 3x. Each measurement starts its own server, warms it up, runs serve-load.mjs (the npm
# openai client, streamed requests of exactly MAX_TOKENS tokens) and reads the server's /metrics
# (per-stage busy seconds, bubble). A fourth configuration, two independent 1-stage servers at once
# with 8 clients each (t/s summed), is what this machine gives two threads doing the same work with
# no pipeline: the ceiling of the 2-stage ratio. The configurations alternate, in a rotated order
# each round, so that the noise of a shared machine hits all of them.
#
#   scripts/bench/serve-scaling.sh
#   AUTOGROUP_NICE=-15 ROUNDS=3 scripts/bench/serve-scaling.sh
#
# Environment: ROUNDS (3), N16 (48 requests for 16 clients), N1 (4 requests for 1 client), PROMPT
# (32 tokens), MAX_TOKENS (64), MODEL (default: preset bench, 24 layers, vocab 32768, q8_0: 407 M
# parameters), UBATCH (64), SPLIT (13,11 for the 2-stage server: decode-balanced, as the lm_head
# on the last stage runs for every generated token; "auto" for the planner's split),
# AUTOGROUP_NICE (unset; see pipeline-scaling.sh), PIPELM (build-serve/pipelm), OUT
# (build-serve/serve-scaling).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PIPELM=${PIPELM:-$ROOT/build-serve/pipelm}
MODEL=${MODEL:-$ROOT/build-serve/models/scale-q8_0.gguf}
OUT=${OUT:-$ROOT/build-serve/serve-scaling}
ROUNDS=${ROUNDS:-3}
N16=${N16:-48}
N1=${N1:-4}
PROMPT=${PROMPT:-32}
MAX_TOKENS=${MAX_TOKENS:-64}
UBATCH=${UBATCH:-64}
SPLIT=${SPLIT:-13,11}

log() { echo "[serve-scaling] $*" >&2; }
# AUTOGROUP_NICE: run the whole measurement (servers and clients) in one scheduler autogroup with
# that nice value (root only; see pipeline-scaling.sh), so that other sessions' work does not take
# the cores and the clients keep up with the servers.
if [[ -n ${AUTOGROUP_NICE:-} && -z ${SERVE_SCALING_GROUPED:-} ]]; then
    exec setsid -w env SERVE_SCALING_GROUPED=1 bash -c 'echo "$0" > /proc/self/autogroup && exec "$@"' \
        "$AUTOGROUP_NICE" bash "${BASH_SOURCE[0]}" "$@"
fi
[[ -x $PIPELM ]] || { log "no $PIPELM: build it (cmake --build build-serve --target pipelm)"; exit 1; }
[[ -f $ROOT/scripts/clients/node_modules/openai/package.json ]] || (cd "$ROOT/scripts/clients" && npm ci --no-audit --no-fund --loglevel=error)
if [[ ! -f $MODEL ]]; then
    mkdir -p "$(dirname "$MODEL")"
    log "making $MODEL"
    "$PIPELM" mkmodel --preset bench --layers 24 --vocab 32768 --dtype q8_0 -o "$MODEL.tmp" >&2
    mv "$MODEL.tmp" "$MODEL"
fi
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

SERVER_PIDS=()
stop_servers() {
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SERVER_PIDS=()
}
trap stop_servers EXIT

# start_server LOG STAGES: starts a server and waits until it serves. Sets PORT.
start_server() {
    local log=$1 stages=$2
    local args=(serve -m "$MODEL" --port 0 --threads 1 --stages "$stages" --parallel 16 --ubatch "$UBATCH"
                --ctx $((PROMPT * 2 + MAX_TOKENS + 32)))
    if [[ $stages == 2 && $SPLIT != auto ]]; then args+=(--split "$SPLIT"); fi
    "$PIPELM" "${args[@]}" > "$log" 2>&1 &
    SERVER_PIDS+=($!)
    PORT=
    for _ in $(seq 600); do
        if [[ -f $log ]] && grep -q "serve: ready" "$log"; then PORT=$(grep -o "127.0.0.1:[0-9]*" "$log" | head -1 | cut -d: -f2); return; fi
        sleep 0.1
    done
    log "the server did not start:"; cat "$log" >&2; exit 1
}

# run CONFIG STAGES CLIENTS REQUESTS SERVERS ROUND: SERVERS servers at once (the ceiling: two
# independent 1-stage servers, CLIENTS/2 clients each), one load run each, one JSON row (t/s summed).
run() {
    local config=$1 stages=$2 clients=$3 n=$4 servers=$5 round=$6 name="$OUT/$1-r$6"
    local ports=() pids=() i
    for ((i = 0; i < servers; ++i)); do
        start_server "$name.$i.server.log" "$stages"
        ports+=("$PORT")
    done
    local load=$(cut -d' ' -f1 /proc/loadavg)
    log "round $round: $config ($servers server(s) of $stages stage(s), $clients client(s), $n requests), load average $load"
    for ((i = 0; i < servers; ++i)); do
        node "$HERE/serve-load.mjs" --base-url "http://127.0.0.1:${ports[i]}" -n $((n / servers)) -c $((clients / servers)) \
            --prompt-tokens "$PROMPT" --max-tokens "$MAX_TOKENS" --warmup 2 --json "$name.$i.json" > "$name.$i.txt" || true &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    for ((i = 0; i < servers; ++i)); do curl -s "http://127.0.0.1:${ports[i]}/metrics" > "$name.$i.metrics"; done
    stop_servers
    python3 - "$config" "$stages" "$clients" "$round" "$load" "$servers" "$name" >> "$OUT/results.jsonl" <<'EOF'
import json, sys
config, stages, clients, rnd, load, servers, name = sys.argv[1:]
rs = [json.load(open(f"{name}.{i}.json")) for i in range(int(servers))]
r = rs[0]
busy, active = {}, 0.0
for line in open(f"{name}.0.metrics"):
    if line.startswith('pipelm_stage_busy_seconds_total{'):
        busy[line.split('"')[1]] = float(line.split()[-1])
    elif line.startswith('pipelm_pipeline_active_seconds_total '):
        active = float(line.split()[-1])
print(json.dumps(dict(config=config, stages=int(stages), clients=int(clients), round=int(rnd), load_before=float(load),
                      tps=sum(x['output_throughput'] for x in rs), failed=sum(x['failed'] for x in rs),
                      ttft_p50=r['ttft_ms']['median'], ttft_p99=r['ttft_ms']['p99'], itl_p50=r['itl_ms']['median'],
                      itl_p99=r['itl_ms']['p99'], e2el_p50=r['e2el_ms']['median'],
                      busy=[busy[k] / active if active else 0 for k in sorted(busy)])))
EOF
}

CONFIGS=("1stage-16clients 1 16 $N16 1" "2stages-16clients 2 16 $N16 1" "2stages-1client 2 1 $N1 1"
         "ceiling-2x1stage-8clients 1 16 $N16 2")
for ((r = 1; r <= ROUNDS; ++r)); do
    for ((k = 0; k < ${#CONFIGS[@]}; ++k)); do
        read -r config stages clients n servers <<< "${CONFIGS[$(((k + r - 1) % ${#CONFIGS[@]}))]}"
        run "$config" "$stages" "$clients" "$n" "$servers" "$r"
    done
done

python3 - "$OUT/results.jsonl" <<'EOF'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows: by.setdefault(r['config'], []).append(r)
def ms(v): return f"{st.mean(v):.1f}"
print("| configuration | output t/s (mean ± sd over rounds) | per round | TTFT p50 / p99 ms | ITL p50 / p99 ms | E2E p50 ms | busy % per stage (of active time) | failed |")
print("|---|---:|---|---|---|---:|---|---:|")
for c in ["1stage-16clients", "2stages-16clients", "2stages-1client", "ceiling-2x1stage-8clients"]:
    v = by[c]; t = [r['tps'] for r in v]
    busy = "/".join(f"{100 * st.mean([r['busy'][i] for r in v]):.0f}" for i in range(len(v[0]['busy'])))
    print(f"| {c} | {st.mean(t):.2f} ± {st.stdev(t) if len(t) > 1 else 0:.2f} | {', '.join(f'{x:.1f}' for x in t)} | "
          f"{ms([r['ttft_p50'] for r in v])} / {ms([r['ttft_p99'] for r in v])} | {ms([r['itl_p50'] for r in v])} / "
          f"{ms([r['itl_p99'] for r in v])} | {ms([r['e2el_p50'] for r in v])} | {busy} | {sum(r['failed'] for r in v)} |")
def ratio(a, b):
    rounds = sorted(set(r['round'] for r in rows))
    per = [next(x['tps'] for x in by[a] if x['round'] == k) / next(x['tps'] for x in by[b] if x['round'] == k) for k in rounds]
    return st.mean([r['tps'] for r in by[a]]) / st.mean([r['tps'] for r in by[b]]), per
for a, b, target in [("2stages-16clients", "1stage-16clients", 1.6), ("2stages-16clients", "2stages-1client", 3.0),
                     ("ceiling-2x1stage-8clients", "1stage-16clients", None)]:
    m, per = ratio(a, b)
    verdict = f"; target >= {target}: {'met' if m >= target else 'NOT met'}" if target else "; what the machine gives two threads"
    print(f"\n{a} / {b}: {m:.2f}x (ratio of means; per round {', '.join(f'{x:.2f}' for x in per)}{verdict})")
EOF
