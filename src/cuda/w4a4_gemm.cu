// The W4A4 GEMM of the cuda-sm90 backend (NUMERICS.md §4) with its epilogue (§4.3), and the
// same GEMM for fp8 activations (§5).
//
// Three group accumulations (GemmMode): §4.1 (FP32) and §4.2 (HALF) with two-sided scales; §5
// (FP8: e4m3 activations with one float32 scale per row, so the fold is one-sided, acc += p * s_w,
// and the row scale is applied in the epilogue).
//
// One CTA computes a 128 (n) x 128 (m) tile of y^T: the weight rows are wgmma's M side (A from
// registers: the 4-bit weights are expanded to e4m3 in registers, so they stay 4-bit in memory and
// in shared memory) and the activation rows are wgmma's N side (B, e4m3 codes in shared memory).
// int4 values are exact in e4m3 and every product and group sum (|p| <= 7680) is exact in the
// float32 accumulators, so each group's wgmma result is the exact integer p[g] of §4.
//
// Warp roles: warps 0-7 are two consumer warpgroups (64 weight rows each); warps 8-11 are the
// producer warpgroup, which fills a ring of shared-memory stages with, per group, the activation
// code tile (8 KB), the weight tile (4 KB) and the scale vectors, completing on "full" mbarriers;
// every consumer thread releases a stage on its "empty" mbarrier. Feeds (GemmFeed; the default is
// the fastest measured, docs/perf-notes.md v4): 1-D bulk copies issued by one producer thread;
// the same in clusters of two CTAs, neighbours in n with the same activation rows, each loading
// one k-half of their common code tile and multicasting it to both (a stage is then refilled
// only once the consumers of both CTAs released it: one remote arrive per consumer warp); or
// 16-byte cp.async by all 128 producer threads.
// Per group each consumer runs two wgmma k32 steps into a partial-sum buffer and then folds it
// into its accumulator with the two-sided scale: §4.1 (float32, fma) or §4.2 (T, one T_fma per
// group in group order via __hfma2, bitwise the CPU `half` mode). Two partial-sum buffers let
// group g + 1's wgmma run while group g is folded.
// Epilogue: ·alpha, ·wcscales + bias (two float32 operations, §4.3), + lora_act · proj_upᵀ
// (bf16 wgmma of split operands, see consume()), rounded to T and stored with bounds checks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_check.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "sm90_primitives.cuh"

