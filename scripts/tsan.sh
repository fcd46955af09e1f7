#!/usr/bin/env bash
# ThreadSanitizer run of pipelm's threads: the compute pool, stage 0's own thread, the scheduler's
# client threads, the TCP links' reader and heartbeat threads, the serve HTTP threads. Not part of
# scripts/test.sh (another whole build: ~4 min of 2 cores); run it after changing any of those.
#
#   scripts/tsan.sh            build build-tsan (GCC, -fsanitize=thread, Debug, no CUDA) and run:
#                              the threaded unit tests (scheduler_test, engine_thread_test,
#                              transport_test, transport_net_test), then the binary in every
#                              mode: 2 in-process stages and 2 TCP workers under `bench
#                              --sequences 4`, and `serve` (2 stages) with 8 streaming requests at
#                              once and 3 clients that hang up mid-stream.
# Exit 0 when nothing was reported; 1 naming the log of the first run with a report; 2 on a set-up
# error. Suppressions: scripts/tsan.supp (each one says why).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-$ROOT/build-tsan}
LOGS=$BUILD/tsan-logs
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Debug -DPIPELM_SANITIZE=thread -DPIPELM_WITH_CUDA=OFF \
    -DPIPELM_WARNINGS_AS_ERRORS=ON >/dev/null
fi
cmake --build "$BUILD" -j"$(nproc)" --target pipelm scheduler_test engine_thread_test transport_test \
  transport_net_test transport_tcp_peer -- ${GEN:+--quiet}
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log
# halt_on_error=0: every report of a run goes to its log; exitcode=66 marks a run with reports.
export TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1 suppressions=$ROOT/scripts/tsan.supp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
P=$BUILD/pipelm
failed=""
check() {  # NAME: a run's log has no report
  if grep -q "WARNING: ThreadSanitizer" "$LOGS/$1.log"; then
    echo "tsan $1: $(grep -c 'WARNING: ThreadSanitizer' "$LOGS/$1.log") report(s), see $LOGS/$1.log" >&2
    [ -n "$failed" ] || failed=$LOGS/$1.log
  else
    echo "tsan $1: clean"
  fi
}
run() {  # NAME CMD...: runs CMD with its output in NAME.log; a failure other than a report stops
  local name=$1 rc=0; shift
  "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  if ((rc != 0 && rc != 66)); then
    echo "tsan $name: exit $rc (not a ThreadSanitizer report), see $LOGS/$name.log" >&2
    exit 2
  fi
  check "$name"
}

for t in serve/scheduler_test serve/engine_thread_test transport/transport_test transport/transport_net_test; do
  run "$(basename $t)" "$BUILD/tests/$t"
done

# The demo model (the file the binary embeds, tracked in the repository).
M=$ROOT/launcher/assets/glm4-demo-f16.gguf
run inprocess "$P" bench -m "$M" --stages 2 --threads 2 -p 16 -n 16 --sequences 4 -r 1

TOK=$LOGS/token
head -c 32 /dev/urandom | base64 >"$TOK"
chmod 600 "$TOK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# listen_address LOG KEY: waits (60 s at most) for a line with KEY from a process that bound port 0,
# then prints the first 127.0.0.1:PORT of its log (the address it printed when it bound).
listen_address() {
  for _ in $(seq 600); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -o "127.0.0.1:[0-9]*" "$1" | head -1; return; fi
    sleep 0.1
  done
  echo "tsan: no \"$2\" in $1 after 60 s" >&2
  exit 2
}
"$P" worker --listen 127.0.0.1:0 --token-file "$TOK" -m "$M" >"$LOGS/worker1.log" 2>&1 & pids+=($!)
"$P" worker --listen 127.0.0.1:0 --token-file "$TOK" -m "$M" >"$LOGS/worker2.log" 2>&1 & pids+=($!)
W1=$(listen_address "$LOGS/worker1.log" "worker listening on")
W2=$(listen_address "$LOGS/worker2.log" "worker listening on")
run tcp "$P" bench -m "$M" --workers "$W1,$W2" --token-file "$TOK" -p 16 -n 16 --sequences 4 -r 1
kill "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true
pids=()
check worker1
check worker2

"$P" serve -m "$M" --stages 2 --port 0 --parallel 8 >"$LOGS/serve.log" 2>&1 & pids+=($!)
S=$(listen_address "$LOGS/serve.log" "serve: ready")
clients=()
for i in $(seq 8); do
  curl -sf -N "$S/v1/completions" -d "{\"prompt\":\"The whale $i\",\"max_tokens\":40,\"stream\":true}" \
    >"$LOGS/stream$i.txt" & clients+=($!)
done
for i in 1 2 3; do  # hang up mid-stream (timeout's exit 124 is expected)
  timeout 0.5 curl -s -N "$S/v1/chat/completions" \
    -d "{\"messages\":[{\"role\":\"user\",\"content\":\"hi $i\"}],\"max_tokens\":200,\"stream\":true}" >/dev/null &
  clients+=($!)
done
for c in "${clients[@]:0:8}"; do wait "$c" || { echo "tsan serve: a streaming request failed" >&2; exit 2; }; done
wait "${clients[@]:8}" 2>/dev/null || true
for i in $(seq 8); do
  grep -q '^data: \[DONE\]' "$LOGS/stream$i.txt" || { echo "tsan serve: stream $i did not end with [DONE]" >&2; exit 2; }
done
kill "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true
pids=()
check serve

if [ -n "$failed" ]; then
  echo "ThreadSanitizer reported (first: $failed)" >&2
  exit 1
fi
echo "ThreadSanitizer: no report"
