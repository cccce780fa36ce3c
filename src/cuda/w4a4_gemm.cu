// The W4A4 GEMM of the cuda-sm90 backend (NUMERICS.md §4) with its epilogue (§4.3), and the
// same GEMM for fp8 activations (§5).
//
// Three group accumulations (GemmMode): §4.1 (FP32) and §4.2 (HALF) with two-sided scales; §5
// (FP8: e4m3 activations with one float32 scale per row, so the fold is one-sided, acc += p * s_w,
// and the row scale is applied in the epilogue).
//
// A CTA tile is 128 weight rows (output columns n) by 128 activation rows (m) of y^T, one consumer
// warpgroup per 64-row weight block: the weight rows are wgmma's M side (A from registers: the
// 4-bit weights are expanded to e4m3 in registers, so they stay 4-bit in memory and in shared
// memory) and the activation rows wgmma's N side (B, e4m3 codes in shared memory). int4 values
// are exact in e4m3 and every product and group sum (|p| <= 7680) is exact in the float32
// accumulators, so each group's wgmma result is the exact integer p[g] of §4. Each consumer
// warpgroup has 240 registers and two partial-sum buffers: group g + 1's wgmma runs while group g
// is folded. (v7 measured a 192-row tile, three warpgroups of one buffer each: slower; removed.)
// With GemmParams::wexp the weights come already expanded to e4m3 (weight_expand.cu, once per
// call instead of once per activation row tile) and are wgmma's shared-memory A operand (SS), in
// the code tiles' layout; the stage then holds 16 KB of them per group pair instead of 8 KB of
// int4 (v9: fp8 GEMM 142.8 -> 116.0 us at M = 4608, K = N = 3072; the layer uses it from 2048
// rows, Sm90Layer::WeightPath). Same products, same fold order: bitwise the same output.
//
// Persistent: the CTAs walk the tiles (n fastest, so the CTAs in flight share their code tiles in
// L2); the producer runs ahead into the next tile while the consumers finish the epilogue of the
// current one, so the pipeline never drains between tiles. Optionally in clusters of 2 or 4 CTAs
// that take adjacent column tiles and multicast each code tile (GemmParams::cluster; v8 measured
// them slower, docs/perf-notes.md). Where the output tiles fill few SMs (small M), split-K
// (GemmParams::splits, fp32 and fp8 accumulation, int4 fragments, its own instantiation): each
// tile's groups are split into S ranges computed by different CTAs, whose float32 accumulators
// the tile's last CTA adds in split order before the epilogue (deterministic; v11: M = 256,
// K = 12288 fp8 layer 93.5 -> 64.9 us, docs/perf-notes.md v11.2).
//
// Warp roles: warps 0 .. 7 are the two consumer warpgroups; the last warpgroup is the producer,
// whose first thread fills a ring of shared-memory stages with 1-D bulk copies, completing on
// "full" mbarriers; every consumer thread (with clusters: every consumer warp of the cluster)
// releases a stage on its "empty" mbarrier. A stage holds
// two groups of 64 along K (v8: the bulk copies' cost is per copy and per stage, not per byte,
// below 16 KB: tma_probe measured 4.0 TB/s into the SMs for one 8 KB copy per stage, 7.5 TB/s for
// one of 16 KB). Per stage: the two groups' code tiles (16 KB), their weight fragments (8 KB), the
// weight scales and the activation scales, one copy each (contiguous in the layouts).
// The fold: §4.1 (float32, fma), §4.2 (T, one T_fma per group in group order via __hfma2,
// bitwise the CPU `half` mode) or §5.
// Epilogue: ·alpha, ·wcscales + bias (two float32 operations, §4.3), + lora_act · proj_upᵀ
// (bf16 wgmma of split operands, see consume()), rounded to T, staged transposed in shared memory
// and stored with bounds checks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>

#include "cuda_check.hpp"
#include "pdl.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "sm90_primitives.cuh"

