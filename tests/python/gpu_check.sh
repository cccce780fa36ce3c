#!/usr/bin/env bash
# The Python tests on a GPU machine with torch (the lent Hopper machines): build the extension and
# the CLI with CUDA, then pytest tests/python (numpy, torch CPU, torch CUDA, diffusers FLUX).
# Where the Debian dev packages are missing, the .debs in .deps/ are unpacked into /tmp (as
# scripts/gpu-check.sh does); wheels in .whl/ (e.g. diffusers) are installed into /tmp/site.
# Logs go to $OUT (default ./python-gpu-out).      Usage: tests/python/gpu_check.sh [pytest args]
# SKIP_BUILD=1 reuses $BUILD.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/python-gpu-out}
BUILD=${BUILD:-/tmp/svdquant-py-build}
mkdir -p "$OUT"
# shellcheck source=scripts/gpu-deps.sh
source "$ROOT/scripts/gpu-deps.sh"
if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$ROOT"/.whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__)"; } 2>&1 | tee "$OUT/env.log"
t0=$(date +%s)
[ -n "${SKIP_BUILD:-}" ] || {
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSVDQUANT_BUILD_TESTS=OFF -DSVDQUANT_BUILD_BENCH=OFF \
  -DSVDQUANT_BUILD_PYTHON=ON -DPython_EXECUTABLE="$(python3 -c 'import sys; print(sys.executable)')" "${EXTRA[@]}" \
  > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
rm -f "$BUILD"/python/svdquant/_C*.so  # a module of another ABI tag would shadow the new one
cmake --build "$BUILD" -j "$(nproc)" --target _C svdquant_cli > "$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
}
so=$(ls "$BUILD"/python/svdquant/_C*.so)
echo "$(basename "$so"): $(nm -D --defined-only "$so" | wc -l) exported symbols, libstdc++ $(ldd "$so" | grep -q libstdc++ && echo shared || echo static)"
export PYTHONPATH=$BUILD/python:$ROOT/python:${PYTHONPATH:-} SVDQUANT_CLI=$BUILD/svdquant PYTHONUNBUFFERED=1
# PYTEST_PREFIX: e.g. "cuda-gdb -q -batch -ex run -ex bt --args" for a native backtrace.
${PYTEST_PREFIX:-} python3 -m pytest -v -rs -s -p no:cacheprovider "$ROOT/tests/python" "$@" 2>&1 | tee "$OUT/pytest${LOG_SUFFIX:-}.log" | grep -vE "PASSED$" | tail -${TAIL_LINES:-150}
