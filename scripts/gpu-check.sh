#!/usr/bin/env bash
# Build and check the cuda-sm90 backend on a Hopper machine: configure + build with ninja
# (tests and benchmarks on), run the GPU tests, compute-sanitizer (memcheck, racecheck) on a
# subset, and the benchmark; print a short table last. Logs go to $OUT (default: ./gpu-check-out).
#
#   scripts/gpu-check.sh [build] [tests] [sanitize] [bench] [probe] [nibble] [wgmma] [hbm] [ncu] [actncu] [stalls] [hotspots]
#   (actncu: ACT_LAUNCHES launches, default 4; cuda_bench --profile: SVDQ_PROFILE_M rows, default 4608)
#   (default: the first four)
#
# Dependencies: scripts/gpu-deps.sh (the .debs that scripts/fetch-gpu-deps.sh put into .deps/,
# unpacked under /tmp where the dev packages are missing).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/gpu-check-out}
BUILD=${BUILD:-$ROOT/build-gpu}
mkdir -p "$OUT"
STEPS=" ${*:-build tests sanitize bench} "
has() { [[ "$STEPS" == *" $1 "* ]]; }
declare -A RESULT

# shellcheck source=scripts/gpu-deps.sh
source "$ROOT/scripts/gpu-deps.sh"

{
  echo "== $(date -u)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  nvcc --version | tail -1
  cmake --version | head -1
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

if has build; then
  t0=$(date +%s)
  gpu_configure "$ROOT" "$BUILD" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; }
  # -k 0: a broken target elsewhere must not hide the CUDA results. Only what this script runs.
  cmake --build "$BUILD" -j 16 --target cuda_tests cuda_bench tma_probe nibble_probe wgmma_probe hbm_probe -- -k 0 > "$OUT/build.log" 2>&1
  RESULT[build]="rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E "error|warning: " "$OUT/build.log" | grep -v "^ninja: build stopped" | head -20
  grep -E "ptxas|registers|spill" "$OUT/build.log" | head -20
fi

if has build; then
  # Resource usage and the matrix instructions actually emitted (QGMMA: fp8 wgmma, HMMA: mma.sync).
  OBJ=$(find "$BUILD" -name 'w4a4_gemm.cu.o' | head -1)
  AOBJ=$(find "$BUILD" -name 'act_quant.cu.o' | head -1)
  if [ -n "$OBJ" ] && command -v cuobjdump > /dev/null; then
    cuobjdump -res-usage "$OBJ" "$AOBJ" > "$OUT/res-usage.log" 2>&1
    cuobjdump -sass "$OBJ" > "$OUT/gemm.sass" 2>&1
    RESULT[sass]="QGMMA $(grep -c QGMMA "$OUT/gemm.sass"), HGMMA $(grep -c HGMMA "$OUT/gemm.sass"), LDL/STL $(grep -cE 'LDL|STL' "$OUT/gemm.sass")"
  fi
fi

TESTS=$BUILD/tests/cuda/cuda_tests
if has tests; then
  if [ -x "$TESTS" ]; then
    # Time limits: a kernel that hangs (a barrier never completing) must not take the whole call.
    timeout "${TEST_TIMEOUT:-240}" "$TESTS" --gtest_output="xml:$OUT/cuda_tests.xml" > "$OUT/tests.log" 2>&1
    rc=$?
    RESULT[tests]="rc=$rc, $(grep -cE '^\[       OK \]' "$OUT/tests.log") ok, $(grep -cE '^\[  FAILED  \] [A-Za-z]' "$OUT/tests.log") failed lines, $(grep -cE '^\[  SKIPPED \] [A-Za-z]' "$OUT/tests.log") skipped"
    grep -E "Failure|Expected|Which is|actual|differ|ulp|FAILED|Skipped" -A3 "$OUT/tests.log" | head -80
  else
    RESULT[tests]="not built"
  fi
fi

