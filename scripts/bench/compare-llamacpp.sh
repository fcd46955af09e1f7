#!/usr/bin/env bash
# pipelm vs llama.cpp (CPU build, through node-llama-cpp 3.22.1) on the same GGUF files.
#
#   scripts/bench/compare-llamacpp.sh            # F16, Q8_0, Q4_K_M, IQ4_XS
#
# 1. Makes the benchmark model (`pipelm mkmodel --preset bench --ftype TYPE`: 61 layers, hidden 1024,
#    vocab 151552, random weights) per llama.cpp file type, with the per-tensor mix of types that
#    llama-quantize gives that file type (q4_k_m: q4_K with q6_K output and q6_K attn_v/ffn_down in
#    half the layers; iq4_xs: q5_K attn_v, q6_K output), as the files people download. Cached under
#    $BUILD/models as bench-ftype-TYPE.gguf (older bench-TYPE.gguf files were one type throughout,
#    made with --dtype, and are not reused). Marks the byte tokens NORMAL so that llama.cpp loads it
#    (see gguf-byte-tokens-normal.py; pipelm reads it the same way).
# 2. Installs node-llama-cpp into scripts/bench/node_modules if missing (npm registry).
# 3. Runs `pipelm bench` (--act-quant none, and --act-quant q8 on quantized types: what the default, auto,
#    does for them) and llamacpp-bench.mjs ALTERNATELY, $REPS times each, same file, same
#    thread count, pp$N_PROMPT and tg$N_GEN (each invocation does its own warm-up run first).
# 4. Prints a markdown table: t/s of both and the ratio pipelm / llama.cpp per test and type.
#
# Before/after: PIPELM_BASE=/path/to/old/pipelm adds that binary to every round (same flags, run
# right before $PIPELM), and the table gets its t/s and the ratio pipelm / base per mode: a change's
# speed measured in the same run as llama.cpp, alternating, rather than from two runs' absolute
# numbers. The base binary is not rebuilt (build an older commit with git worktree, -DPIPELM_BUILD_TESTS=OFF).
#
# Environment: AUTOGROUP_NICE (unset), THREADS (2), REPS (3), TYPES ("f16 q8_0 q4_k_m iq4_xs": names of
# `pipelm mkmodel --ftype`, see its --help), N_PROMPT (512), N_GEN (128), CTX (1024), UBATCH (512:
# pipelm --ubatch = llama.cpp's batch), BUILD (build-bench), PIPELM, PIPELM_BASE (unset), Q8 (1; 0 runs
# only the exact mode, e.g. for a before/after of binaries older than --act-quant auto).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
PIPELM=${PIPELM:-$BUILD/pipelm}
PIPELM_BASE=${PIPELM_BASE:-}
Q8=${Q8:-1}
if [[ -n $PIPELM_BASE && ! -x $PIPELM_BASE ]]; then
    echo "[compare] PIPELM_BASE=$PIPELM_BASE is not an executable: build the older commit first" >&2
    exit 2
fi
THREADS=${THREADS:-2}
REPS=${REPS:-3}
TYPES=${TYPES:-f16 q8_0 q4_k_m iq4_xs}
N_PROMPT=${N_PROMPT:-512}
N_GEN=${N_GEN:-128}
CTX=${CTX:-1024}
UBATCH=${UBATCH:-512}
OUT=${OUT:-$BUILD/compare-llamacpp}

log() { echo "[compare] $*" >&2; }
# AUTOGROUP_NICE=-15: run each measurement in its own scheduler autogroup with that nice value
# (root only). On a shared machine with sched_autogroup_enabled=1, every session gets an equal share
# of the CPUs however many threads it runs, so without this other users' builds cap the benchmark
# at a fraction of a core and hide any gain from a second stage.
prio() {
    if [[ -n ${AUTOGROUP_NICE:-} ]]; then
        setsid -w bash -c 'echo "$0" > /proc/self/autogroup && exec "$@"' "$AUTOGROUP_NICE" "$@"
    else
        "$@"
    fi
}

if [[ $PIPELM == "$BUILD/pipelm" ]]; then
    # Always brought up to date (a no-op when it is): a stale binary would measure old code.
    if [[ ! -f $BUILD/build.ninja ]]; then
        log "configuring $BUILD"
        cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPIPELM_WITH_CUDA=OFF \
            -DPIPELM_BUILD_TESTS=OFF >&2
    fi
    ninja -C "$BUILD" pipelm >&2
fi

if [[ ! -d $HERE/node_modules/node-llama-cpp || ! -d $HERE/node_modules/@node-llama-cpp/linux-x64 ]]; then
    log "installing node-llama-cpp into $HERE/node_modules"
    # --ignore-scripts: no postinstall download/build; the prebuilt CPU binaries come from
    # @node-llama-cpp/linux-x64. --omit=optional skips the CUDA/Vulkan/ARM binary packages.
    (cd "$HERE" && npm install --no-audit --no-fund --ignore-scripts --omit=optional >&2)
fi

mkdir -p "$BUILD/models" "$OUT"
models=()
for t in $TYPES; do
    m=$BUILD/models/bench-ftype-$t.gguf
    if [[ ! -f $m ]]; then
        log "making $m"
        if ! "$PIPELM" mkmodel --preset bench --ftype "$t" -o "$m.tmp" >&2; then
            log "pipelm mkmodel --ftype $t failed (unknown name, or $PIPELM older than --ftype?): skipping $t"
            rm -f "$m.tmp"
            continue
        fi
        mv "$m.tmp" "$m"
    fi
    python3 "$HERE/gguf-byte-tokens-normal.py" "$m" >&2
    models+=("$t:$m")