namespace svdquant::cuda {
namespace {

using namespace sm90;

constexpr int kStages = 12;  // 12 x 13 KB: deeper than needed (5 -> 12 gained 2%, docs/perf-notes.md v3)
constexpr int kConsumerWarps = 8;
constexpr int kConsumerThreads = kConsumerWarps * 32;
constexpr int kProducerThreads = 128;  // one producer warpgroup (setmaxnreg needs whole warpgroups)
constexpr int kThreads = kConsumerThreads + kProducerThreads;

struct __align__(128) Stage {
  uint8_t codes[kCodeTileBytes];      // activation codes, wgmma no-swizzle K-major layout
  uint8_t weights[kWeightTileBytes];  // weight fragments [wg][tid][16 bytes]
  uint32_t ascale[kTileM];            // float32 (fp32 mode) or T in the low half of the array
  uint32_t wscale[kTileN];
};
static_assert(sizeof(Stage) % 128 == 0);
constexpr size_t kSmemBytes = kStages * sizeof(Stage) + 2 * kStages * sizeof(uint64_t);
static_assert(2 * kTileM * kMaxRank * 2 <= kStages * sizeof(Stage));  // lora_act hi + lo, bf16
constexpr int kOutStride = kTileN + 8;  // T elements per staged output row
static_assert(kTileM * kOutStride * 2 <= kStages * sizeof(Stage));

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

// Four int4 codes (the nibbles of the low 16 bits of w, two's complement) -> four e4m3 bytes.
__device__ __forceinline__ uint32_t int4x4_to_e4m3(uint32_t w) {
  const uint32_t sel = w & 0x7777u;
  const uint32_t pos = __byte_perm(0x44403800u, 0x4E4C4A48u, sel);  // 0 .. 7
  const uint32_t neg = __byte_perm(0xCACCCED0u, 0xB8C0C4C8u, sel);  // -8 .. -1
  return __byte_perm(pos, neg, 0x3210u | ((w >> 1) & 0x4444u));     // sign bit picks neg
}

// Consumer warpgroups: per group two wgmma k32 steps into a partial-sum buffer, then the fold of
// the exact group sums into the accumulator; finally the epilogue.
// SKIP (profiling only, cuda_bench's breakdown; results are wrong): bit 0 leaves out the fold,
// bit 1 the wgmma. Real calls use SKIP = 0: no instruction but a wgmma then writes the partial-sum
// registers, so ptxas keeps the wgmmas asynchronous (with the profiling branches in the same
// kernel it serialized them, warning C7515).
template <bool BF16, GemmMode MODE, int SKIP, GemmFeed FEED>
__device__ __forceinline__ void consume(const GemmParams& p, Stage* stages, uint64_t* full, uint64_t* empty,
                                        uint32_t rank, uint8_t* smem) {
  using H = Half<BF16>;
  constexpr bool HALF_ACC = MODE == GemmMode::HALF;
  constexpr bool FP8 = MODE == GemmMode::FP8;
  constexpr int CLUSTER = FEED == GemmFeed::BULK_CLUSTER2 ? 2 : 1;
  const int64_t nt = blockIdx.x, mt = blockIdx.y;
  const int64_t G = p.K / kGroup;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wg = warp / 4, tid = threadIdx.x % 128, wq = warp % 4;
  const int t = lane % 4;
  const int row0 = wg * 64 + wq * 16 + lane / 4;  // local weight rows row0 and row0 + 8

  float acc[HALF_ACC ? 1 : 64];
  typename H::T2 hacc[HALF_ACC ? 32 : 1];
  if constexpr (HALF_ACC) {
#pragma unroll
    for (int i = 0; i < 32; ++i) hacc[i] = H::zero2();
  } else {
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  }

  // Issues group g's two wgmma k32 steps into `part` (asynchronous; committed as one group).
  auto issue = [&](float(&part)[64], int64_t g) {
    const int s = int(g % kStages);
    mbar_wait(&full[s], uint32_t((g / kStages) & 1));
    // cp.async wrote the stage through the generic proxy; the wgmma reads it through the async one.
    if constexpr (FEED == GemmFeed::CP_ASYNC) fence_proxy_async();
    const Stage& st = stages[s];
    const uint4 wv = *reinterpret_cast<const uint4*>(st.weights + (wg * 128 + tid) * 16);
    const uint32_t a0[4] = {int4x4_to_e4m3(wv.x), int4x4_to_e4m3(wv.x >> 16), int4x4_to_e4m3(wv.y),
                            int4x4_to_e4m3(wv.y >> 16)};
    const uint32_t a1[4] = {int4x4_to_e4m3(wv.z), int4x4_to_e4m3(wv.z >> 16), int4x4_to_e4m3(wv.w),
                            int4x4_to_e4m3(wv.w >> 16)};
    wgmma_fence();
    if constexpr (!(SKIP & 2)) {
      wgmma_m64n128k32_e4m3_rs(part, a0, smem_desc(st.codes, 2048, 128), 0);
      wgmma_m64n128k32_e4m3_rs(part, a1, smem_desc(st.codes + 2 * 2048, 2048, 128), 1);
    } else {
      part[0] += float(a0[0] ^ a1[3]);  // keep the weight loads and conversions alive
    }
    wgmma_commit();
  };
  // Folds group g's exact sums (wgmma complete) into the accumulator and releases the stage.
  // part[4j + e]: weight row row0 + 8 (e / 2), activation row 8 j + 2 t + e % 2 of the tile.
  auto fold = [&](float(&part)[64], int64_t g) {
    fence_regs(part);
    const int s = int(g % kStages);
    const Stage& st = stages[s];
    if constexpr (SKIP & 1) {
      if constexpr (HALF_ACC) hacc[0] = __hadd2(hacc[0], H::pack(part[0], part[63]));
      else acc[0] += part[0] + part[63];
    } else if constexpr (HALF_ACC) {
      // §4.2: acc = T_fma(T(p), T(s_a * s_w), acc). The product of two T values rounded once to
      // T is exactly T(f32(s_a) * f32(s_w)) (the float32 product is exact), so __hmul2 computes it.
      const uint16_t* ws = reinterpret_cast<const uint16_t*>(st.wscale);
      const typename H::T2 sw0 = H::bcast(ws[row0]), sw1 = H::bcast(ws[row0 + 8]);
      const typename H::T2* sa = reinterpret_cast<const typename H::T2*>(st.ascale);
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const typename H::T2 a = sa[4 * j + t];
        hacc[2 * j] = __hfma2(H::pack(part[4 * j], part[4 * j + 1]), __hmul2(a, sw0), hacc[2 * j]);
        hacc[2 * j + 1] = __hfma2(H::pack(part[4 * j + 2], part[4 * j + 3]), __hmul2(a, sw1), hacc[2 * j + 1]);
      }
    } else if constexpr (FP8) {
      // §5, one-sided: acc += p * s_w (fused: allowed, wider accumulation).
      const float* ws = reinterpret_cast<const float*>(st.wscale);
      const float sw0 = ws[row0], sw1 = ws[row0 + 8];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        acc[4 * j + 0] = fmaf(part[4 * j + 0], sw0, acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[4 * j + 1], sw0, acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[4 * j + 2], sw1, acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[4 * j + 3], sw1, acc[4 * j + 3]);
      }
    } else {
      // §4.1 with p * (s_a * s_w) + acc fused (allowed: wider accumulation).
      const float* ws = reinterpret_cast<const float*>(st.wscale);
      const float sw0 = ws[row0], sw1 = ws[row0 + 8];
      const float2* sa = reinterpret_cast<const float2*>(st.ascale);
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const float2 a = sa[4 * j + t];
        acc[4 * j + 0] = fmaf(part[4 * j + 0], __fmul_rn(a.x, sw0), acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[4 * j + 1], __fmul_rn(a.y, sw0), acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[4 * j + 2], __fmul_rn(a.x, sw1), acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[4 * j + 3], __fmul_rn(a.y, sw1), acc[4 * j + 3]);
      }
    }
    // Every consumer thread arrives (one arrive per warp after __syncwarp measured no faster, v4,
    // and compute-sanitizer racecheck does not follow that ordering).
    mbar_arrive(&empty[s]);
    // The peer multicasts into this stage too: it is told once per warp.
    if constexpr (CLUSTER > 1) {
      __syncwarp();
      mbar_arrive_cluster(&empty[s], rank ^ 1u, lane == 0);
    }
  };

  // Two partial-sum buffers: group g + 1's wgmma runs on the tensor cores while group g is
  // folded on the CUDA cores.
  float part0[64], part1[64];
  issue(part0, 0);
  int64_t g = 0;
  for (; g + 2 < G; g += 2) {  // on entry group g is in flight in part0
    issue(part1, g + 1);
    wgmma_wait<1>();
    fold(part0, g);
    issue(part0, g + 2);
    wgmma_wait<1>();
    fold(part1, g + 1);
  }
  if (g + 1 < G) {
    issue(part1, g + 1);
    wgmma_wait<1>();
    fold(part0, g);
    wgmma_wait<0>();
    fold(part1, g + 1);
  } else {
    wgmma_wait<0>();
    fold(part0, g);
  }

  // Epilogue. part[] := u = lora_act · proj_upᵀ on the tensor cores (v5; on the CUDA cores it
  // cost ~20% of the GEMM): bf16 wgmma m64n128k16, A = proj_up rows from registers, B = lora_act
  // from shared memory split into bf16 hi + lo (l = hi + lo to ~2^-17 relative), products exact
  // in float32. proj_up is exactly bf16 for bf16 layers; for fp16 layers it is split the same
  // way (exactly: an fp16 value is the sum of two bf16 values) and up_lo · l_lo (~2^-17) dropped.
  // Ranks are padded with zeros to Rk, a multiple of 16 (at least 16, so that even R = 0 writes
  // part[] through a wgmma only: any other write inside the pipeline serializes it, C7515).
  float (&part)[64] = part0;
  const int64_t n0 = nt * kTileN + row0, n1 = n0 + 8;  // < Npad: proj_up, wcscales, bias are padded
  {
    const int Rpad = p.Rpad, Rk = Rpad <= 16 ? 16 : (Rpad + 15) / 16 * 16;
    // l_hi then l_lo, each [Rk / 8][128 m][8 r] bf16 (wgmma's K-major no-swizzle core matrices).
    uint8_t* lhi = smem;
    uint8_t* llo = smem + kTileM * Rk * 2;
    named_barrier(1, kConsumerThreads);  // all stages consumed by both consumer warpgroups
    const int q4 = Rk / 4;               // 4-rank pieces per row
    for (int i = threadIdx.x; i < kTileM * q4; i += kConsumerThreads) {
      const int m = i / q4, r = (i % q4) * 4;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (r < Rpad) v = *reinterpret_cast<const float4*>(&p.lact[(mt * kTileM + m) * Rpad + r]);
      const float f[4] = {v.x, v.y, v.z, v.w};
      uint16_t hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const __nv_bfloat16 h = __float2bfloat16_rn(f[e]);
        hi[e] = __bfloat16_as_ushort(h);
        lo[e] = __bfloat16_as_ushort(__float2bfloat16_rn(__fsub_rn(f[e], __bfloat162float(h))));
      }
      const int off = (r / 8) * (kTileM * 16) + (m / 8) * 128 + (m % 8) * 16 + (r % 8) * 2;
      *reinterpret_cast<uint2*>(lhi + off) = make_uint2(hi[0] | uint32_t(hi[1]) << 16, hi[2] | uint32_t(hi[3]) << 16);
      *reinterpret_cast<uint2*>(llo + off) = make_uint2(lo[0] | uint32_t(lo[1]) << 16, lo[2] | uint32_t(lo[3]) << 16);
    }
    fence_proxy_async();  // generic-proxy stores, read next by the wgmma (async proxy)
    named_barrier(1, kConsumerThreads);
    // A fragments (mma.m16n8k16 order per warp): a0 (row0, k 2t, 2t+1), a1 (row0 + 8, same k),
    // a2 (row0, k 2t+8, 2t+9), a3 (row0 + 8, k 2t+8, 2t+9).
    auto up_pair = [&](int64_t n, int k, bool low) -> uint32_t {
      uint32_t bits[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float u = k + e < Rpad ? __ldg(&p.proj_up[n * Rpad + k + e]) : 0.0f;
        const __nv_bfloat16 h = __float2bfloat16_rn(u);
        bits[e] = __bfloat16_as_ushort(low ? __float2bfloat16_rn(__fsub_rn(u, __bfloat162float(h))) : h);
      }
      return bits[0] | bits[1] << 16;
    };
    // One k16 step at a time, completed before the next step's A registers are computed: the
    // wgmma reads its register operand asynchronously (v5's first form, with all steps in flight,
    // gave wrong results in some instantiations).
    for (int kk = 0; kk < Rk / 16; ++kk) {
      const int k0 = 16 * kk + 2 * t;
      const uint32_t ahi[4] = {up_pair(n0, k0, false), up_pair(n1, k0, false), up_pair(n0, k0 + 8, false),
                               up_pair(n1, k0 + 8, false)};
      uint32_t alo[4] = {0u, 0u, 0u, 0u};
      if constexpr (!BF16) {
        alo[0] = up_pair(n0, k0, true);
        alo[1] = up_pair(n1, k0, true);
        alo[2] = up_pair(n0, k0 + 8, true);
        alo[3] = up_pair(n1, k0 + 8, true);
      }
      const uint64_t dhi = smem_desc(lhi + kk * 2 * (kTileM * 16), kTileM * 16, 128);
      const uint64_t dlo = smem_desc(llo + kk * 2 * (kTileM * 16), kTileM * 16, 128);
      wgmma_fence();
      wgmma_m64n128k16_bf16_rs(part, ahi, dhi, kk > 0 ? 1u : 0u);
      wgmma_m64n128k16_bf16_rs(part, ahi, dlo, 1u);
      if constexpr (!BF16) wgmma_m64n128k16_bf16_rs(part, alo, dhi, 1u);
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(part);
    }
    fence_regs(part);
  }

  const float wc0 = p.wcscales[n0], wc1 = p.wcscales[n1];
  const float b0 = p.bias[n0], b1 = p.bias[n1];
  // Final values, staged transposed in shared memory ([m][n]) for row-contiguous stores of y.
  uint16_t* out = reinterpret_cast<uint16_t*>(smem);
  named_barrier(1, kConsumerThreads);  // the low-rank staging area is no longer read
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    float2 rs = make_float2(1.0f, 1.0f);
    if constexpr (FP8) rs = __ldg(reinterpret_cast<const float2*>(p.row_scale + mt * kTileM + 8 * j + 2 * t));
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float v;
      if constexpr (HALF_ACC) {
        const float2 h = H::unpack(hacc[2 * j + e / 2]);
        v = (e % 2) ? h.y : h.x;
      } else {
        v = acc[4 * j + e];
      }
      if constexpr (FP8) v = __fmul_rn(v, (e % 2) ? rs.y : rs.x);  // §5: (acc * s_row) * alpha
      v = __fmul_rn(v, p.alpha);
      v = __fadd_rn(__fmul_rn(v, e < 2 ? wc0 : wc1), e < 2 ? b0 : b1);
      v = __fadd_rn(v, part[4 * j + e]);
      out[(8 * j + 2 * t + (e % 2)) * kOutStride + row0 + 8 * (e / 2)] = H::from_f32(v);
    }
  }
  named_barrier(1, kConsumerThreads);
  const int64_t m_base = mt * kTileM, n_base = nt * kTileN;
  const int rows = p.M - m_base < kTileM ? int(p.M - m_base) : kTileM;
  const int cols = p.N - n_base < kTileN ? int(p.N - n_base) : kTileN;  // <= 0 for a cluster's padding CTA
  if (cols == kTileN && p.N % 8 == 0) {
    // 16-byte stores: 16 per output row.
    for (int i = threadIdx.x; i < rows * 16; i += kConsumerThreads) {
      const int r = i / 16, c = (i % 16) * 8;
      *reinterpret_cast<uint4*>(p.y + (m_base + r) * p.N + n_base + c) =
          *reinterpret_cast<const uint4*>(out + r * kOutStride + c);
    }
  } else if (cols > 0) {
    for (int i = threadIdx.x; i < rows * kTileN; i += kConsumerThreads) {
      const int r = i / kTileN, c = i % kTileN;
      if (c < cols) p.y[(m_base + r) * p.N + n_base + c] = out[r * kOutStride + c];
    }
  }
}

