#!/usr/bin/env bash
# Device check of the CUDA backend, for a machine with an NVIDIA GPU (H100/H200: sm_90; the
# architecture is read from nvidia-smi). One run fits one 10-minute device call: every step's
# timeout is cut to what is left of a total budget (BUDGET, default 500 s; steps that no longer
# fit are reported as SKIP, never silently dropped):
#   0. the driver: CUDA 13 needs a driver that supports it (cuDriverGetVersion >= 13000, R580+);
#      an older one is reported as such (every GPU test would otherwise just skip);
#   1. configure with -DPIPELM_WITH_CUDA=ON and build pipelm, cuda_test and cuda_host_test;
#   2. cuda_host_test (GPU-free: device code on the host, launch plans, outlier numerics) and
#      cuda_test (per-op tests vs the CPU ops, whole-model tests vs the reference logits), run as
#      gtest binaries with --gtest_output=json: every test's measured errors (printed, and
#      recorded as max_rel_l2_* properties) are collected per model, passing or not, and a
#      skipped GPU test is a failure;
#   3. `pipelm logits --devices cuda:0` on glm4-tiny (f32 vs transformers float64 <= 1e-4, same
#      argmax; f16/bf16/q8_0 vs their exact forward <= 1e-3; 2 stages on one GPU);
#   4. glm4-range: default precision within the golden bound, --attn-precision f16 must fail with
#      the NaN/Inf report;
#   5. a short `pipelm bench` (GPU vs CPU) when the command exists.
# Logs go to $OUT (else ./build-device-check); the summary table is printed last.
#
# Usage:
#   scripts/device-check.sh            run the check (on the GPU machine)
#   scripts/device-check.sh --prepare  on a development machine with the Debian packages: copy
#                                      cereal, Asio, libsodium and the GoogleTest sources into
#                                      .device-deps/ (git-ignored), for a bare GPU image that
#                                      cannot download. Each is checked on its own.
# With the device tool: run --prepare here once, then run the check with carry [".device-deps"]
# and a timeout_s of at least BUDGET + 30. The tree that travels is limited to 64 MiB: the tracked
# files are ~46 MB and .device-deps ~12 MB, so it fits as long as no untracked build output
# travels (build* is git-ignored). The CUDA tests read tests/data/models/glm4-tiny, glm4-range,
# glm4-quant and glm4-quant-ff416.
#
# Environment: CUDA_ARCH (e.g. 90) overrides the detected architecture; JOBS (default 16);
# BUILD_DIR (default build-device); BUDGET (seconds, default 500).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
DEPS=$ROOT/.device-deps

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$DEPS/include" "$DEPS/lib"
    status=0
    prep() {  # NAME TEST_PATH COPY_COMMAND...
        local name=$1 probe=$2
        shift 2
        if [ -e "$probe" ]; then
            "$@" && echo "prepared $name" || { echo "copying $name failed" >&2; status=1; }
        else
            echo "missing $name ($probe): install its Debian package (scripts/setup.sh) and rerun --prepare" >&2
            status=1
        fi
    }
    prep cereal /usr/include/cereal/cereal.hpp cp -r /usr/include/cereal "$DEPS/include/"
    prep asio /usr/include/asio.hpp cp -r /usr/include/asio /usr/include/asio.hpp "$DEPS/include/"
    prep googletest /usr/src/googletest/CMakeLists.txt \
        sh -c "rm -rf '$DEPS/googletest' && cp -r /usr/src/googletest '$DEPS/googletest'"
    prep libsodium /usr/include/sodium.h sh -c "cp -r /usr/include/sodium /usr/include/sodium.h '$DEPS/include/' &&
        cp -P /usr/lib/x86_64-linux-gnu/libsodium.so* '$DEPS/lib/'"
    EXCLUDE="$(git rev-parse --git-dir)/info/exclude"
    mkdir -p "$(dirname "$EXCLUDE")"
    grep -qx '/.device-deps/' "$EXCLUDE" 2>/dev/null || echo '/.device-deps/' >>"$EXCLUDE"
    du -sh "$DEPS"
    [ $status -eq 0 ] && echo "prepared $DEPS (carry it: carry [\".device-deps\"])"
    exit $status