namespace svdquant::cuda {
namespace {

using namespace sm90;

constexpr int kProducerThreads = 128;  // one producer warpgroup (setmaxnreg needs whole warpgroups)
constexpr int kConsumerThreads = 256;  // two consumer warpgroups
constexpr int kThreads = kConsumerThreads + kProducerThreads;
constexpr int kConsumerRegs = 240;     // setmaxnreg: 128 x (24 + 2 x 240) <= 65536
constexpr int kRows = kTileN;          // weight rows (output columns) per CTA tile
constexpr size_t kSmemLimit = 232448;  // sharedMemPerBlockOptin of sm_90 (227 KB)
constexpr int kBlockBytes = kWeightBlock * kGroup / 2;  // one 64-row weight block of a group: 2048
constexpr int kStageGroups = 2;        // groups of 64 along K per stage

// One stage: what the CTA needs for two groups h = 0, 1 of 64 along K (the second unused where
// K / 64 is odd and this is a tile's last stage). Each array is the global layout's bytes of the
// two groups, copied as they are (sm90_layout.hpp).
// SSW: the weights come expanded to e4m3 (GemmParams::wexp) in the code tiles' layout and are
// wgmma's shared-memory A operand; otherwise int4 fragments, expanded by the consumers.
template <bool SSW>
struct __align__(1024) Stage {  // 1024: each swizzled code tile starts on a 512-byte boundary
  static constexpr int kWeightBytes = SSW ? kCodeTileBytes : kWeightTileBytes;  // per group
  uint8_t codes[kStageGroups][kCodeTileBytes];  // activation codes, wgmma K-major 64-byte swizzle
  uint8_t weights[kStageGroups][kWeightBytes];  // [h][weight block][tid][16 bytes], or e4m3 tiles
  uint8_t ascale[kStageGroups * kTileM * 4];      // [h][128] float32 (fp32 mode) or T (half: 256 bytes per h)
  uint8_t wscale[kStageGroups * kTileN * 4];      // likewise, float32 (fp32, fp8) or T
};

// Shared memory: the stages, then the epilogue area (low-rank operands, then the staged outputs),
// then the barriers. The stages get what the epilogue area leaves: 6 (12 groups), 4 with e4m3
// weights (8 groups).
constexpr int kOutStride = kRows + 8;  // T elements per staged output row
constexpr size_t kLoraBytes = size_t(2) * kTileM * kMaxRank * 2;  // l_hi + l_lo, bf16
constexpr size_t kOutBytes = size_t(kTileM) * kOutStride * 2;
constexpr size_t kEpiBytes = kLoraBytes > kOutBytes ? kLoraBytes : kOutBytes;
// 1024 bytes for aligning the dynamic shared memory, 1024 for the barriers and the split flag.
template <bool SSW> constexpr int kStages = int((kSmemLimit - kEpiBytes - 2048) / sizeof(Stage<SSW>));
template <bool SSW>
constexpr size_t kSmemBytes =
    1024 + kStages<SSW> * sizeof(Stage<SSW>) + kEpiBytes + 2 * kStages<SSW> * sizeof(uint64_t) + 16;
static_assert(sizeof(Stage<false>) % 1024 == 0 && sizeof(Stage<true>) % 1024 == 0 && kEpiBytes % 128 == 0 &&
              kSmemBytes<false> <= kSmemLimit && kSmemBytes<true> <= kSmemLimit);

// A position in the stage ring: index and mbarrier phase parity (no division per stage).
template <bool SSW>
struct Slot {
  uint32_t s = 0, phase = 0;
  __device__ void next() {
    if (++s == kStages<SSW>) {
      s = 0;
      phase ^= 1u;
    }
  }
};

// The tiles of a CTA. Clusters of CS CTAs walk the (activation row tile, group of CS column
// tiles) pairs, n fastest (the clusters in flight share their code tiles in L2); rank r of a
// cluster takes column tile CS * group + r. Where the column tiles do not fill the last group,
// its surplus ranks compute a copy of the last column tile (the others need their share of the
// multicast code tiles) and store nothing. With split-K (GemmParams::splits, CS = 1) each pair is
// `splits` consecutive items, split s taking groups [s * split_groups, (s + 1) * split_groups).
template <int CS>
struct TileWalk {
  int64_t n_tiles = 0, n_groups = 0, total = 0;  // column tiles, groups of CS of them, items
  int64_t splits = 1, split_groups = 0;          // split_groups: even (whole stages), G without split
  struct Tile {
    int64_t ct, mt;
    bool store;
    int64_t split, groups;  // this item's split and its group count (from group split * split_groups)
  };
  // 32-bit divisions (items < 2^31, checked by the launcher): 64-bit ones are calls, whose
  // register convention cost the consumers spills.
  template <bool SPLIT>
  __device__ Tile at(int64_t i, uint32_t rank, int64_t G) const {
    const uint32_t ii = uint32_t(i), ns = SPLIT ? uint32_t(splits) : 1u, ng = uint32_t(n_groups);
    const uint32_t q = ii / ns, sp = ii - q * ns;
    const uint32_t mt = q / ng, ct = (q - mt * ng) * CS + rank;
    const int64_t g0 = int64_t(sp) * split_groups;
    return {ct < n_tiles ? int64_t(ct) : n_tiles - 1, int64_t(mt), ct < n_tiles, int64_t(sp),
            G - g0 < split_groups ? G - g0 : split_groups};
  }
  // This cluster's first pair and the stride (one cluster per CTA when CS = 1).
  __device__ static int64_t first() { return CS == 1 ? blockIdx.x : cluster_index(); }
  __device__ static int64_t stride() { return CS == 1 ? gridDim.x : cluster_count(); }
  __device__ static uint32_t rank() { return CS == 1 ? 0u : cluster_rank(); }
};

// The A registers of one m64 block for the two k32 steps of a group (e4m3, wgmma fragment order).
struct AFrag {
  uint32_t k0[4], k1[4];
};

template <bool BF16> struct Half;
template <> struct Half<true> {
  using T2 = __nv_bfloat162;
  static __device__ float to_f32(uint16_t b) { return __uint_as_float(uint32_t(b) << 16); }
  static __device__ uint16_t from_f32(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
  static __device__ T2 pack(float lo, float hi) { return __floats2bfloat162_rn(lo, hi); }
  static __device__ float2 unpack(T2 v) { return __bfloat1622float2(v); }
  static __device__ T2 zero2() { return __floats2bfloat162_rn(0.0f, 0.0f); }
  static __device__ T2 bcast(uint16_t b) { return __bfloat162bfloat162(__ushort_as_bfloat16(b)); }
};
template <> struct Half<false> {
  using T2 = __half2;
  static __device__ float to_f32(uint16_t b) { return __half2float(__ushort_as_half(b)); }
  static __device__ uint16_t from_f32(float f) { return __half_as_ushort(__float2half_rn(f)); }
  static __device__ T2 pack(float lo, float hi) { return __floats2half2_rn(lo, hi); }
  static __device__ float2 unpack(T2 v) { return __half22float2(v); }
  static __device__ T2 zero2() { return __floats2half2_rn(0.0f, 0.0f); }
  static __device__ T2 bcast(uint16_t b) { return __half2half2(__ushort_as_half(b)); }
};

// Consumer warpgroups: the main loop over the tiles of this CTA, each with its epilogue.
// SKIP (profiling only, cuda_bench's breakdown; results are wrong): bit 0 leaves out the fold,
// bit 1 the wgmma, bit 2 the loads after the first pass over the stages (the producer only
// re-arms them), bit 3 replaces the register A operand (weights expanded from int4) by shared
// memory (SS wgmma reading the code tile's rows as A: no conversion, no A registers), bit 5
// leaves out the epilogue (the main loop alone; nothing is stored), bit 6 the epilogue's global
// stores, bit 7 its staging and stores (the accumulators kept alive where they would be dead:
// ptxas drops the fold and the wgmmas whose results nothing reads). Real calls use SKIP = 0: no
// instruction but a wgmma then writes the partial-sum registers, so ptxas keeps the wgmmas
// asynchronous.
template <bool BF16, GemmMode MODE, int SKIP, int CS, bool SSW, bool SPLIT>
__device__ __forceinline__ void consume(const GemmParams& p, Stage<SSW>* stages, uint64_t* full, uint64_t* empty, uint8_t* epi,
                                        uint32_t* split_flag, const TileWalk<CS>& walk) {
  using StageT = Stage<SSW>;
  using SlotT = Slot<SSW>;
  using H = Half<BF16>;
  constexpr bool HALF_ACC = MODE == GemmMode::HALF;
  constexpr bool FP8 = MODE == GemmMode::FP8;
  constexpr int kElem = HALF_ACC ? 2 : 4;  // bytes per scale
  const int64_t G = p.K / kGroup;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wg = warp / 4, tid = threadIdx.x % 128, wq = warp % 4;
  const int t = lane % 4;
  const int rw = wq * 16 + lane / 4;  // this thread's rows rw and rw + 8 of its m64 block

  float acc[HALF_ACC ? 1 : 64] = {};
  typename H::T2 hacc[HALF_ACC ? 32 : 1] = {};
  float part0[64], part1[64];  // even groups (h = 0) in part0, odd groups (h = 1) in part1
  // wgmma descriptor of stage 0's first code tile; stage s is sizeof(StageT) / 16 further, its
  // second group kCodeTileBytes / 16.
  const uint64_t desc0 = smem_desc_sw64(stages[0].codes[0]);
  // SSW: the same for the e4m3 weight tiles (this warpgroup's 64 rows: +4096 bytes per block).
  const uint64_t wdesc0 = smem_desc_sw64(stages[0].weights[0]) + uint64_t((wg * 4096) >> 4);
  constexpr bool kRegA = !SSW && !(SKIP & 8);  // A from registers (int4 expanded here)

  // This warpgroup's A registers for the two k32 steps of group h of a stage, expanded from int4
  // to e4m3: the raw 16 bytes (loaded ahead, v8) and their expansion (after the last wgmma wait
  // before its issue: defining a wgmma's input registers across a wait makes ptxas serialize the
  // wgmmas, C7513).
  auto wraw = [&](const StageT& st, int h) {
    if constexpr (!kRegA) return uint4{};  // A from shared memory instead
    return *reinterpret_cast<const uint4*>(st.weights[h] + wg * kBlockBytes + tid * 16);
  };
  auto expand = [&](const uint4& wv) {
    AFrag a{};
    if constexpr (!kRegA) return a;
    int4x8_to_e4m3(wv.x, a.k0[0], a.k0[1]);
    int4x8_to_e4m3(wv.y, a.k0[2], a.k0[3]);
    int4x8_to_e4m3(wv.z, a.k1[0], a.k1[1]);
    int4x8_to_e4m3(wv.w, a.k1[2], a.k1[3]);
    return a;
  };
  // Issues the two wgmma k32 steps of group h of stage s into `part` (one commit group).
  auto issue = [&](float(&part)[64], const AFrag& a, uint32_t s, int h) {
    const uint64_t desc = desc0 + uint64_t(s) * (sizeof(StageT) >> 4) + uint64_t(h) * (kCodeTileBytes >> 4);
    wgmma_fence();
    if constexpr (SKIP & 2) {
      part[0] += float(a.k0[0] ^ a.k1[3]);  // keep the weight loads and conversions alive
    } else if constexpr (SSW) {
      const uint64_t adesc = wdesc0 + uint64_t(s) * (sizeof(StageT) >> 4) + uint64_t(h) * (kCodeTileBytes >> 4);
      wgmma_m64n128k32_e4m3_ss(part, adesc, desc, 0);
      wgmma_m64n128k32_e4m3_ss(part, adesc + (32 >> 4), desc + (32 >> 4), 1);
    } else if constexpr (SKIP & 8) {
      // Rows 64 wg .. 64 wg + 63 of the code tile as A (64 rows of 64 bytes: 4096 bytes each).
      const uint64_t adesc = desc + ((wg * 4096) >> 4);
      wgmma_m64n128k32_e4m3_ss(part, adesc, desc, 0);
      wgmma_m64n128k32_e4m3_ss(part, adesc + (32 >> 4), desc + (32 >> 4), 1);
    } else {
      wgmma_m64n128k32_e4m3_rs(part, a.k0, desc, 0);
      wgmma_m64n128k32_e4m3_rs(part, a.k1, desc + (32 >> 4), 1);  // k 32 .. 63: +32 bytes
    }
    wgmma_commit();
  };
  // Activation scale pair j of this thread: rows 8 j + 2 t, + 1.
  auto scale_a = [&](const auto* sa, int j) { return sa[4 * j + t]; };
  // The scales a fold needs, loaded into registers before the wait for its wgmma (v7: loaded
  // after it, their shared-memory latency, long while the tensor cores stream operands from
  // shared memory, was the largest stall of the fold). sa[j]: activation rows 8 j + 2 t, + 1.
  // Activation-scale pairs loaded early (fp32 mode only): two 64-register partial sums and 64
  // accumulators leave room for 6 of its 16 without spilling; the rest are loaded at the fold.
  // `half` measured slower with its 16 pairs early (v7: 177.8 -> 194.4 us), so it loads them all
  // at the fold; fp8 mode has none.
  constexpr int kEarly = MODE == GemmMode::FP32 ? 6 : 0;
  struct Scales {
    const uint8_t* as;  // the group's activation scales
    float2 sa[kEarly > 0 ? kEarly : 1];
    float sw0, sw1;
    typename H::T2 hw0, hw1;
  };
  auto load_scales = [&](const StageT& st, int h) {
    Scales sc;
    sc.as = st.ascale + h * kTileM * kElem;
    [[maybe_unused]] const int r0 = 64 * wg + rw;  // row in the CTA tile's scale vector
    if constexpr (HALF_ACC) {
      const uint16_t* ws = reinterpret_cast<const uint16_t*>(st.wscale + h * kTileN * kElem);
      sc.hw0 = H::bcast(ws[r0]);
      sc.hw1 = H::bcast(ws[r0 + 8]);
    } else {
      const float* ws = reinterpret_cast<const float*>(st.wscale + h * kTileN * kElem);
      sc.sw0 = ws[r0];
      sc.sw1 = ws[r0 + 8];
      if constexpr (!FP8) {
        const float2* sa = reinterpret_cast<const float2*>(sc.as);
#pragma unroll
        for (int j = 0; j < kEarly; ++j) sc.sa[j] = scale_a(sa, j);
      }
    }
    return sc;
  };
  // Folds a completed partial sum into the accumulator. part[4j + e]: weight row rw + 8 (e / 2)
  // of the block, activation row 8 j + 2 t + e % 2.
  auto fold = [&](float(&part)[64], const Scales& sc) {
    fence_regs(part);
    if constexpr (SKIP & 1) {
      if constexpr (HALF_ACC) hacc[0] = __hadd2(hacc[0], H::pack(part[0], part[63]));
      else acc[0] += part[0] + part[63];
    } else if constexpr (HALF_ACC) {
      // §4.2: acc = T_fma(T(p), T(s_a * s_w), acc). The product of two T values rounded once to
      // T is exactly T(f32(s_a) * f32(s_w)) (the float32 product is exact), so __hmul2 computes it.
      const typename H::T2* sa = reinterpret_cast<const typename H::T2*>(sc.as);
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const typename H::T2 a = scale_a(sa, j);
        hacc[2 * j] = __hfma2(H::pack(part[4 * j], part[4 * j + 1]), __hmul2(a, sc.hw0), hacc[2 * j]);
        hacc[2 * j + 1] = __hfma2(H::pack(part[4 * j + 2], part[4 * j + 3]), __hmul2(a, sc.hw1), hacc[2 * j + 1]);
      }
    } else if constexpr (FP8) {
      // §5, one-sided: acc += p * s_w (fused: allowed, wider accumulation).
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        acc[4 * j + 0] = fmaf(part[4 * j + 0], sc.sw0, acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[4 * j + 1], sc.sw0, acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[4 * j + 2], sc.sw1, acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[4 * j + 3], sc.sw1, acc[4 * j + 3]);
      }
    } else {
      // §4.1 with p * (s_a * s_w) + acc fused (allowed: wider accumulation).
      const float2* sa = reinterpret_cast<const float2*>(sc.as);
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const float2 a = j < kEarly ? sc.sa[j < kEarly ? j : 0] : scale_a(sa, j);
        acc[4 * j + 0] = fmaf(part[4 * j + 0], __fmul_rn(a.x, sc.sw0), acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[4 * j + 1], __fmul_rn(a.y, sc.sw0), acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[4 * j + 2], __fmul_rn(a.x, sc.sw1), acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[4 * j + 3], __fmul_rn(a.y, sc.sw1), acc[4 * j + 3]);
      }
    }
  };
  // Waiting for a stage to be full, and releasing it.
  auto acquire = [&](const SlotT& c) -> const StageT& {
    mbar_wait(&full[c.s], c.phase);
    return stages[c.s];
  };
  // Without clusters every consumer thread arrives (v8: one arrival per warp after __syncwarp
  // measured the same, and compute-sanitizer's racecheck cannot follow the other lanes' reads
  // through __syncwarp to the producer's copies). With clusters, one arrival per warp and CTA of
  // the cluster (DeepGEMM's scheme: the CTAs' producers multicast into every CTA's stage, so each
  // waits until all have released it); __syncwarp orders every lane's reads of the stage before
  // the arrival, and the wgmmas reading it have completed. Predicated, not branched: a branch
  // here made ptxas serialize the wgmmas.
  auto release = [&](const SlotT& c) {
    if constexpr (CS == 1) {
      mbar_arrive(&empty[c.s]);
    } else {
      __syncwarp();
      mbar_arrive_cluster_if(lane < CS, &empty[c.s], uint32_t(lane % CS));
    }
  };