done

grep -m1 "model name" /proc/cpuinfo | sed 's/^/[compare] cpu: /' >&2
"$PIPELM" --version 2>/dev/null | grep "cpu kernels" | sed 's/^/[compare] pipelm /' >&2 || true
results=$OUT/results.jsonl
: > "$results"
for entry in "${models[@]}"; do
    t=${entry%%:*}
    m=${entry#*:}
    for ((r = 1; r <= REPS; r++)); do
        # pipelm twice on quantized types: exact (f32 activations, --act-quant none) and --act-quant q8
        # (activations rounded to int8 per 32 values, the scheme llama.cpp uses on CPUs; what the
        # default, auto, does for quantized weights). F16: exact is the default.
        modes=(none)
        [[ $t != f16 && $t != bf16 && $t != f32 && $Q8 == 1 ]] && modes+=(q8)
        bins=(pipelm:"$PIPELM")
        [[ -n $PIPELM_BASE ]] && bins=(base:"$PIPELM_BASE" "${bins[@]}")
        for aq in "${modes[@]}"; do
            for b in "${bins[@]}"; do
                tool=${b%%:*}
                bin=${b#*:}
                [[ $aq == q8 ]] && tool=$tool-q8
                log "$t round $r/$REPS: $tool (load average $(cut -d' ' -f1 /proc/loadavg))"
                prio "$bin" bench -m "$m" --threads "$THREADS" --stages 1 --ctx "$CTX" --ubatch "$UBATCH" \
                    --act-quant "$aq" -p "$N_PROMPT" -n "$N_GEN" -r 1 -o json > "$OUT/$tool-$t-$r.json"
                python3 -c 'import json,sys
for row in json.load(open(sys.argv[1])):
    print(json.dumps({"tool": sys.argv[3], "type": sys.argv[2], "test": row["test"], "tps": row["tps"]}))' \
                    "$OUT/$tool-$t-$r.json" "$t" "$tool" >> "$results"
            done
        done
        log "$t round $r/$REPS: llama.cpp (load average $(cut -d' ' -f1 /proc/loadavg))"
        (cd "$HERE" && prio node llamacpp-bench.mjs --model "$m" --threads "$THREADS" --ctx "$CTX" --batch "$UBATCH" \
            --n-prompt "$N_PROMPT" --n-gen "$N_GEN" --reps 1) > "$OUT/llamacpp-$t-$r.json"
        python3 -c 'import json,sys
for row in json.load(open(sys.argv[1]))["tests"]:
    for x in row["tps"]:
        print(json.dumps({"tool": "llama.cpp", "type": sys.argv[2], "test": row["test"], "tps": x}))' \
            "$OUT/llamacpp-$t-$r.json" "$t" >> "$results"
    done
done

python3 - "$results" "$THREADS" "$REPS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
threads, reps = sys.argv[2], sys.argv[3]
print(f"\n{threads} threads, {reps} alternating runs per tool (mean ± stddev t/s)\n")
print("| type | test | pipelm t/s (exact, --act-quant none) | pipelm t/s (q8 = default auto) | llama.cpp t/s | exact / llama.cpp | q8 / llama.cpp |")
print("|---|---|---:|---:|---:|---:|---:|")
keys = []
for r in rows:
    if (r["type"], r["test"]) not in keys:
        keys.append((r["type"], r["test"]))
def ms(v):
    return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
for t, test in keys:
    sel = lambda tool: [r["tps"] for r in rows if r["type"] == t and r["test"] == test and r["tool"] == tool]
    p, q, l = sel("pipelm"), sel("pipelm-q8"), sel("llama.cpp")
    if not p or not l:
        continue
    (pm, ps), (lm, ls) = ms(p), ms(l)
    qs, qr = "-", "-"
    if q:
        qm, qd = ms(q)
        qs, qr = f"{qm:.2f} ± {qd:.2f}", f"{qm / lm:.2f}"
    print(f"| {t.upper()} | {test} | {pm:.2f} ± {ps:.2f} | {qs} | {lm:.2f} ± {ls:.2f} | {pm / lm:.2f} | {qr} |")
base = [r for r in rows if r["tool"].startswith("base")]
if base:
    print("\nBefore/after (PIPELM_BASE = before), same rounds (mean ± stddev t/s)\n")
    print("| type | test | mode | before t/s | after t/s | after / before |")
    print("|---|---|---|---:|---:|---:|")
    for t, test in keys:
        for mode, b, a in (("none", "base", "pipelm"), ("q8", "base-q8", "pipelm-q8")):
            sel = lambda tool: [r["tps"] for r in rows if r["type"] == t and r["test"] == test and r["tool"] == tool]
            bv, av = sel(b), sel(a)
            if not bv or not av:
                continue
            (bm, bs), (am, asd) = ms(bv), ms(av)
            print(f"| {t.upper()} | {test} | {mode} | {bm:.2f} ± {bs:.2f} | {am:.2f} ± {asd:.2f} | {am / bm:.3f} |")
EOF