fi

START=$(date +%s)
BUDGET=${BUDGET:-500}
DEADLINE=$((START + BUDGET))
OUT=${OUT:-$ROOT/build-device-check}  # build* is git-ignored
mkdir -p "$OUT"
LOG=$OUT/device-check.log
: >"$LOG"
JOBS=${JOBS:-16}
BUILD=${BUILD_DIR:-build-device}
export PATH="$PATH:/opt/torch/.venv/bin:/usr/local/cuda/bin"
RESULTS=()
FAILED=0

log() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - START)); }
# step NAME STATUS DETAIL
record() {
    RESULTS+=("$(printf '%-34s %-5s %s' "$1" "$2" "$3")")
    [ "$2" = "FAIL" ] && FAILED=1
    log "== $1: $2 $3 (t=$(elapsed)s)"
}
summary() {
    echo
    echo "device-check summary ($(elapsed) s of a $BUDGET s budget; logs in $OUT)"
    printf '%-34s %-5s %s\n' "step" "res" "detail"
    for r in "${RESULTS[@]}"; do echo "$r"; done
    exit $FAILED
}
# limit MAX MIN: seconds a step may take, MAX cut to the time left (minus 10 s for the summary);
# prints nothing and fails when fewer than MIN seconds are left.
limit() {
    local left=$((DEADLINE - $(date +%s) - 10))
    [ "$left" -ge "$2" ] || return 1
    echo $((left < $1 ? left : $1))
}

# ---- 0. the machine and its driver -------------------------------------------------------------
log "== machine"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv; nvcc --version | tail -2;
  cmake --version | head -1; ninja --version; g++ --version | head -1; nproc; } >>"$LOG" 2>&1
for tool in cmake ninja nvcc g++; do
    command -v "$tool" >/dev/null || { record "tools" FAIL "$tool not found"; summary; }
done
ARCH=${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')}
[ -n "$ARCH" ] || ARCH=90
log "CUDA architecture: $ARCH"
# The CUDA version the driver supports: cuDriverGetVersion from libcuda (no compiler needed),
# else the "CUDA Version: X.Y" of nvidia-smi's header.
DRIVER_CUDA=$(python3 - 2>/dev/null <<'EOF'
import ctypes
v = ctypes.c_int(0)
print(v.value if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v)) == 0 else "")
EOF
)
if [ -z "$DRIVER_CUDA" ]; then
    DRIVER_CUDA=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1 |
                  awk '{print $1 * 1000 + $2 * 10}')
fi
NVCC_MAJOR=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
NEED=$((${NVCC_MAJOR:-13} * 1000))
if [ -z "$DRIVER_CUDA" ]; then
    record "driver" FAIL "no NVIDIA driver found (libcuda.so.1 / nvidia-smi): every GPU test would skip"
    summary
elif [ "$DRIVER_CUDA" -lt "$NEED" ]; then
    record "driver" FAIL "the driver supports CUDA $((DRIVER_CUDA / 1000)).$((DRIVER_CUDA % 1000 / 10)); nvcc $NVCC_MAJOR needs >= $((NEED / 1000)).0 (update the driver): every GPU test would skip"
    summary
else
    record "driver" PASS "supports CUDA $((DRIVER_CUDA / 1000)).$((DRIVER_CUDA % 1000 / 10)) (nvcc $NVCC_MAJOR)"
fi

