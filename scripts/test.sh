#!/usr/bin/env bash
# Builds pipelm and runs every test (set-up included): unit tests under ASan+UBSan first, then
# the whole suite (unit, golden, invariance, transport, mpi, faults, cli; the GPU-free CUDA tests
# run everywhere nvcc is installed, the GPU ones skip without a GPU). Both builds treat every
# compiler warning (C++ and CUDA) as an error and show it. Prints ctest's summary last.
# Usage: scripts/test.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
bash scripts/setup.sh --no-build

GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

QUIET=()
((${#GEN[@]})) && QUIET=(-- --quiet)  # ninja: print only warnings, errors and failed commands
phase() { echo "== [$(date -u +%H:%M:%S), ${SECONDS}s] $*"; }
phase "sanitizer build (address,undefined; with CUDA when nvcc is there): unit tests"
[ -f build-asan/CMakeCache.txt ] || cmake -S . -B build-asan "${GEN[@]}" -DCMAKE_BUILD_TYPE=Debug \
  -DPIPELM_SANITIZE=address,undefined -DPIPELM_WARNINGS_AS_ERRORS=ON >/dev/null
# Only what the unit tests need: the sanitizer build of everything would double CI time.
# scheduler_test and engine_thread_test: the scheduler's client threads and stage 0's own thread.
ASAN_TARGETS=(pipelm gguf_test cli_errors_test ops_sampler_test tokenizer_test kernels_test transport_test hf_test
              scheduler_test engine_thread_test)
# The GPU-free CUDA tests (device functions and launch geometry on the host) exist with nvcc.
grep -q '^build cuda_host_test:' build-asan/build.ninja 2>/dev/null && ASAN_TARGETS+=(cuda_host_test)
cmake --build build-asan -j"$JOBS" --target "${ASAN_TARGETS[@]}" "${QUIET[@]}"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L unit -LE "mpi|slow" -j"$JOBS" --output-on-failure || {
    echo "sanitizer unit tests failed" >&2; exit 1; }
echo "sanitizer unit tests passed"

phase "fuzz smoke: every libFuzzer target for 60 s (clang, ASan + UBSan)"
bash scripts/fuzz.sh --smoke 60 || { echo "a fuzz target found a crash, timeout or out-of-memory" >&2; exit 1; }

phase "release build: all tests"
[ -f build/CMakeCache.txt ] || cmake -S . -B build "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DPIPELM_WARNINGS_AS_ERRORS=ON >/dev/null
cmake --build build -j"$JOBS" "${QUIET[@]}"
phase "release tests"
rc=0
ctest --test-dir build -j"$JOBS" --output-on-failure "$@" || rc=$?
phase "done (ctest exit $rc)"
exit $rc