  // Profiling variants that store nothing read the accumulators here instead (a condition no
  // value meets), or ptxas drops the fold and the wgmmas whose results nothing reads.
  [[maybe_unused]] auto keep_alive = [&]() {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < (HALF_ACC ? 1 : 64); ++i) v += acc[i];
    if (v == 1.2345e-38f) p.y[threadIdx.x] = 0;
  };

  SlotT slot;  // the stage of the next group pair (the producer walks the ring the same way)
  const uint32_t rank = TileWalk<CS>::rank();
  for (int64_t i = TileWalk<CS>::first(); i < walk.total; i += TileWalk<CS>::stride()) {
    const auto tl = walk.template at<SPLIT>(i, rank, G);
    const int64_t ct = tl.ct, mt = tl.mt, Gi = tl.groups;  // Gi: the groups of this item
    if constexpr (HALF_ACC) {
#pragma unroll
      for (int i = 0; i < 32; ++i) hacc[i] = H::zero2();
    } else {
#pragma unroll
      for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    }
    // Group g = 2 j + h is group h of the tile's stage j: even groups in part0, odd groups in
    // part1; group g + 1's wgmma runs while group g is folded. The weights of a group are loaded
    // from shared memory one fold ahead (kAhead, v8: their latency overlaps the wait for the
    // wgmma; fp8 GEMM 140.4 -> 136.7 us, half 174.4 -> 163.6); not in fp32 mode, whose registers
    // then no longer hold its 6 early scale pairs (with 4: 177.8 -> 185.2 us).
    constexpr bool kAhead = MODE != GemmMode::FP32;
    SlotT c = slot;
    const StageT* s = &acquire(c);
    issue(part0, expand(wraw(*s, 0)), c.s, 0);
    uint4 w1 = wraw(*s, 1);  // read also where K / 64 is odd (then unused)
    int64_t g = 0;
    for (; g + 2 < Gi; g += 2) {  // on entry group g (h = 0 of stage c) is in flight in part0
      issue(part1, expand(w1), c.s, 1);
      SlotT n = c;
      n.next();
      const StageT* sn = &acquire(n);
      const uint4 w0 = kAhead ? wraw(*sn, 0) : uint4{};
      const Scales sc0 = load_scales(*s, 0);
      wgmma_wait<1>();
      fold(part0, sc0);
      issue(part0, expand(kAhead ? w0 : wraw(*sn, 0)), n.s, 0);
      if constexpr (kAhead) w1 = wraw(*sn, 1);
      const Scales sc1 = load_scales(*s, 1);
      wgmma_wait<1>();
      fold(part1, sc1);
      if constexpr (!kAhead) w1 = wraw(*sn, 1);
      release(c);
      c = n;
      s = sn;
    }
    if (g + 1 < Gi) {  // groups g and g + 1 left, both in stage c
      issue(part1, expand(w1), c.s, 1);
      const Scales sc0 = load_scales(*s, 0);
      wgmma_wait<1>();
      fold(part0, sc0);
      const Scales sc1 = load_scales(*s, 1);
      wgmma_wait<0>();
      fold(part1, sc1);
    } else {  // group g alone (K / 64 odd)
      const Scales sc0 = load_scales(*s, 0);
      wgmma_wait<0>();
      fold(part0, sc0);
    }
    release(c);
    slot = c;
    slot.next();
    if constexpr ((SKIP & 32) != 0) {  // profiling: no epilogue (nothing stored)
      keep_alive();
      continue;
    }

    // Split-K: this item's accumulators go to split_ws ([tile][split][16][256] float4, coalesced);
    // the tile's last item to finish (integer ticket) adds every split's in split order (its own
    // read back too: the same order whichever CTA is last) and runs the epilogue; the others are
    // done with the tile. The CUDA threadFenceReduction pattern: stores, fence, ticket.
    if constexpr (SPLIT) {  // FP32 / FP8, CS = 1, int4 fragments (launch_cluster)
      const int64_t tile = mt * walk.n_tiles + ct, sp = tl.split;
      float4* ws = reinterpret_cast<float4*>(p.split_ws) + (tile * walk.splits + sp) * 16 * kConsumerThreads + threadIdx.x;
#pragma unroll
      for (int v = 0; v < 16; ++v)
        __stcg(ws + v * kConsumerThreads, make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]));
      __threadfence();
      named_barrier(1, kConsumerThreads);
      if (threadIdx.x == 0) {
        const bool last = atomicAdd(&p.split_tickets[tile], 1u) == unsigned(walk.splits - 1);
        if (last) p.split_tickets[tile] = 0u;  // every split of the tile has taken its ticket
        *split_flag = last ? 1u : 0u;
      }
      named_barrier(1, kConsumerThreads);
      if (*split_flag == 0u) continue;  // uniform over the consumers
      __threadfence();
      const float4* src = reinterpret_cast<const float4*>(p.split_ws) + tile * walk.splits * 16 * kConsumerThreads + threadIdx.x;
      for (int64_t q = 0; q < walk.splits; ++q) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // 8 loads in flight at a time (registers)
          float4 v4[8];
