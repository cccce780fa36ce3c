#!/usr/bin/env bash
# A/B benchmark of the working tree against a git revision on one GPU machine: both trees built
# side by side, cuda_bench run alternately (base, tree, base, tree, ...), so that a change is
# judged against its base on the same device in the same session (between machines and runs the
# same kernel moves by up to ~3 %, docs/perf-notes.md v17, which hides most single changes).
#
#   scripts/gpu-ab.sh prepare REV     here (needs git): exports REV into .ab-base/ (git-ignored)
#   scripts/gpu-ab.sh run [ROUNDS]    on the GPU machine (carry .deps and .ab-base): ROUNDS
#                                     rounds (default 2), logs in $OUT, the lines matching
#                                     AB_LINES (an extended regex; default the M = 4608
#                                     reference rows) printed per run
#
# Dependencies: scripts/gpu-deps.sh, as for scripts/gpu-check.sh.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE_SRC=$ROOT/.ab-base
cmd=${1:-}

case "$cmd" in
  prepare)
    rev=${2:?"usage: scripts/gpu-ab.sh prepare REV"}
    git -C "$ROOT" rev-parse --verify -q "$rev^{commit}" > /dev/null || { echo "gpu-ab: no revision $rev" >&2; exit 2; }
    rm -rf "$BASE_SRC.tmp" && mkdir -p "$BASE_SRC.tmp"
    git -C "$ROOT" archive "$rev" | tar -x -C "$BASE_SRC.tmp" || { echo "gpu-ab: git archive $rev failed" >&2; exit 1; }
    git -C "$ROOT" rev-parse "$rev" > "$BASE_SRC.tmp/.ab-rev"
    rm -rf "$BASE_SRC" && mv "$BASE_SRC.tmp" "$BASE_SRC"
    echo "gpu-ab: $rev ($(cat "$BASE_SRC/.ab-rev")) in $BASE_SRC; run with carry [\".deps\", \".ab-base\"]"
    ;;
  run)
    rounds=${2:-2}
    [ -f "$BASE_SRC/.ab-rev" ] || { echo "gpu-ab: no $BASE_SRC (run 'scripts/gpu-ab.sh prepare REV' first and carry it)" >&2; exit 2; }
    OUT=${OUT:-$ROOT/gpu-ab-out}
    mkdir -p "$OUT"
    # shellcheck source=scripts/gpu-deps.sh
    source "$ROOT/scripts/gpu-deps.sh"
    lines=${AB_LINES:-'^\| 4608 \| 3072 \| 3072 |^M=4608 e4m3|^M=4608 nvfp4'}
    declare -A SRC=([base]=$BASE_SRC [tree]=$ROOT)
    pids=()
    for name in base tree; do
      (gpu_configure "${SRC[$name]}" "$ROOT/build-ab-$name" > "$OUT/configure-$name.log" 2>&1 &&
       cmake --build "$ROOT/build-ab-$name" -j 8 --target cuda_bench > "$OUT/build-$name.log" 2>&1) &
      pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    if [ $failed -ne 0 ]; then
      tail -20 "$OUT"/configure-*.log "$OUT"/build-*.log
      echo "gpu-ab: a build failed (logs in $OUT)" >&2
      exit 1
    fi
    echo "gpu-ab: base $(cat "$BASE_SRC/.ab-rev") against the working tree, $rounds rounds"
    for r in $(seq 1 "$rounds"); do
      for name in base tree; do
        "$ROOT/build-ab-$name/bench/cuda/cuda_bench" > "$OUT/bench-$name-$r.log" 2>&1 || { echo "gpu-ab: cuda_bench ($name, round $r) failed" >&2; exit 1; }
        echo "== $name, round $r"
        grep -E "$lines" "$OUT/bench-$name-$r.log" | cut -c1-500 || echo "(no line matches AB_LINES; the log: $OUT/bench-$name-$r.log)"
      done
    done
    ;;
  *)
    echo "usage: scripts/gpu-ab.sh prepare REV | run [ROUNDS]" >&2
    exit 2
    ;;
esac
