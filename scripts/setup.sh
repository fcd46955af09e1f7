#!/usr/bin/env bash
# Installs what pipelm needs on Debian 12 (only what is missing; quiet when all is there) and
# builds it. Usage: scripts/setup.sh [--no-build] [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build
DO_BUILD=1
for a in "$@"; do
  case "$a" in
    --no-build) DO_BUILD=0 ;;
    *) BUILD_DIR="$a" ;;
  esac
done

PKGS=(g++ cmake ninja-build libopenmpi-dev openmpi-bin libasio-dev libcereal-dev libgtest-dev libcpp-httplib-dev nlohmann-json3-dev libfmt-dev libxxhash-dev pkg-config libsodium-dev clang python3-numpy gnuplot-nox)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The npm `openai` client that the serve tests and scripts/bench/serve-load.mjs drive the server
# with (pinned in scripts/clients/package.json and its lock; node_modules/ is git-ignored). Optional:
# without node or the npm registry those tests skip and say why.
if command -v npm >/dev/null && [ ! -f scripts/clients/node_modules/openai/package.json ]; then
  (cd scripts/clients && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1) ||
    echo "setup: npm ci failed (no npm registry?): the serve tests that use the openai client will skip"
fi

if ((DO_BUILD)); then
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build "$BUILD_DIR" -j"$(nproc)" -- ${GEN:+--quiet} 2>&1 | grep -v "^ninja: no work to do" || true
  test -x "$BUILD_DIR/pipelm" || { echo "setup: build failed" >&2; exit 1; }
fi