#pragma unroll
          for (int v = 0; v < 8; ++v) v4[v] = __ldcg(src + (q * 16 + 8 * h + v) * kConsumerThreads);
#pragma unroll
          for (int v = 0; v < 8; ++v) {
            float* a = &acc[4 * (8 * h + v)];
            if (q == 0) a[0] = v4[v].x, a[1] = v4[v].y, a[2] = v4[v].z, a[3] = v4[v].w;
            else a[0] += v4[v].x, a[1] += v4[v].y, a[2] += v4[v].z, a[3] += v4[v].w;
          }
        }
      }
    }

    // Epilogue. part0 := u = lora_act · proj_upᵀ on the tensor cores (v5; on the CUDA cores it
    // cost ~20% of the GEMM), one m64 block at a time: bf16 wgmma m64n128k16, A = proj_up rows
    // from registers, B = lora_act from shared memory split into bf16 hi + lo (l = hi + lo to
    // ~2^-17 relative), products exact in float32. proj_up is exactly bf16 for bf16 layers; for
    // fp16 layers it is split the same way (exactly: an fp16 value is the sum of two bf16 values)
    // and up_lo · l_lo (~2^-17) dropped. Ranks are padded with zeros to Rk, a multiple of 16 (at
    // least 16, so that even R = 0 writes them through a wgmma only: any other write inside the
    // pipeline serializes it, C7515). The final values (before rounding to T) replace the
    // accumulators, which are then staged transposed in the same shared-memory area.
    const int64_t n_cta = ct * kRows;  // first output column of the tile (< Npad: padded vectors)
    const int Rpad = p.Rpad, Rk = Rpad <= 16 ? 16 : (Rpad + 15) / 16 * 16;
    // l_hi then l_lo, each [Rk / 8][128 m][8 r] bf16 (wgmma's K-major no-swizzle core matrices).
    uint8_t* lhi = epi;
    uint8_t* llo = epi + kTileM * Rk * 2;
    const int q4 = Rk / 4;  // 4-rank pieces per row
    // The epilogue's global loads, all issued here, before its first barrier, so that their L2
    // round trips overlap each other and the wait for the other warpgroup (v15: issued where each
    // is used, they were ~4 dependent round trips per tile): lact's first four float4 pieces per
    // thread (one dependent round trip per 4 pieces instead of per piece: the epilogue's global
    // loads showed as the GEMM's long-scoreboard stalls, v6), wcscales, bias, the row scales (fp8)
    // and proj_up's first two k16 steps.
    auto lact_load = [&](int i0, float4 (&v)[4]) {
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int i = i0 + u * kConsumerThreads, m = i / q4, r = (i % q4) * 4;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < kTileM * q4 && r < Rpad) v[u] = *reinterpret_cast<const float4*>(&p.lact[(mt * kTileM + m) * Rpad + r]);
      }
    };
    // A fragments (mma.m16n8k16 order per warp): a0 (row rw, k 2t, 2t+1), a1 (row rw + 8, same k),
    // a2 (row rw, k 2t+8, 2t+9), a3 (row rw + 8, k 2t+8, 2t+9).
    // proj_up values of one k16 step for rows n0, n1 (8 floats: ranks k0, k0 + 1, k0 + 8, k0 + 9),
    // loaded for two steps before either is used (one round trip per two steps).
    struct UpVals { float v[8]; };
    auto up_load = [&](int64_t n0, int64_t n1, int k0) {
      UpVals u;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int64_t n = (i / 2) % 2 ? n1 : n0;
        const int k = k0 + (i / 4) * 8 + i % 2;
        u.v[i] = k < Rpad ? __ldg(&p.proj_up[n * Rpad + k]) : 0.0f;
      }
      return u;
    };
    // Only where the consumers hold no A fragments (e4m3 weights from shared memory): with the
    // int4 register path's registers these loads in flight made ptxas spill 30-150 bytes, so
    // there each is issued where it is used, as before.
    constexpr bool kEarly = SSW;
    const int64_t n0 = n_cta + 64 * wg + rw, n1 = n0 + 8;
    float wc0 = 0.0f, wc1 = 0.0f, b0 = 0.0f, b1 = 0.0f;
    auto load_wcb = [&]() {
      wc0 = p.wcscales[n0], wc1 = p.wcscales[n1];
      b0 = p.bias[n0], b1 = p.bias[n1];
    };
    auto load_rs = [&](int j) {
      return FP8 ? __ldg(reinterpret_cast<const float2*>(p.row_scale + mt * kTileM + 8 * j + 2 * t)) : make_float2(1.0f, 1.0f);
    };
    float4 lv[4];
    float2 rsv[kEarly && FP8 ? 16 : 1];
    UpVals up0{}, up1{};
    if constexpr (kEarly) {
      lact_load(threadIdx.x, lv);
      load_wcb();
#pragma unroll
      for (int j = 0; j < (FP8 ? 16 : 1); ++j) rsv[j] = load_rs(j);
      up0 = up_load(n0, n1, 2 * t);
      up1 = up_load(n0, n1, Rk / 16 > 1 ? 16 + 2 * t : Rpad);  // Rpad: zeros, no loads
    }
    named_barrier(1, kConsumerThreads);  // the previous tile's stores have read the staged outputs
    for (int i0 = threadIdx.x; i0 < kTileM * q4; i0 += 4 * kConsumerThreads) {
      float4 v[4];
      if (kEarly && i0 == int(threadIdx.x)) {
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = lv[u];
      } else {
        lact_load(i0, v);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int i = i0 + u * kConsumerThreads, m = i / q4, r = (i % q4) * 4;
        if (i >= kTileM * q4) break;
        const float f[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
        uint16_t hi[4], lo[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const Bf16Split sp = bf16_split(f[e]);
          hi[e] = sp.hi;
          lo[e] = sp.lo;
        }
        const int off = (r / 8) * (kTileM * 16) + (m / 8) * 128 + (m % 8) * 16 + (r % 8) * 2;
        *reinterpret_cast<uint2*>(lhi + off) = make_uint2(hi[0] | uint32_t(hi[1]) << 16, hi[2] | uint32_t(hi[3]) << 16);
        *reinterpret_cast<uint2*>(llo + off) = make_uint2(lo[0] | uint32_t(lo[1]) << 16, lo[2] | uint32_t(lo[3]) << 16);
      }
    }
    fence_proxy_async();  // generic-proxy stores, read next by the wgmma (async proxy)
    named_barrier(1, kConsumerThreads);
    // Register a(r) (r = 0..3: (n0, k0), (n1, k0), (n0, k0 + 8), (n1, k0 + 8)) of the hi or lo part.
    auto up_reg = [&](const UpVals& u, int r, bool low) -> uint32_t {
      uint32_t bits[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const Bf16Split sp = bf16_split(u.v[(r / 2) * 4 + (r % 2) * 2 + e]);
        bits[e] = low ? sp.lo : sp.hi;
      }
      return bits[0] | bits[1] << 16;
    };
    auto finish = [&]() {
      if constexpr (!kEarly) load_wcb();  // first: their loads overlap the low-rank steps
      // One k16 step at a time, completed before the next step's A registers are computed: the
      // wgmma reads its register operand asynchronously (v5's first form, with all steps in
      // flight, gave wrong results in some instantiations).
      auto step = [&](const UpVals& cur, int kk) {
        const uint32_t ahi[4] = {up_reg(cur, 0, false), up_reg(cur, 1, false), up_reg(cur, 2, false), up_reg(cur, 3, false)};
        [[maybe_unused]] uint32_t alo[4] = {0u, 0u, 0u, 0u};
        if constexpr (!BF16) {
#pragma unroll
          for (int r = 0; r < 4; ++r) alo[r] = up_reg(cur, r, true);
        }
        const uint64_t dhi = smem_desc(lhi + kk * 2 * (kTileM * 16), kTileM * 16, 128);
        const uint64_t dlo = smem_desc(llo + kk * 2 * (kTileM * 16), kTileM * 16, 128);
        wgmma_fence();
        wgmma_m64n128k16_bf16_rs(part0, ahi, dhi, kk > 0 ? 1u : 0u);
        wgmma_m64n128k16_bf16_rs(part0, ahi, dlo, 1u);
        if constexpr (!BF16) wgmma_m64n128k16_bf16_rs(part0, alo, dhi, 1u);
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(part0);
      };
      for (int kk = 0; kk < Rk / 16; kk += 2) {
        const bool two = kk + 1 < Rk / 16;
        const UpVals u0 = kEarly && kk == 0 ? up0 : up_load(n0, n1, 16 * kk + 2 * t);
        const UpVals u1 = kEarly && kk == 0 ? up1 : up_load(n0, n1, two ? 16 * (kk + 1) + 2 * t : Rpad);  // Rpad: zeros, no loads
        step(u0, kk);
        if (two) step(u1, kk + 1);
      }
      fence_regs(part0);
      // u of activation row 8 J + 2 t + e % 2: element 4 J + e of part0.
      auto up = [&](int J, int e) -> float { return part0[4 * J + e]; };
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        float2 rs;
        if constexpr (kEarly && FP8) rs = rsv[j];
        else rs = load_rs(j);
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if constexpr (HALF_ACC) {
            const float2 hv = H::unpack(hacc[2 * j + e / 2]);
            v[e] = (e % 2) ? hv.y : hv.x;
          } else {
            v[e] = acc[4 * j + e];
          }
          if constexpr (FP8) v[e] = __fmul_rn(v[e], (e % 2) ? rs.y : rs.x);  // §5: (acc * s_row) * alpha
          v[e] = __fmul_rn(v[e], p.alpha);
          v[e] = __fadd_rn(__fmul_rn(v[e], e < 2 ? wc0 : wc1), e < 2 ? b0 : b1);
          v[e] = __fadd_rn(v[e], up(j, e));
        }
        if constexpr (HALF_ACC) {
          hacc[2 * j] = H::pack(v[0], v[1]);  // the output values, rounded to T
          hacc[2 * j + 1] = H::pack(v[2], v[3]);
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[4 * j + e] = v[e];
        }
      }
    };
    finish();
    if constexpr ((SKIP & 128) != 0) {  // profiling: no staging, no stores
      keep_alive();
      continue;
    }

    // Staged transposed ([m][n]) for row-contiguous stores of y.
    uint16_t* out = reinterpret_cast<uint16_t*>(epi);
    named_barrier(1, kConsumerThreads);  // every warpgroup's low-rank wgmmas have read lhi / llo
    auto stage_out = [&]() {
      const int c0 = 64 * wg + rw;
#pragma unroll
      for (int j = 0; j < 16; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          uint16_t bits;
          if constexpr (HALF_ACC) {
            const uint32_t w2 = reinterpret_cast<const uint32_t&>(hacc[2 * j + e / 2]);
            bits = uint16_t((e % 2) ? w2 >> 16 : w2 & 0xFFFFu);
          } else {
            bits = H::from_f32(acc[4 * j + e]);
          }
          out[(8 * j + 2 * t + (e % 2)) * kOutStride + c0 + 8 * (e / 2)] = bits;
        }
    };
    stage_out();
    named_barrier(1, kConsumerThreads);
    const int64_t m_base = mt * kTileM;
    const int rows = (SKIP & 64) != 0 || !tl.store ? 0 : p.M - m_base < kTileM ? int(p.M - m_base) : kTileM;
    const int cols = p.N - n_cta < kRows ? int(p.N - n_cta) : kRows;
    if (cols == kRows && p.N % 8 == 0) {
      constexpr int kVecs = kRows / 8;  // 16-byte stores per output row
      for (int i = threadIdx.x; i < rows * kVecs; i += kConsumerThreads) {
        const int r = i / kVecs, c = (i % kVecs) * 8;
        *reinterpret_cast<uint4*>(p.y + (m_base + r) * p.N + n_cta + c) =
            *reinterpret_cast<const uint4*>(out + r * kOutStride + c);
      }
    } else {
      for (int i = threadIdx.x; i < rows * kRows; i += kConsumerThreads) {
        const int r = i / kRows, c = i % kRows;
        if (c < cols) p.y[(m_base + r) * p.N + n_cta + c] = out[r * kOutStride + c];
      }
    }
  }
}