# ---- dependencies (system, else carried in .device-deps), each on its own ---------------------
CMAKE_DEPS=()
[ -f /usr/include/cereal/cereal.hpp ] || [ ! -d "$DEPS/include/cereal" ] || CMAKE_DEPS+=("-DCEREAL_INCLUDE_DIR=$DEPS/include")
[ -f /usr/include/asio.hpp ] || [ ! -f "$DEPS/include/asio.hpp" ] || CMAKE_DEPS+=("-DASIO_INCLUDE_DIR=$DEPS/include")
if [ ! -f /usr/include/sodium.h ] && [ -f "$DEPS/include/sodium.h" ]; then
    CMAKE_DEPS+=("-DSODIUM_INCLUDE_DIR=$DEPS/include" "-DSODIUM_LIBRARY=$DEPS/lib/libsodium.so")
    export LD_LIBRARY_PATH="$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ ! -f /usr/include/gtest/gtest.h ] && [ ! -f /usr/local/include/gtest/gtest.h ] && [ -d "$DEPS/googletest" ]; then
    if [ ! -f "$DEPS/gtest/lib/libgtest.a" ] && [ ! -f "$DEPS/gtest/lib64/libgtest.a" ]; then
        log "== building GoogleTest from $DEPS/googletest"
        T=$(limit 90 30) || { record "googletest" SKIP "out of time"; summary; }
        timeout "$T" sh -c "cmake -S '$DEPS/googletest' -B '$DEPS/gtest-build' -G Ninja -DCMAKE_BUILD_TYPE=Release \
             -DCMAKE_INSTALL_PREFIX='$DEPS/gtest' -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON &&
             cmake --build '$DEPS/gtest-build' -j$JOBS && cmake --install '$DEPS/gtest-build'" >>"$LOG" 2>&1 ||
            { record "googletest" FAIL "see $LOG"; summary; }
    fi
    CMAKE_DEPS+=("-DCMAKE_PREFIX_PATH=$DEPS/gtest")
fi

# ---- 1. configure and build -------------------------------------------------------------------
T0=$(date +%s)
T=$(limit 45 20) || { record "configure" SKIP "out of time"; summary; }
if timeout "$T" cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPIPELM_WITH_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
        -DPIPELM_WITH_MPI=OFF "${CMAKE_DEPS[@]}" >"$OUT/configure.log" 2>&1; then
    record "configure (sm_$ARCH)" PASS "$(($(date +%s) - T0)) s"
else
    tail -30 "$OUT/configure.log"
    record "configure (sm_$ARCH)" FAIL "see configure.log"
    summary
fi
T0=$(date +%s)
T=$(limit 220 60) || { record "build" SKIP "out of time"; summary; }
if timeout "$T" ninja -C "$BUILD" -j"$JOBS" pipelm cuda_test cuda_host_test >"$OUT/build.log" 2>&1; then
    record "build -j$JOBS" PASS "$(($(date +%s) - T0)) s"
else
    grep -E "error|Error" "$OUT/build.log" | head -30
    record "build -j$JOBS" FAIL "see build.log (limit $T s)"
    summary
fi
PIPELM=$BUILD/pipelm

# ---- 2. the gtest binaries ------------------------------------------------------------------
# gtest_summary NAME JSON LOG RC ALLOW_SKIPS: one result line from the JSON report; the measured
# errors (max rel L2 lines of every test, passing or not) go to the log.
gtest_summary() {
    python3 - "$2" "$5" <<'EOF'
import json, sys
path, allow_skips = sys.argv[1], sys.argv[2] == "1"
try:
    r = json.load(open(path))
except Exception as e:
    print("FAIL no JSON report (%s): timed out or crashed" % e); sys.exit(0)
tests = [t for s in r.get("testsuites", []) for t in s.get("testsuite", [])]
failed = [t["classname"] + "." + t["name"] for t in tests if t.get("failures")]
skipped = [t["classname"] + "." + t["name"] for t in tests if t.get("result") == "SKIPPED"]
ok = not failed and (allow_skips or not skipped)
msg = "%d tests, %d failed, %d skipped" % (len(tests), len(failed), len(skipped))
if failed: msg += ": " + ", ".join(failed[:6])
if skipped and not allow_skips: msg += "; skipped (no GPU seen?): " + ", ".join(skipped[:4])
print(("PASS " if ok else "FAIL ") + msg)
props = [(k, v) for t in tests for k, v in t.items() if k.startswith("max_rel_l2")]
for k, v in props:
    print("  %-70s %s" % (k[len("max_rel_l2_"):], v), file=sys.stderr)
EOF
}
run_gtest() {  # NAME MAX_SECONDS MIN_SECONDS ALLOW_SKIPS
    local name=$1 bin=$BUILD/tests/cuda/$1 T res
    T=$(limit "$2" "$3") || { record "$name" SKIP "out of time"; return; }
    local t0
    t0=$(date +%s)
    timeout "$T" "$bin" --gtest_output=json:"$OUT/$name.json" >"$OUT/$name.log" 2>&1
    local rc=$?
    res=$(gtest_summary "$name" "$OUT/$name.json" "$OUT/$name.log" $rc "$4" 2>>"$OUT/errors.txt")
    [ $rc -eq 124 ] && res="FAIL timed out after $T s; ${res#* }"
    [ $rc -ne 0 ] && [ "${res%% *}" = PASS ] && res="FAIL exit $rc; ${res#* }"
    record "$name" "${res%% *}" "${res#* } ($(($(date +%s) - t0)) s)"
    grep -E "max rel L2|softmax:|launches checked" "$OUT/$name.log" >>"$LOG"
}
: >"$OUT/errors.txt"
run_gtest cuda_host_test 30 10 0
run_gtest cuda_test 150 60 0
if [ -s "$OUT/errors.txt" ]; then
    log "== measured errors (max rel L2, per model / test)"
    cat "$OUT/errors.txt" | tee -a "$LOG"
