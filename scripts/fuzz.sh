#!/usr/bin/env bash
# libFuzzer runs of pipelm's decoders of outside bytes (tests/fuzz/). Builds build-fuzz with clang
# (ASan + UBSan + coverage), then fuzzes.
#
#   scripts/fuzz.sh TARGET SECONDS     one target (fuzz_gguf, ...) for SECONDS; findings and the
#                                      grown corpus go to build-fuzz/findings/TARGET, corpus/TARGET
#   scripts/fuzz.sh --smoke [SECONDS]  every target for SECONDS (default 60), two at a time (CI)
#   scripts/fuzz.sh --list             the targets
#
# FUZZ_PREBUILT=1 skips the build (the binaries in $BUILD/fuzz as they are: long runs side by side
# while the tree changes).
# Seeds: tests/data/fuzz/TARGET/ (copied into the working corpus, never written). Exit 0 when no
# run found a crash, timeout or out-of-memory; else 1, naming the reproducer file
# (rerun: build-fuzz/fuzz/TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-$ROOT/build-fuzz}
JOBS=$(nproc)

command -v clang++ >/dev/null || { echo "fuzz: clang++ not found: apt-get install clang (scripts/setup.sh does)" >&2; exit 2; }
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPIPELM_FUZZ=ON \
    -DPIPELM_BUILD_TESTS=OFF -DPIPELM_WITH_CUDA=OFF -DPIPELM_WITH_MPI=OFF >/dev/null
fi
targets() {
  local files=(tests/fuzz/CMakeLists.txt)
  shopt -s nullglob
  files+=(tests/fuzz/*.cmake)
  shopt -u nullglob
  sed -n 's/^pipelm_add_fuzzer(\([a-z_0-9]*\) .*/\1/p' "${files[@]}"
}
ALL=$(targets | tr '\n' ' ')

run_one() {  # TARGET SECONDS -> 0 clean, 1 finding
  local t=$1 secs=$2 corpus=$BUILD/corpus/$1 findings=$BUILD/findings/$1
  mkdir -p "$corpus" "$findings"
  local seeds=()
  [ -d "tests/data/fuzz/$t" ] && seeds=("tests/data/fuzz/$t")
  # -rss_limit_mb: a decoder that allocates what a hostile count asks for is a finding.
  if "$BUILD/fuzz/$t" "$corpus" "${seeds[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -max_len=1048576 -artifact_prefix="$findings/" -print_final_stats=1 \
      >"$BUILD/$t.log" 2>&1; then
    echo "fuzz $t: $(grep -E '^stat::number_of_executed_units' "$BUILD/$t.log" | awk '{print $2}') execs in ${secs}s," \
         "coverage $(grep -oE 'cov: [0-9]+' "$BUILD/$t.log" | tail -1 | awk '{print $2}') edges, corpus $(ls "$corpus" | wc -l), 0 findings"
    return 0
  fi
  echo "fuzz $t: FINDING (log $BUILD/$t.log):" >&2
  grep -E 'ERROR|SUMMARY|Test unit written' "$BUILD/$t.log" | head -5 >&2
  return 1
}

case "${1:-}" in
  --list) echo "$ALL"; exit 0 ;;
  --smoke)
    secs=${2:-60}
    # shellcheck disable=SC2086
    cmake --build "$BUILD" -j"$JOBS" --target $ALL -- ${GEN:+--quiet}
    rc=0; pids=()
    for t in $ALL; do
      run_one "$t" "$secs" & pids+=($!)
      if ((${#pids[@]} >= JOBS)); then wait "${pids[0]}" || rc=1; pids=("${pids[@]:1}"); fi
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    exit $rc ;;
  ""|-h|--help) sed -n '2,16p' "$0"; exit 2 ;;
esac
t=$1; secs=${2:?usage: scripts/fuzz.sh TARGET SECONDS}
[[ " $ALL " == *" $t "* ]] || { echo "fuzz: unknown target '$t' (targets: $ALL)" >&2; exit 2; }
[ "${FUZZ_PREBUILT:-0}" = 1 ] || cmake --build "$BUILD" -j"$JOBS" --target "$t" -- ${GEN:+--quiet}
run_one "$t" "$secs"