template <bool BF16, GemmMode MODE, int SKIP, int CS, bool SSW, bool SPLIT>
__global__ void __launch_bounds__(kThreads, 1) w4a4_gemm_kernel(const GemmParams p, const TileWalk<CS> walk) {
  constexpr int kS = kStages<SSW>;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);  // Stage alignment
  auto* stages = reinterpret_cast<Stage<SSW>*>(smem);
  uint8_t* epi = smem + kS * sizeof(Stage<SSW>);
  uint64_t* full = reinterpret_cast<uint64_t*>(epi + kEpiBytes);
  uint64_t* empty = full + kS;
  uint32_t* split_flag = reinterpret_cast<uint32_t*>(empty + kS);  // the consumers' split-K broadcast

  const int64_t G = p.K / kGroup;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr bool FP8 = MODE == GemmMode::FP8;
  constexpr uint32_t kElem = MODE == GemmMode::HALF ? 2 : 4;  // bytes per scale
  constexpr uint32_t kAScaleBytes = FP8 ? 0 : kElem * kTileM;  // FP8: row scales in the epilogue instead
  // Bytes landing in a stage per group, whichever CTA's producer copies them.
  constexpr uint32_t kWBytes = Stage<SSW>::kWeightBytes;
  constexpr uint32_t kGroupTxBytes = kCodeTileBytes + kWBytes + kElem * kTileN + kAScaleBytes;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kS; ++s) {
      mbar_init(&full[s], 1);                             // the producer's arrive_expect_tx
      // Every consumer thread, or with clusters every consumer warp of the cluster.
      mbar_init(&empty[s], CS == 1 ? kConsumerThreads : CS * kConsumerThreads / 32);
    }
    mbar_init_fence();
  }
  // No CTA multicasts into another's stages, or arrives on its barriers, before they exist.
  if constexpr (CS == 1) __syncthreads();
  else cluster_sync();
  // Launched with PDL (pdl.hpp): the prologue above overlaps the previous kernel's tail; no
  // global access before it is done.
  pdl_wait();
  pdl_launch_dependents();

  if (warp >= kConsumerThreads / 32) {
    // Producer warpgroup: gives registers away; its first thread feeds the stages, running ahead
    // across tile boundaries.
    setmaxnreg_dec<24>();
    if (warp == kConsumerThreads / 32 && lane == 0) {
      const uint8_t* asc = static_cast<const uint8_t*>(p.ascale);
      const uint8_t* wsc = static_cast<const uint8_t*>(p.wscale);
      const uint32_t rank = TileWalk<CS>::rank();
      // The code tiles and the activation scales: this CTA's 1 / CS of them, to every CTA.
      auto shared_copy = [&](uint8_t* dst, const uint8_t* src, uint32_t bytes, uint64_t* bar) {
        if constexpr (CS == 1) {
          bulk_copy_g2s(dst, src, bytes, bar);
        } else {
          const uint32_t part = bytes / CS, off = rank * part;
          bulk_copy_g2s_multicast(dst + off, src + off, part, bar, uint16_t((1u << CS) - 1));
        }
      };
      Slot<SSW> slot;
      bool first_pass = true;
      for (int64_t i = TileWalk<CS>::first(); i < walk.total; i += TileWalk<CS>::stride()) {
        const auto tl = walk.template at<SPLIT>(i, rank, G);
        const int64_t ct = tl.ct, mt = tl.mt, g0 = tl.split * walk.split_groups, g_end = g0 + tl.groups;
        for (int64_t g = g0; g < g_end; g += kStageGroups) {
          const uint32_t ng = g_end - g < kStageGroups ? uint32_t(g_end - g) : uint32_t(kStageGroups);  // groups in this stage
          if (!first_pass) mbar_wait(&empty[slot.s], slot.phase ^ 1u);
          Stage<SSW>& st = stages[slot.s];
          const bool refill = !(SKIP & 4) || first_pass;  // profiling: filled once, then re-armed
          if (refill) {
            // Everything that lands in this CTA's stage (a peer's multicast share may complete
            // before this expect_tx: the transaction count goes negative meanwhile, and the phase
            // cannot complete without this arrival).
            mbar_arrive_expect_tx(&full[slot.s], ng * kGroupTxBytes);
            // Groups g and g + 1 are adjacent in every layout: one copy per array.
            shared_copy(st.codes[0], p.codes + (mt * G + g) * kCodeTileBytes, ng * kCodeTileBytes, &full[slot.s]);
            const uint8_t* wsrc = SSW ? p.wexp : p.wfrag;
            bulk_copy_g2s(st.weights[0], wsrc + (ct * G + g) * kWBytes, ng * kWBytes, &full[slot.s]);
            bulk_copy_g2s(st.wscale, wsc + (ct * G + g) * kTileN * kElem, ng * kTileN * kElem, &full[slot.s]);
            if constexpr (!FP8)
              shared_copy(st.ascale, asc + (mt * G + g) * kTileM * kElem, ng * kAScaleBytes, &full[slot.s]);
          } else {
            mbar_arrive(&full[slot.s]);
          }
          slot.next();
          if (slot.s == 0) first_pass = false;
        }
      }
    }
  } else {
    setmaxnreg_inc<kConsumerRegs>();
    consume<BF16, MODE, SKIP, CS, SSW, SPLIT>(p, stages, full, empty, epi, split_flag, walk);
  }
  // No CTA leaves while a peer may still arrive on its barriers.
  if constexpr (CS > 1) cluster_sync();
}