if has sanitize; then
  if [ -x "$TESTS" ]; then
    FILTER='Plans/CudaFp8SinglePass.*/M7_K64_*:Plans/CudaFp8SinglePass.*/M200_K1600_*:Plans/CudaFp8SinglePass.*/M100_K12288_R32_bf16_signed*:Shapes/CudaLayerSplitK.*/M1_*:Shapes/CudaLayerSplitK.*/M256_N384*:Shapes/CudaActKernelExpansion.*/M7_*:Shapes/CudaActKernelExpansion.*/M300_*:Shapes/CudaFp8Activations.*/M7_*:Shapes/CudaFp8Layer.*/M7_*:Shapes/CudaActivationKernel.*/M1_*:Shapes/CudaActivationKernel.*/M7_*:Shapes/CudaActivationKernel.*/M33_*:Shapes/CudaLayer.*M7_*:Types/CudaHalfBitwise.*/0:CudaLayerRuns.Bad*:Shapes/CudaNvfp4Act.*/1:Shapes/CudaNvfp4Layer.*/4:CudaNvfp4LayerRuns.NonFinite*:Shapes/CudaNvfp4Gemm.*/1:Shapes/CudaNvfp4Gemm.*/2:Shapes/CudaNvfp4Lact.*/1:Shapes/CudaNvfp4Lact.*/3'
    for tool in memcheck racecheck; do
      compute-sanitizer --tool $tool --error-exitcode 3 "$TESTS" --gtest_filter="$FILTER" > "$OUT/sanitizer-$tool.log" 2>&1
      RESULT[$tool]="rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
    done
  else
    RESULT[memcheck]="not built"
  fi
fi

if has bench; then
  BENCH=$BUILD/bench/cuda/cuda_bench
  if [ -x "$BENCH" ]; then
    timeout "${BENCH_TIMEOUT:-300}" "$BENCH" > "$OUT/bench.log" 2>&1
    RESULT[bench]="rc=$?"
  else
    RESULT[bench]="not built"
  fi
fi

# The probes beside the benchmark: step, program under bench/cuda, log, time limit.
run_probe() {
  local exe=$BUILD/bench/cuda/$2
  if [ -x "$exe" ]; then
    timeout "$4" "$exe" > "$OUT/$3" 2>&1
    RESULT[$1]="rc=$? ($3)"
  else
    RESULT[$1]="not built"
  fi
}
has probe && run_probe probe tma_probe probe.log 120    # the bulk-copy delivery alone
has nibble && run_probe nibble nibble_probe nibble.log 60  # e4m3 wgmma on offset-nibble (subnormal) weights, exact?
has wgmma && run_probe wgmma wgmma_probe wgmma.log 60   # e4m3 wgmma throughput by structure, operands resident
has hbm && run_probe hbm hbm_probe hbm.log 60            # HBM into shared memory by mechanism and bytes in flight

if has ncu; then
  # Hardware counters of our kernels and cuBLAS's at M = 4608, K = N = 3072 (clocks left alone).
  BENCH=$BUILD/bench/cuda/cuda_bench
  if [ -x "$BENCH" ] && command -v ncu > /dev/null; then
    ncu --clock-control none --kernel-name regex:'w4a4|quant|gemm|nvjet|xmma|cutlass' \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats \
      --section Occupancy "$BENCH" --profile > "$OUT/ncu.log" 2>&1
    RESULT[ncu]="rc=$? (ncu.log)"
    grep -E "^  [a-zA-Z_].*\(|Duration|Memory Throughput|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy" "$OUT/ncu.log" | head -120 > "$OUT/ncu-summary.log"
  else
    RESULT[ncu]="not built or no ncu"
  fi
fi

if has actncu; then
  # The activation kernels' first launches in `cuda_bench --profile` (M = 4608, K = N = 3072;
  # ACT_REGEX picks the kernels, default both act_quant.cu's and fp8_act.cu's):
  # throughput, occupancy and where its warps wait.
  BENCH=$BUILD/bench/cuda/cuda_bench
  if [ -x "$BENCH" ] && command -v ncu > /dev/null; then
    ncu --clock-control none --kernel-name regex:"${ACT_REGEX:-act_quant|fp8_act}" --launch-count ${ACT_LAUNCHES:-4} --section SpeedOfLight \
      --section Occupancy --section LaunchStats --section WarpStateStats \
      --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_elapsed.max,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,l1tex__t_bytes.sum' \
      "$BENCH" --profile > "$OUT/actncu.log" 2>&1
    RESULT[actncu]="rc=$? (actncu.log)"
    grep -E "act_quant_kernel|fp8_act_kernel|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Theoretical Occ|Grid Size|dram__|sm__cycles|smsp__inst_executed|smsp__issue_active|lts__t_bytes|l1tex__t_bytes" "$OUT/actncu.log" | cut -c1-120 | head -80 > "$OUT/actncu-summary.log"
    awk '/act_quant_kernel|fp8_act_kernel/{print substr($0,1,100)} /issue_stalled/{if ($NF+0 > 0.5) print}' "$OUT/actncu.log" | head -40 >> "$OUT/actncu-summary.log"
  else
    RESULT[actncu]="not built or no ncu"
  fi
