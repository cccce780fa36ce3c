#!/usr/bin/env bash
# Installs missing packages, configures (once) and builds svdquant incrementally.
# Usage: scripts/build.sh [targets...]   (build folder: $SVDQUANT_BUILD_DIR, default ./build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
build="${SVDQUANT_BUILD_DIR:-$root/build}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
fi
if [ $# -gt 0 ]; then
  targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$build" "${targets[@]}" >&2
else
  cmake --build "$build" >&2
fi