// Groups per split: whole stages (an even count), and no split left empty.
int64_t split_groups(int64_t G, int splits) {
  return splits <= 1 ? G : round_up(ceil_div(G, int64_t(splits)), int64_t(kStageGroups));
}

// The most clusters of CS CTAs of `kernel` resident at once on this device (cached per device).
template <int CS, typename Kernel>
int max_clusters(Kernel kernel, const cudaLaunchConfig_t& cfg, int sms) {
  if constexpr (CS == 1) {
    return sms;
  } else {
    static std::atomic<int> cache[64];
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    if (dev < 64 && cache[dev].load() > 0) return cache[dev].load();
    int n = 0;
    check(cudaOccupancyMaxActiveClusters(&n, kernel, &cfg), "cudaOccupancyMaxActiveClusters(w4a4_gemm_kernel)");
    if (n <= 0) throw UnsupportedError("cuda-sm90: no cluster of " + std::to_string(CS) + " GEMM CTAs fits this GPU");
    if (dev < 64) cache[dev].store(n);
    return n;
  }
}

template <bool BF16, GemmMode MODE, int SKIP, int CS, bool SSW = false, bool SPLIT = false>
void launch_typed(const GemmParams& p, cudaStream_t stream) {
  auto kernel = w4a4_gemm_kernel<BF16, MODE, SKIP, CS, SSW, SPLIT>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemBytes<SSW>)),
        "cudaFuncSetAttribute(w4a4_gemm_kernel)");
  TileWalk<CS> walk;
  walk.n_tiles = ceil_div(p.N, kRows);
  walk.n_groups = ceil_div(walk.n_tiles, int64_t(CS));
  walk.splits = SPLIT ? p.splits : 1;
  walk.split_groups = split_groups(p.K / kGroup, int(walk.splits));
  walk.total = walk.n_groups * ceil_div(p.M, kTileM) * walk.splits;
  if (walk.total >= (int64_t(1) << 31)) throw UnsupportedError("cuda-sm90: GEMM of more than 2^31 tiles");
  cudaLaunchAttribute attr[2];
  attr[0] = pdl_attribute();
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = CS;
  attr[1].val.clusterDim.y = 1;
  attr[1].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kSmemBytes<SSW>;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = CS > 1 ? 2 : 1;
  cfg.gridDim = dim3(CS);  // for the occupancy query
  const int64_t clusters = std::min<int64_t>(walk.total, max_clusters<CS>(kernel, cfg, sm_count()));
  cfg.gridDim = dim3(unsigned(clusters * CS));
  check(cudaLaunchKernelEx(&cfg, kernel, p, walk), "cudaLaunchKernelEx(w4a4_gemm_kernel)");
  check_launch("w4a4_gemm_kernel");
}