fi

# ---- 3/4. the command line against the reference logits --------------------------------------
ids() { python3 -c "import json,sys;print(','.join(map(str,json.load(open(sys.argv[1]))[sys.argv[2]]['ids'])))" "$1" "$2"; }
# compare OUT REF MAX_REL [MIN_ARGMAX_FRACTION]: prints "max rel L2 X, argmax a/b" and fails beyond the bounds
compare() {
    python3 - "$@" <<'EOF'
import math, struct, sys
out, ref, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
frac = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
V = 666
def rows(p):
    b = open(p, 'rb').read()
    x = struct.unpack('<%df' % (len(b) // 4), b)
    return [x[i:i + V] for i in range(0, len(x), V)]
a, r = rows(out), rows(ref)
if len(a) != len(r):
    print('rows %d vs %d' % (len(a), len(r))); sys.exit(1)
worst, agree = 0.0, 0
for x, y in zip(a, r):
    d = sum((p - q) ** 2 for p, q in zip(x, y)); n = sum(q * q for q in y)
    e = math.sqrt(d / n) if math.isfinite(d) else math.inf
    worst = max(worst, e)
    agree += max(range(V), key=lambda k: (x[k], -k)) == max(range(V), key=lambda k: (y[k], -k))
print('max rel L2 %.3e, argmax %d/%d' % (worst, agree, len(r)))
sys.exit(0 if worst <= tol and agree >= frac * len(r) else 1)
EOF
}
TINY=tests/data/models/glm4-tiny
RANGE=tests/data/models/glm4-range
cli_logits() {  # NAME MODEL PROMPTS_DIR PROMPT REF TOL FRAC EXTRA...
    local name=$1 model=$2 dir=$3 p=$4 ref=$5 tol=$6 frac=$7 T
    shift 7
    T=$(limit 30 10) || { record "logits $name" SKIP "out of time"; return; }
    local f=$OUT/logits-$name.f32
    if ! timeout "$T" "$PIPELM" logits -m "$model" --tokens "$(ids "$dir/ref/prompts.json" "$p")" --out "$f" "$@" \
            >>"$LOG" 2>&1; then
        record "logits $name" FAIL "pipelm exited non-zero"
        return
    fi
    local res
    res=$(compare "$f" "$ref" "$tol" "$frac")
    if [ $? -eq 0 ]; then record "logits $name" PASS "$res"; else record "logits $name" FAIL "$res (bound $tol)"; fi
    rm -f "$f"
}
if [ -f "$TINY/model.gguf" ]; then
    cli_logits "tiny-f32-p64" "$TINY/model.gguf" "$TINY" p64 "$TINY/ref/logits-hf64-p64.f32" 1e-4 1 --devices cuda:0
    cli_logits "tiny-f32-p64-2stages" "$TINY/model.gguf" "$TINY" p64 "$TINY/ref/logits-hf64-p64.f32" 1e-4 1 \
        --devices cuda:0,cuda:0 --ubatch 16
    for v in f16 bf16 q8_0; do  # not stored: rebuilt from the F32 file as the golden tests do
        M=$TINY/model-$v.gguf
        if [ ! -f "$M" ]; then
            M=/tmp/pipelm-tiny-$v.gguf
            T=$(limit 20 5) || { record "logits tiny-$v-p64" SKIP "out of time"; continue; }
            timeout "$T" "$PIPELM" quantize -m "$TINY/model.gguf" -o "$M" --type $v >>"$LOG" 2>&1 ||
                { record "logits tiny-$v-p64" FAIL "pipelm quantize --type $v failed"; continue; }
        fi
        cli_logits "tiny-$v-p64" "$M" "$TINY" p64 "$TINY/ref/logits-exact-$v-p64.f32" 1e-3 0 --devices cuda:0
    done
else
    record "logits glm4-tiny" SKIP "$TINY not in the tree"
fi
if [ -f "$RANGE/model.gguf" ]; then
    cli_logits "range-f32-p64" "$RANGE/model.gguf" "$RANGE" p64 "$RANGE/ref/logits-hf64-p64.f32" 1e-2 0.98 --devices cuda:0
    F16LOG=$OUT/range-f16.log
    if T=$(limit 30 10); then
        timeout "$T" "$PIPELM" logits -m "$RANGE/model.gguf" --tokens "$(ids "$RANGE/ref/prompts.json" p64)" \
            --out "$OUT/range-f16.f32" --devices cuda:0 --attn-precision f16 >"$F16LOG" 2>&1
        RC=$?
        rm -f "$OUT/range-f16.f32"
        if [ $RC -ne 0 ] && [ $RC -ne 124 ] && grep -q "non-finite" "$F16LOG"; then
            record "range --attn-precision f16" PASS "fails as it must: $(grep -o 'stage [0-9]*, layer [0-9]*' "$F16LOG" | head -1)"
        else
            record "range --attn-precision f16" FAIL "exit $RC, expected the NaN/Inf report (see range-f16.log)"
        fi
    else
        record "range --attn-precision f16" SKIP "out of time"
    fi
else
    record "glm4-range" SKIP "$RANGE not in the tree"
fi

# ---- 5. a short benchmark ---------------------------------------------------------------------
bench_rates() {  # "pp512 1234.5 ± 6.7 t/s; tg64 ..." from the markdown table
    grep -E '^\|' "$1" | awk -F'|' 'NR==1{for(i=1;i<=NF;i++){h=$i; gsub(/ /,"",h); if(h=="test")ti=i; if(h=="t/s")si=i}}
        NR>2 && ti && si {t=$ti; r=$si; gsub(/^ +| +$/,"",t); gsub(/^ +| +$/,"",r); printf "%s %s t/s; ", t, r}'
}
if "$PIPELM" bench --help >/dev/null 2>&1; then
    BM=/tmp/pipelm-bench.gguf
    if T=$(limit 30 15) && timeout "$T" "$PIPELM" mkmodel --preset bench -o "$BM" >>"$LOG" 2>&1; then
        for dev in cuda:0 cpu; do
            n=64
            [ $dev = cpu ] && n=16
            T=$(limit 40 15) || { record "bench $dev" SKIP "out of time"; continue; }
            if timeout "$T" "$PIPELM" bench -m "$BM" --devices $dev -p 512 -n $n -r 2 >"$OUT/bench-${dev/:/}.md" 2>>"$LOG"; then
                record "bench $dev (pp512, tg$n)" PASS "$(bench_rates "$OUT/bench-${dev/:/}.md")"
                cat "$OUT/bench-${dev/:/}.md" >>"$LOG"
            else
                record "bench $dev" FAIL "see $LOG (limit $T s)"
            fi
        done
        rm -f "$BM"
    else
        record "bench" SKIP "mkmodel --preset bench failed or out of time"
    fi
else
    record "bench" SKIP "no pipelm bench"
fi
summary