fi

if has stalls; then
  # Where the GEMM's warps wait: stall reasons per issued instruction of the first GEMM launches
  # of `cuda_bench --profile` (M = 4608, K = N = 3072: fp32, half, fp8 accumulation, twice each).
  BENCH=$BUILD/bench/cuda/cuda_bench
  if [ -x "$BENCH" ] && command -v ncu > /dev/null; then
    ncu --clock-control none --kernel-name regex:w4a4_gemm --launch-count 6 --section WarpStateStats \
      --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' "$BENCH" --profile > "$OUT/stalls.log" 2>&1
    RESULT[stalls]="rc=$? (stalls.log)"
    awk '/w4a4_gemm_kernel/{print; n=0} /issue_stalled/{if ($NF+0 > 0.3) print}' "$OUT/stalls.log" | head -80 > "$OUT/stalls-summary.log"
  else
    RESULT[stalls]="not built or no ncu"
  fi
fi

if has hotspots; then
  # Per-instruction warp-stall samples of one GEMM launch (fp8 activations, bf16, 128-row tile,
  # M = 4608, K = N = 3072 from `cuda_bench --profile`): the SASS lines where the warps wait most.
  BENCH=$BUILD/bench/cuda/cuda_bench
  if [ -x "$BENCH" ] && command -v ncu > /dev/null; then
    ncu --clock-control none --kernel-name-base mangled --kernel-name "regex:${HOTSPOT_KERNEL:-GemmModeE2ELi0ELi1E}" \
      --launch-count 1 --section SourceCounters --section WarpStateStats -f -o "$OUT/hot" "$BENCH" --profile > "$OUT/hotspots-run.log" 2>&1
    ncu -i "$OUT/hot.ncu-rep" --page source --print-source sass --csv > "$OUT/hot-sass.csv" 2> "$OUT/hotspots-err.log"
    RESULT[hotspots]="rc=$? (hotspots.log)"
    python3 "$ROOT/scripts/hotspots.py" "$OUT/hot-sass.csv" > "$OUT/hotspots.log" 2>&1
    rm -f "$OUT/hot.ncu-rep"
  else
    RESULT[hotspots]="not built or no ncu"
  fi
fi

echo
echo "==================== gpu-check summary ===================="
head -2 "$OUT/env.log" | tail -1
for k in build sass tests memcheck racecheck bench probe nibble wgmma hbm ncu actncu stalls hotspots; do
  [ -n "${RESULT[$k]:-}" ] && printf "%-10s %s\n" "$k" "${RESULT[$k]}"
done
[ -f "$OUT/ncu-summary.log" ] && cat "$OUT/ncu-summary.log"
[ -f "$OUT/stalls-summary.log" ] && cat "$OUT/stalls-summary.log"
[ -f "$OUT/actncu-summary.log" ] && cat "$OUT/actncu-summary.log"
[ -f "$OUT/hotspots.log" ] && head -70 "$OUT/hotspots.log"
[ -f "$OUT/probe.log" ] && cat "$OUT/probe.log"
[ -f "$OUT/nibble.log" ] && cat "$OUT/nibble.log"
[ -f "$OUT/wgmma.log" ] && cat "$OUT/wgmma.log"
[ -f "$OUT/hbm.log" ] && cat "$OUT/hbm.log"
[ -f "$OUT/bench.log" ] && grep -E "^\||^M=|^device" "$OUT/bench.log" | head -40
exit 0