// No cluster unless asked (v8: clusters of 2 and 4 measured slower; revisited with each
// measurement, docs/perf-notes.md).
template <bool BF16, GemmMode MODE, int SKIP>
void launch_cluster(const GemmParams& p, cudaStream_t stream) {
  if (p.wexp != nullptr) {  // e4m3 weights from shared memory: clusters of 1; real calls and profiling variants
    if (p.cluster > 1) throw UnsupportedError("cuda-sm90: the GEMM with e4m3 weights runs without clusters");
    if constexpr (SKIP == 0 || SKIP == 11 || SKIP == 32 || SKIP == 43 || SKIP == 64 || SKIP == 128)
      return launch_typed<BF16, MODE, SKIP, 1, true>(p, stream);
    throw UnsupportedError("cuda-sm90: GEMM profiling variants with e4m3 weights: 0, 11, 32, 43, 64 and 128 only");
  }
  switch (p.cluster) {
    case 0:
    case 1:
      // Split-K: its own instantiation (the non-split kernels keep their registers, v11).
      if constexpr (SKIP == 0 && MODE != GemmMode::HALF)
        if (p.splits > 1) return launch_typed<BF16, MODE, SKIP, 1, false, true>(p, stream);
      return launch_typed<BF16, MODE, SKIP, 1>(p, stream);
    case 2: return launch_typed<BF16, MODE, SKIP, 2>(p, stream);
    case 4:
      if constexpr (SKIP == 0) return launch_typed<BF16, MODE, SKIP, 4>(p, stream);  // compile time: real calls only
      throw UnsupportedError("cuda-sm90: GEMM profiling variants exist for clusters of 1 and 2 only");
    default: throw UnsupportedError("cuda-sm90: GEMM cluster size must be 1, 2 or 4");
  }
}