template <bool BF16, GemmMode MODE, int SKIP, GemmFeed FEED>
__global__ void __launch_bounds__(kThreads, 1) w4a4_gemm_kernel(const GemmParams p) {
  constexpr int CLUSTER = FEED == GemmFeed::BULK_CLUSTER2 ? 2 : 1;
  extern __shared__ __align__(128) uint8_t smem[];
  Stage* stages = reinterpret_cast<Stage*>(smem);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * sizeof(Stage));
  uint64_t* empty = full + kStages;

  const int64_t nt = blockIdx.x, mt = blockIdx.y;
  const int64_t G = p.K / kGroup;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr bool FP8 = MODE == GemmMode::FP8;
  constexpr uint32_t kScaleBytes = MODE == GemmMode::HALF ? 2 * kTileM : 4 * kTileM;  // one scale vector
  constexpr uint32_t kAScaleBytes = FP8 ? 0 : kScaleBytes;  // FP8: row scales in the epilogue instead
  constexpr uint32_t kStageTxBytes = kCodeTileBytes + kWeightTileBytes + kAScaleBytes + kScaleBytes;
  constexpr uint32_t kCodeSlice = kCodeTileBytes / CLUSTER;  // bytes of the code tile this CTA loads

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      // Bulk copies: the producer's arrive_expect_tx; cp.async: one arrive per producer thread.
      mbar_init(&full[s], FEED == GemmFeed::CP_ASYNC ? kProducerThreads : 1);
      // Every local consumer thread, plus one arrive per consumer warp of the peer CTA.
      mbar_init(&empty[s], kConsumerThreads + (CLUSTER - 1) * kConsumerWarps);
    }
    mbar_init_fence();
  }
  __syncthreads();
  const uint32_t rank = CLUSTER > 1 ? cluster_ctarank() : 0;
  if constexpr (CLUSTER > 1) cluster_sync();  // the peer's barriers exist before anything is multicast

  if (warp >= kConsumerWarps) {
    // Producer warpgroup: gives registers away, then feeds the stages.
    setmaxnreg_dec<40>();
    const uint8_t* asc = static_cast<const uint8_t*>(p.ascale);
    const uint8_t* wsc = static_cast<const uint8_t*>(p.wscale);
    if constexpr (FEED == GemmFeed::CP_ASYNC) {
      // All 128 threads, 16-byte cp.async each (codes 4, weights 2, scales <= 1 per thread and
      // group), completing on the full barrier through cp.async.mbarrier.arrive.
      const int pt = threadIdx.x - kConsumerThreads;
      constexpr int kScaleChunks = int(kScaleBytes / 16);  // 16-byte pieces of one scale vector
      for (int64_t g = 0; g < G; ++g) {
        const int s = int(g % kStages);
        if (g >= kStages) mbar_wait(&empty[s], uint32_t((g / kStages - 1) & 1));
        Stage& st = stages[s];
        const uint8_t* codes = p.codes + (mt * G + g) * kCodeTileBytes;
        const uint8_t* wts = p.wfrag + (nt * G + g) * kWeightTileBytes;
#pragma unroll
        for (int i = 0; i < kCodeTileBytes / 16 / kProducerThreads; ++i) {
          const int o = (i * kProducerThreads + pt) * 16;
          cp_async_16(st.codes + o, codes + o);
        }
#pragma unroll
        for (int i = 0; i < kWeightTileBytes / 16 / kProducerThreads; ++i) {
          const int o = (i * kProducerThreads + pt) * 16;
          cp_async_16(st.weights + o, wts + o);
        }
        if (!FP8 && pt < kScaleChunks)
          cp_async_16(reinterpret_cast<uint8_t*>(st.ascale) + pt * 16, asc + (mt * G + g) * kScaleBytes + pt * 16);
        if (pt >= 64 && pt < 64 + kScaleChunks)
          cp_async_16(reinterpret_cast<uint8_t*>(st.wscale) + (pt - 64) * 16, wsc + (nt * G + g) * kScaleBytes + (pt - 64) * 16);
        cp_async_mbar_arrive(&full[s]);
      }
    } else if (warp == kConsumerWarps && lane == 0) {
      for (int64_t g = 0; g < G; ++g) {
        const int s = int(g % kStages);
        if (g >= kStages) mbar_wait(&empty[s], uint32_t((g / kStages - 1) & 1));
        Stage& st = stages[s];
        mbar_arrive_expect_tx(&full[s], kStageTxBytes);
        const uint8_t* codes = p.codes + (mt * G + g) * kCodeTileBytes + rank * kCodeSlice;
        if constexpr (CLUSTER > 1) {
          bulk_copy_g2s_multicast(st.codes + rank * kCodeSlice, codes, kCodeSlice, &full[s], uint16_t((1u << CLUSTER) - 1));
        } else {
          bulk_copy_g2s(st.codes, codes, kCodeSlice, &full[s]);
        }
        bulk_copy_g2s(st.weights, p.wfrag + (nt * G + g) * kWeightTileBytes, kWeightTileBytes, &full[s]);
        if constexpr (!FP8) bulk_copy_g2s(st.ascale, asc + (mt * G + g) * kScaleBytes, kScaleBytes, &full[s]);
        bulk_copy_g2s(st.wscale, wsc + (nt * G + g) * kScaleBytes, kScaleBytes, &full[s]);
      }
    }
    __syncwarp();
  } else {
    setmaxnreg_inc<232>();
    consume<BF16, MODE, SKIP, FEED>(p, stages, full, empty, rank, smem);
  }
  // No CTA exits while its peer may still multicast into it or arrive on its barriers.
  if constexpr (CLUSTER > 1) cluster_sync();
}