template <GemmMode MODE>
void launch_profile(const GemmParams& p, cudaStream_t stream) {
  switch (p.profile_skip) {
    case 1: return launch_cluster<true, MODE, 1>(p, stream);
    case 4: return launch_cluster<true, MODE, 4>(p, stream);
    case 5: return launch_cluster<true, MODE, 5>(p, stream);
    case 8: return launch_cluster<true, MODE, 8>(p, stream);
    case 11: return launch_cluster<true, MODE, 11>(p, stream);
    case 32:
    case 43:
    case 64:
    case 128:
      if constexpr (MODE == GemmMode::FP8) {
        if (p.wexp == nullptr) throw UnsupportedError("cuda-sm90: GEMM profiling variants 32, 43, 64, 128 exist with e4m3 weights only");
        switch (p.profile_skip) {
          case 32: return launch_cluster<true, MODE, 32>(p, stream);
          case 43: return launch_cluster<true, MODE, 43>(p, stream);
          case 64: return launch_cluster<true, MODE, 64>(p, stream);
          default: return launch_cluster<true, MODE, 128>(p, stream);
        }
      }
      throw UnsupportedError("cuda-sm90: GEMM profiling variants 32, 43, 64, 128 exist in fp8 mode only");
    default: throw UnsupportedError("cuda-sm90: GEMM profile_skip must be 0, 1, 4, 5, 8, 11, 32, 43, 64 or 128");
  }
}

}  // namespace

int64_t gemm_split_tiles(int64_t M, int64_t N) { return ceil_div(M, int64_t(kTileM)) * ceil_div(N, int64_t(kRows)); }

int64_t gemm_split_ws_floats(int64_t M, int64_t N, int splits) {
  return splits <= 1 ? 0 : gemm_split_tiles(M, N) * splits * 64 * kConsumerThreads;
}

// The persistent CTAs take ceil(items / SMs) rounds of G / S groups each, and an item of a split
// costs about 16 groups more (its partial sums' round trip through L2, the ticket, the last
// item's reads: fitted to run 5 of perf-notes v11, where S = 2 at 192 tiles of 48 groups lost
// 8 us). Splits exist only for at most two waves of tiles and at least 4 groups per split.
int gemm_splits(int64_t M, int64_t N, int64_t K, int sms) {
  const int64_t tiles = gemm_split_tiles(M, N), G = K / kGroup;
  if (sms <= 0 || tiles > 2 * int64_t(sms)) return 1;
  int best = 1;
  int64_t best_cost = ceil_div(tiles, int64_t(sms)) * G;
  for (int s = 2; s <= 4; ++s) {
    const int64_t sg = split_groups(G, s);
    if (sg < 4 || (s - 1) * sg >= G) break;
    const int64_t cost = ceil_div(tiles * s, int64_t(sms)) * (sg + 16);
    if (cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

void launch_w4a4_gemm(const GemmParams& p, cudaStream_t stream) {
  if (p.M == 0) return;
  if (p.splits > 1) {
    const int64_t G = p.K / kGroup;
    if (p.mode == GemmMode::HALF || p.cluster > 1 || p.wexp != nullptr || p.profile_skip != 0)
      throw UnsupportedError("cuda-sm90: split-K GEMM exists for fp32 and fp8 accumulation on the register path only");
    if (p.split_ws == nullptr || p.split_tickets == nullptr)
      throw std::invalid_argument("cuda-sm90: split-K GEMM without its workspace");
    if (p.splits > 4 || (p.splits - 1) * split_groups(G, p.splits) >= G)
      throw std::invalid_argument("cuda-sm90: split-K GEMM: " + std::to_string(p.splits) + " splits of " +
                                  std::to_string(G) + " groups leave one empty");
  }
  if (p.profile_skip != 0) {  // profiling variants: bf16, fp32 or fp8 mode
    if (p.dtype != HalfType::BF16 || p.mode == GemmMode::HALF)
      throw UnsupportedError("cuda-sm90: GEMM profiling variants exist for bf16 in fp32 and fp8 mode only");
    return p.mode == GemmMode::FP8 ? launch_profile<GemmMode::FP8>(p, stream) : launch_profile<GemmMode::FP32>(p, stream);
  }
  const bool bf16 = p.dtype == HalfType::BF16;
  switch (p.mode) {
    case GemmMode::FP32: bf16 ? launch_cluster<true, GemmMode::FP32, 0>(p, stream) : launch_cluster<false, GemmMode::FP32, 0>(p, stream); break;
    case GemmMode::HALF: bf16 ? launch_cluster<true, GemmMode::HALF, 0>(p, stream) : launch_cluster<false, GemmMode::HALF, 0>(p, stream); break;
    case GemmMode::FP8: bf16 ? launch_cluster<true, GemmMode::FP8, 0>(p, stream) : launch_cluster<false, GemmMode::FP8, 0>(p, stream); break;
  }
}

}  // namespace svdquant::cuda