template <bool BF16, GemmMode MODE, int SKIP, GemmFeed FEED>
void launch_typed(const GemmParams& p, cudaStream_t stream) {
  constexpr int CLUSTER = FEED == GemmFeed::BULK_CLUSTER2 ? 2 : 1;
  auto kernel = w4a4_gemm_kernel<BF16, MODE, SKIP, FEED>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemBytes)),
        "cudaFuncSetAttribute(w4a4_gemm_kernel)");
  cudaLaunchConfig_t cfg{};
  // The weight buffers hold weight_tiles(N) tiles, a multiple of kClusterN (sm90_layout.hpp).
  cfg.gridDim = dim3(unsigned(round_up(ceil_div(p.N, kTileN), CLUSTER)), unsigned(ceil_div(p.M, kTileM)));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kSmemBytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = CLUSTER;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check(cudaLaunchKernelEx(&cfg, kernel, p), "w4a4_gemm_kernel launch");
  check_launch("w4a4_gemm_kernel");
}

// Every feed is built for bf16 (cuda_bench compares them); fp16 has the default feed only.
template <bool BF16, GemmMode MODE>
void launch_mode(const GemmParams& p, cudaStream_t stream) {
  if constexpr (BF16) {
    switch (p.feed) {
      case GemmFeed::BULK: return launch_typed<BF16, MODE, 0, GemmFeed::BULK>(p, stream);
      case GemmFeed::BULK_CLUSTER2: return launch_typed<BF16, MODE, 0, GemmFeed::BULK_CLUSTER2>(p, stream);
      case GemmFeed::CP_ASYNC: return launch_typed<BF16, MODE, 0, GemmFeed::CP_ASYNC>(p, stream);
    }
  }
  if (p.feed != kDefaultFeed) throw UnsupportedError("cuda-sm90: this GEMM feed is built for bf16 only");
  launch_typed<BF16, MODE, 0, kDefaultFeed>(p, stream);
}

}  // namespace

void launch_w4a4_gemm(const GemmParams& p, cudaStream_t stream) {
  if (p.M == 0) return;
  if (p.profile_skip != 0) {  // profiling variants: bf16, fp32 accumulation only
    if (p.dtype != HalfType::BF16 || p.mode != GemmMode::FP32 || p.feed != kDefaultFeed)
      throw UnsupportedError("cuda-sm90: GEMM profiling variants exist for bf16 fp32 accumulation only");
    switch (p.profile_skip) {
      case 1: launch_typed<true, GemmMode::FP32, 1, kDefaultFeed>(p, stream); return;
      case 2: launch_typed<true, GemmMode::FP32, 2, kDefaultFeed>(p, stream); return;
      case 3: launch_typed<true, GemmMode::FP32, 3, kDefaultFeed>(p, stream); return;
      default: throw UnsupportedError("cuda-sm90: GEMM profile_skip must be 0..3");
    }
  }
  const bool bf16 = p.dtype == HalfType::BF16;
  switch (p.mode) {
    case GemmMode::FP32: bf16 ? launch_mode<true, GemmMode::FP32>(p, stream) : launch_mode<false, GemmMode::FP32>(p, stream); break;
    case GemmMode::HALF: bf16 ? launch_mode<true, GemmMode::HALF>(p, stream) : launch_mode<false, GemmMode::HALF>(p, stream); break;
    case GemmMode::FP8: bf16 ? launch_mode<true, GemmMode::FP8>(p, stream) : launch_mode<false, GemmMode::FP8>(p, stream); break;
  }
}

}  // namespace svdquant::cuda
