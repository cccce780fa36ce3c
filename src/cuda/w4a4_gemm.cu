// The W4A4 GEMM of the cuda-sm90 backend (NUMERICS.md §4) with its epilogue (§4.3), and the
// same GEMM for fp8 activations (§5).
//
// Three group accumulations (GemmMode): §4.1 (FP32) and §4.2 (HALF) with two-sided scales; §5
// (FP8: e4m3 activations with one float32 scale per row, so the fold is one-sided, acc += p * s_w,
// and the row scale is applied in the epilogue).
//
// A CTA tile is 128 x NH weight rows (output columns n) by 128 activation rows (m) of y^T: the
// weight rows are wgmma's M side (A from registers: the 4-bit weights are expanded to e4m3 in
// registers, so they stay 4-bit in memory and in shared memory) and the activation rows wgmma's N
// side (B, e4m3 codes in shared memory). int4 values are exact in e4m3 and every product and
// group sum (|p| <= 7680) is exact in the float32 accumulators, so each group's wgmma result is
// the exact integer p[g] of §4. NH = 2 (256 weight rows, v6) reads the code tile once for twice
// the weight rows: 4.4 KB of L2 -> shared traffic per MFLOP instead of 6.5 (the loads alone were
// the largest cost of the 128-row tile, docs/perf-notes.md v2-v5); NH = 1 keeps more CTAs busy
// when there are few tiles (small M).
//
// Persistent: min(tiles, SMs) CTAs walk the tiles (n fastest, so the CTAs in flight share their
// code tiles in L2); the producer runs ahead into the next tile while the consumers finish the
// epilogue of the current one, so the pipeline never drains between tiles.
//
// Warp roles: warps 0-7 are two consumer warpgroups (64 NH weight rows each, as NH m64 blocks);
// warps 8-11 are the producer warpgroup, whose first thread fills a ring of shared-memory stages
// with 1-D bulk copies (per group: the code tile 8 KB, NH weight tiles of 4 KB, the scale
// vectors), completing on "full" mbarriers; every consumer thread releases a stage on its "empty"
// mbarrier (CUTLASS's consumer release; a per-warp release measured no faster, v4).
// Per m64 block and group a consumer runs two wgmma k32 steps into a partial-sum buffer and folds
// it into its accumulator with the scales: §4.1 (float32, fma), §4.2 (T, one T_fma per group in
// group order via __hfma2, bitwise the CPU `half` mode) or §5. With NH = 1, two partial-sum
// buffers let the next group's wgmma run while a group is folded; the accumulators of NH = 2
// leave room for one buffer only, and the other consumer warpgroup's wgmma fills the tensor cores
// while one folds.
// Epilogue: ·alpha, ·wcscales + bias (two float32 operations, §4.3), + lora_act · proj_upᵀ
// (bf16 wgmma of split operands, see consume()), rounded to T, staged transposed in shared memory
// and stored with bounds checks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_check.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "sm90_primitives.cuh"

namespace svdquant::cuda {
namespace {

using namespace sm90;

constexpr int kConsumerWarps = 8;
constexpr int kConsumerThreads = kConsumerWarps * 32;
constexpr int kProducerThreads = 128;  // one producer warpgroup (setmaxnreg needs whole warpgroups)
constexpr int kThreads = kConsumerThreads + kProducerThreads;
constexpr size_t kSmemLimit = 232448;  // sharedMemPerBlockOptin of sm_90 (227 KB)

// One stage: what the CTA needs for one group of 64 along K.
template <int NH>
struct __align__(128) Stage {
  uint8_t codes[kCodeTileBytes];          // activation codes, wgmma no-swizzle K-major layout
  uint8_t weights[NH][kWeightTileBytes];  // NH weight tiles' fragments [half][tid][16 bytes]
  uint32_t ascale[kTileM];                // float32 (fp32 mode) or T in the low half of the array
  uint32_t wscale[NH][kTileN];            // likewise, per weight tile
};

// Shared memory: the stages, then the epilogue area (low-rank operands, then the staged outputs),
// then the barriers. The stages get what the epilogue area leaves: 9 for NH = 2, 12 for NH = 1
// (v3: 5 -> 12 stages gained 2 %, so 9 is not short).
template <int NH>
struct Config {
  static constexpr int kRows = NH * kTileN;     // weight rows (output columns) per CTA tile
  static constexpr int kOutStride = kRows + 8;  // T elements per staged output row
  static constexpr size_t kLoraBytes = size_t(2) * kTileM * kMaxRank * 2;  // l_hi + l_lo, bf16
  static constexpr size_t kOutBytes = size_t(kTileM) * kOutStride * 2;
  static constexpr size_t kEpiBytes = kLoraBytes > kOutBytes ? kLoraBytes : kOutBytes;
  static constexpr int kStages = int((kSmemLimit - kEpiBytes - 1024) / sizeof(Stage<NH>));
  static constexpr size_t kSmemBytes = kStages * sizeof(Stage<NH>) + kEpiBytes + 2 * kStages * sizeof(uint64_t);
  static_assert(sizeof(Stage<NH>) % 128 == 0 && kEpiBytes % 128 == 0 && kSmemBytes <= kSmemLimit);
};

// The A registers of one m64 block for the two k32 steps of a group (e4m3, wgmma fragment order).
struct AFrag {
  uint32_t k0[4], k1[4];
};

// Partial-sum registers per buffer (see consume()).
template <GemmTile TILE> inline constexpr int kPartN = TILE == GemmTile::ROWS128 ? 64 : 32;
// m64 blocks per consumer warpgroup (weight tiles of 128 rows per CTA).
template <GemmTile TILE> inline constexpr int kTileNH = TILE == GemmTile::ROWS256 ? 2 : 1;

// A compile-time index passed to a generic lambda (accumulator arrays are indexed by constants only).
template <int I> struct Int { static constexpr int value = I; };

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


// Consumer warpgroups: the main loop over the tiles of this CTA, each with its epilogue.
// SKIP (profiling only, cuda_bench's breakdown; results are wrong): bit 0 leaves out the fold,
// bit 1 the wgmma, bit 2 the loads after the first pass over the stages (the producer only
// re-arms them), bit 3 splits the code tile's copy into four (same bytes, more copies). Real calls use SKIP = 0: no instruction but a wgmma then writes the partial-sum
// registers, so ptxas keeps the wgmmas asynchronous (with the profiling branches in the same
// kernel it serialized them, warning C7515).
template <bool BF16, GemmMode MODE, int SKIP, GemmTile TILE, int NH = kTileNH<TILE>>
__device__ __forceinline__ void consume(const GemmParams& p, Stage<NH>* stages, uint64_t* full, uint64_t* empty,
                                        uint8_t* epi, int64_t n_tiles, int64_t total) {
  using H = Half<BF16>;
  using C = Config<NH>;
  using St = Stage<NH>;
  constexpr int S = C::kStages;
  constexpr bool HALF_ACC = MODE == GemmMode::HALF;
  constexpr bool FP8 = MODE == GemmMode::FP8;
  // Partial sums per buffer: NH = 1 keeps whole m64 x n128 results in two 64-register buffers;
  // NH = 2 (float32 accumulators for 128 weight rows take 128 registers) splits each block's
  // group into two n64 halves of the activation rows, two 32-register buffers (v6.1).
  constexpr int PN = kPartN<TILE>;
  const int64_t G = p.K / kGroup;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wg = warp / 4, tid = threadIdx.x % 128, wq = warp % 4;
  const int t = lane % 4;
  const int rw = wq * 16 + lane / 4;  // this thread's rows rw and rw + 8 of each m64 block

  float acc[HALF_ACC ? 1 : NH][64] = {};
  typename H::T2 hacc[HALF_ACC ? NH : 1][32] = {};
  float part0[PN], part1[PN];

  // m64 block b = NH * wg + h of the CTA tile is fragment half b % 2 of weight tile b / 2: its
  // A registers for the two k32 steps of a group, expanded from int4 to e4m3.
  auto afrag = [&](const St& st, auto hc) {
    constexpr int h = decltype(hc)::value;
    const int b = NH * wg + h;
    const uint4 wv = *reinterpret_cast<const uint4*>(st.weights[b / 2] + ((b % 2) * 128 + tid) * 16);
    AFrag a;
    a.k0[0] = int4x4_to_e4m3(wv.x);
    a.k0[1] = int4x4_to_e4m3(wv.x >> 16);
    a.k0[2] = int4x4_to_e4m3(wv.y);
    a.k0[3] = int4x4_to_e4m3(wv.y >> 16);
    a.k1[0] = int4x4_to_e4m3(wv.z);
    a.k1[1] = int4x4_to_e4m3(wv.z >> 16);
    a.k1[2] = int4x4_to_e4m3(wv.w);
    a.k1[3] = int4x4_to_e4m3(wv.w >> 16);
    return a;
  };
  // Issues the two wgmma k32 steps of a group into `part` (one commit group): all 128 activation
  // rows (PN = 64) or the n64 half `nh` of them (PN = 32: rows 64 nh .., code tile offset
  // 8 core-matrix rows of 128 bytes per 8 rows).
  auto issue = [&](float(&part)[kPartN<TILE>], const AFrag& a, const St& st, auto nhc) {
    constexpr int nh = decltype(nhc)::value;
    [[maybe_unused]] const uint8_t* codes = st.codes + nh * 8 * 128;
    wgmma_fence();
    if constexpr (SKIP & 2) {
      part[0] += float(a.k0[0] ^ a.k1[3]);  // keep the weight loads and conversions alive
    } else if constexpr (PN == 64) {
      wgmma_m64n128k32_e4m3_rs(part, a.k0, smem_desc(codes, 2048, 128), 0);
      wgmma_m64n128k32_e4m3_rs(part, a.k1, smem_desc(codes + 2 * 2048, 2048, 128), 1);
    } else {
      wgmma_m64n64k32_e4m3_rs(part, a.k0, smem_desc(codes, 2048, 128), 0);
      wgmma_m64n64k32_e4m3_rs(part, a.k1, smem_desc(codes + 2 * 2048, 2048, 128), 1);
    }
    wgmma_commit();
  };
  // Folds a completed partial sum of block h (activation-row half nh) into its accumulator.
  // part[4j + e]: weight row rw + 8 (e / 2) of the block, activation row 8 J + 2 t + e % 2 with
  // J = (PN / 4) nh + j, which is accumulator element 4 J + e (the m64n128 layout).
  auto fold = [&](float(&part)[kPartN<TILE>], const St& st, auto hc, auto nhc) {
    constexpr int h = decltype(hc)::value, nh = decltype(nhc)::value, J0 = (PN / 4) * nh;
    fence_regs(part);
    [[maybe_unused]] const int b = NH * wg + h, r0 = (b % 2) * 64 + rw;  // row in weight tile b / 2
    if constexpr (SKIP & 1) {
      if constexpr (HALF_ACC) hacc[h][2 * J0] = __hadd2(hacc[h][2 * J0], H::pack(part[0], part[PN - 1]));
      else acc[h][4 * J0] += part[0] + part[PN - 1];
    } else if constexpr (HALF_ACC) {
      // §4.2: acc = T_fma(T(p), T(s_a * s_w), acc). The product of two T values rounded once to
      // T is exactly T(f32(s_a) * f32(s_w)) (the float32 product is exact), so __hmul2 computes it.
      const uint16_t* ws = reinterpret_cast<const uint16_t*>(st.wscale[b / 2]);
      const typename H::T2 sw0 = H::bcast(ws[r0]), sw1 = H::bcast(ws[r0 + 8]);
      const typename H::T2* sa = reinterpret_cast<const typename H::T2*>(st.ascale);
#pragma unroll
      for (int j = 0; j < PN / 4; ++j) {
        const int J = J0 + j;
        const typename H::T2 a = sa[4 * J + t];
        hacc[h][2 * J] = __hfma2(H::pack(part[4 * j], part[4 * j + 1]), __hmul2(a, sw0), hacc[h][2 * J]);
        hacc[h][2 * J + 1] = __hfma2(H::pack(part[4 * j + 2], part[4 * j + 3]), __hmul2(a, sw1), hacc[h][2 * J + 1]);
      }
    } else if constexpr (FP8) {
      // §5, one-sided: acc += p * s_w (fused: allowed, wider accumulation).
      const float* ws = reinterpret_cast<const float*>(st.wscale[b / 2]);
      const float sw0 = ws[r0], sw1 = ws[r0 + 8];
#pragma unroll
      for (int j = 0; j < PN / 4; ++j) {
        const int J = J0 + j;
        acc[h][4 * J + 0] = fmaf(part[4 * j + 0], sw0, acc[h][4 * J + 0]);
        acc[h][4 * J + 1] = fmaf(part[4 * j + 1], sw0, acc[h][4 * J + 1]);
        acc[h][4 * J + 2] = fmaf(part[4 * j + 2], sw1, acc[h][4 * J + 2]);
        acc[h][4 * J + 3] = fmaf(part[4 * j + 3], sw1, acc[h][4 * J + 3]);
      }
    } else {
      // §4.1 with p * (s_a * s_w) + acc fused (allowed: wider accumulation).
      const float* ws = reinterpret_cast<const float*>(st.wscale[b / 2]);
      const float sw0 = ws[r0], sw1 = ws[r0 + 8];
      const float2* sa = reinterpret_cast<const float2*>(st.ascale);
#pragma unroll
      for (int j = 0; j < PN / 4; ++j) {
        const int J = J0 + j;
        const float2 a = sa[4 * J + t];
        acc[h][4 * J + 0] = fmaf(part[4 * j + 0], __fmul_rn(a.x, sw0), acc[h][4 * J + 0]);
        acc[h][4 * J + 1] = fmaf(part[4 * j + 1], __fmul_rn(a.y, sw0), acc[h][4 * J + 1]);
        acc[h][4 * J + 2] = fmaf(part[4 * j + 2], __fmul_rn(a.x, sw1), acc[h][4 * J + 2]);
        acc[h][4 * J + 3] = fmaf(part[4 * j + 3], __fmul_rn(a.y, sw1), acc[h][4 * J + 3]);
      }
    }
  };

  uint32_t it0 = 0;  // stage-ring position of this tile's group 0 (the producer counts the same way)
  for (int64_t tile = blockIdx.x; tile < total; tile += gridDim.x, it0 += uint32_t(G)) {
    const int64_t ct = tile % n_tiles, mt = tile / n_tiles;
    if constexpr (HALF_ACC) {
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int i = 0; i < 32; ++i) hacc[h][i] = H::zero2();
    } else {
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[h][i] = 0.0f;
    }
    // Stage of group g: waiting for it to be full, and releasing it (every consumer thread).
    auto acquire = [&](int64_t g) -> const St& {
      const uint32_t it = it0 + uint32_t(g);
      mbar_wait(&full[it % S], (it / S) & 1);
      return stages[it % S];
    };
    auto release = [&](int64_t g) { mbar_arrive(&empty[(it0 + uint32_t(g)) % S]); };

    if constexpr (NH == 2) {
      // Four steps per group, (block, row half) = (0,0) (0,1) (1,0) (1,1): half 0 always in
      // part0, half 1 in part1; each step's wgmma runs while the step before it is folded, except
      // the last fold of a group (the other warpgroup's wgmma runs then). Carrying the next
      // group's first step across the stage wait (an mbarrier try_wait loop between a wgmma and
      // its wait) made ptxas serialize every wgmma (C7514), so each group drains.
      for (int64_t g = 0; g < G; ++g) {
        const St& st = acquire(g);
        const AFrag a0 = afrag(st, Int<0>{});
        issue(part0, a0, st, Int<0>{});
        issue(part1, a0, st, Int<1>{});
        const AFrag a1 = afrag(st, Int<1>{});
        wgmma_wait<1>();
        fold(part0, st, Int<0>{}, Int<0>{});
        issue(part0, a1, st, Int<0>{});
        wgmma_wait<1>();
        fold(part1, st, Int<0>{}, Int<1>{});
        issue(part1, a1, st, Int<1>{});
        wgmma_wait<1>();
        fold(part0, st, Int<1>{}, Int<0>{});
        wgmma_wait<0>();
        fold(part1, st, Int<1>{}, Int<1>{});
        release(g);
      }
    } else {
      // NH = 1: even groups in part0, odd groups in part1; group g + 1's wgmma runs while group g
      // is folded.
      const St* s0 = &acquire(0);
      issue(part0, afrag(*s0, Int<0>{}), *s0, Int<0>{});
      int64_t g = 0;
      for (; g + 2 < G; g += 2) {  // on entry group g is in flight in part0
        const St* s1 = &acquire(g + 1);
        issue(part1, afrag(*s1, Int<0>{}), *s1, Int<0>{});
        wgmma_wait<1>();
        fold(part0, *s0, Int<0>{}, Int<0>{});
        release(g);
        s0 = &acquire(g + 2);
        issue(part0, afrag(*s0, Int<0>{}), *s0, Int<0>{});
        wgmma_wait<1>();
        fold(part1, *s1, Int<0>{}, Int<0>{});
        release(g + 1);
      }
      if (g + 1 < G) {
        const St* s1 = &acquire(g + 1);
        issue(part1, afrag(*s1, Int<0>{}), *s1, Int<0>{});
        wgmma_wait<1>();
        fold(part0, *s0, Int<0>{}, Int<0>{});
        release(g);
        wgmma_wait<0>();
        fold(part1, *s1, Int<0>{}, Int<0>{});
        release(g + 1);
      } else {
        wgmma_wait<0>();
        fold(part0, *s0, Int<0>{}, Int<0>{});
        release(g);
      }
    }

    // Epilogue. part0 (and part1) := u = lora_act · proj_upᵀ on the tensor cores (v5; on the CUDA cores it
    // cost ~20% of the GEMM), one m64 block at a time: bf16 wgmma m64n128k16, A = proj_up rows
    // from registers, B = lora_act from shared memory split into bf16 hi + lo (l = hi + lo to
    // ~2^-17 relative), products exact in float32. proj_up is exactly bf16 for bf16 layers; for
    // fp16 layers it is split the same way (exactly: an fp16 value is the sum of two bf16 values)
    // and up_lo · l_lo (~2^-17) dropped. Ranks are padded with zeros to Rk, a multiple of 16 (at
    // least 16, so that even R = 0 writes them through a wgmma only: any other write inside the
    // pipeline serializes it, C7515). The final values (before rounding to T) replace the
    // accumulators, which are then staged transposed in the same shared-memory area.
    const int64_t n_cta = ct * C::kRows;  // first output column of the tile (< Npad: padded vectors)
    const int Rpad = p.Rpad, Rk = Rpad <= 16 ? 16 : (Rpad + 15) / 16 * 16;
    // l_hi then l_lo, each [Rk / 8][128 m][8 r] bf16 (wgmma's K-major no-swizzle core matrices).
    uint8_t* lhi = epi;
    uint8_t* llo = epi + kTileM * Rk * 2;
    named_barrier(1, kConsumerThreads);  // the previous tile's stores have read the staged outputs
    const int q4 = Rk / 4;               // 4-rank pieces per row
    // Four float4 loads in flight per thread before any is converted (one dependent L2 round
    // trip per 4 pieces instead of per piece: the epilogue's global loads showed as the GEMM's
    // long-scoreboard stalls, v6).
    for (int i0 = threadIdx.x; i0 < kTileM * q4; i0 += 4 * kConsumerThreads) {
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int i = i0 + u * kConsumerThreads, m = i / q4, r = (i % q4) * 4;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < kTileM * q4 && r < Rpad) v[u] = *reinterpret_cast<const float4*>(&p.lact[(mt * kTileM + m) * Rpad + r]);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int i = i0 + u * kConsumerThreads, m = i / q4, r = (i % q4) * 4;
        if (i >= kTileM * q4) break;
        const float f[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
        uint16_t hi[4], lo[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const __nv_bfloat16 hb = __float2bfloat16_rn(f[e]);
          hi[e] = __bfloat16_as_ushort(hb);
          lo[e] = __bfloat16_as_ushort(__float2bfloat16_rn(__fsub_rn(f[e], __bfloat162float(hb))));
        }
        const int off = (r / 8) * (kTileM * 16) + (m / 8) * 128 + (m % 8) * 16 + (r % 8) * 2;
        *reinterpret_cast<uint2*>(lhi + off) = make_uint2(hi[0] | uint32_t(hi[1]) << 16, hi[2] | uint32_t(hi[3]) << 16);
        *reinterpret_cast<uint2*>(llo + off) = make_uint2(lo[0] | uint32_t(lo[1]) << 16, lo[2] | uint32_t(lo[3]) << 16);
      }
    }
    fence_proxy_async();  // generic-proxy stores, read next by the wgmma (async proxy)
    named_barrier(1, kConsumerThreads);
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
    // Register a(r) (r = 0..3: (n0, k0), (n1, k0), (n0, k0 + 8), (n1, k0 + 8)) of the hi or lo part.
    auto up_reg = [&](const UpVals& u, int r, bool low) -> uint32_t {
      uint32_t bits[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float x = u.v[(r / 2) * 4 + (r % 2) * 2 + e];
        const __nv_bfloat16 hb = __float2bfloat16_rn(x);
        bits[e] = __bfloat16_as_ushort(low ? __float2bfloat16_rn(__fsub_rn(x, __bfloat162float(hb))) : hb);
      }
      return bits[0] | bits[1] << 16;
    };
    auto finish = [&](auto hc) {
      constexpr int h = decltype(hc)::value;
      const int64_t n0 = n_cta + 64 * (NH * wg + h) + rw, n1 = n0 + 8;
      // One k16 step at a time, completed before the next step's A registers are computed: the
      // wgmma reads its register operand asynchronously (v5's first form, with all steps in
      // flight, gave wrong results in some instantiations).
      // wcscales and bias first: their loads overlap the low-rank steps.
      const float wc0 = p.wcscales[n0], wc1 = p.wcscales[n1];
      const float b0 = p.bias[n0], b1 = p.bias[n1];
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
        if constexpr (PN == 64) {
          wgmma_m64n128k16_bf16_rs(part0, ahi, dhi, kk > 0 ? 1u : 0u);
          wgmma_m64n128k16_bf16_rs(part0, ahi, dlo, 1u);
          if constexpr (!BF16) wgmma_m64n128k16_bf16_rs(part0, alo, dhi, 1u);
        } else {  // activation rows 0-63 into part0, 64-127 into part1 (8 core-matrix rows on)
          wgmma_m64n64k16_bf16_rs(part0, ahi, dhi, kk > 0 ? 1u : 0u);
          wgmma_m64n64k16_bf16_rs(part0, ahi, dlo, 1u);
          if constexpr (!BF16) wgmma_m64n64k16_bf16_rs(part0, alo, dhi, 1u);
          wgmma_m64n64k16_bf16_rs(part1, ahi, dhi + (1024 >> 4), kk > 0 ? 1u : 0u);
          wgmma_m64n64k16_bf16_rs(part1, ahi, dlo + (1024 >> 4), 1u);
          if constexpr (!BF16) wgmma_m64n64k16_bf16_rs(part1, alo, dhi + (1024 >> 4), 1u);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(part0);
        fence_regs(part1);
      };
      for (int kk = 0; kk < Rk / 16; kk += 2) {
        const bool two = kk + 1 < Rk / 16;
        const UpVals u0 = up_load(n0, n1, 16 * kk + 2 * t);
        const UpVals u1 = up_load(n0, n1, two ? 16 * (kk + 1) + 2 * t : Rpad);  // Rpad: zeros, no loads
        step(u0, kk);
        if (two) step(u1, kk + 1);
      }
      fence_regs(part0);
      fence_regs(part1);
      // u of activation row 8 J + 2 t + e % 2: element 4 J + e of part0 (PN = 64); for PN = 32
      // part0 holds J < 8, part1 J >= 8.
      auto up = [&](int J, int e) -> float {
        if constexpr (PN == 64) return part0[4 * J + e];
        else return J < 8 ? part0[4 * J + e] : part1[4 * (J - 8) + e];
      };
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        float2 rs = make_float2(1.0f, 1.0f);
        if constexpr (FP8) rs = __ldg(reinterpret_cast<const float2*>(p.row_scale + mt * kTileM + 8 * j + 2 * t));
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if constexpr (HALF_ACC) {
            const float2 hv = H::unpack(hacc[h][2 * j + e / 2]);
            v[e] = (e % 2) ? hv.y : hv.x;
          } else {
            v[e] = acc[h][4 * j + e];
          }
          if constexpr (FP8) v[e] = __fmul_rn(v[e], (e % 2) ? rs.y : rs.x);  // §5: (acc * s_row) * alpha
          v[e] = __fmul_rn(v[e], p.alpha);
          v[e] = __fadd_rn(__fmul_rn(v[e], e < 2 ? wc0 : wc1), e < 2 ? b0 : b1);
          v[e] = __fadd_rn(v[e], up(j, e));
        }
        if constexpr (HALF_ACC) {
          hacc[h][2 * j] = H::pack(v[0], v[1]);  // the output values, rounded to T
          hacc[h][2 * j + 1] = H::pack(v[2], v[3]);
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[h][4 * j + e] = v[e];
        }
      }
    };
    finish(Int<0>{});
    if constexpr (NH == 2) finish(Int<1>{});

    // Staged transposed ([m][n]) for row-contiguous stores of y.
    uint16_t* out = reinterpret_cast<uint16_t*>(epi);
    named_barrier(1, kConsumerThreads);  // every warpgroup's low-rank wgmmas have read lhi / llo
    auto stage_out = [&](auto hc) {
      constexpr int h = decltype(hc)::value;
      const int c0 = 64 * (NH * wg + h) + rw;
#pragma unroll
      for (int j = 0; j < 16; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          uint16_t bits;
          if constexpr (HALF_ACC) {
            const uint32_t w2 = reinterpret_cast<const uint32_t&>(hacc[h][2 * j + e / 2]);
            bits = uint16_t((e % 2) ? w2 >> 16 : w2 & 0xFFFFu);
          } else {
            bits = H::from_f32(acc[h][4 * j + e]);
          }
          out[(8 * j + 2 * t + (e % 2)) * C::kOutStride + c0 + 8 * (e / 2)] = bits;
        }
    };
    stage_out(Int<0>{});
    if constexpr (NH == 2) stage_out(Int<1>{});
    named_barrier(1, kConsumerThreads);
    const int64_t m_base = mt * kTileM;
    const int rows = p.M - m_base < kTileM ? int(p.M - m_base) : kTileM;
    const int cols = p.N - n_cta < C::kRows ? int(p.N - n_cta) : C::kRows;
    if (cols == C::kRows && p.N % 8 == 0) {
      constexpr int kVecs = C::kRows / 8;  // 16-byte stores per output row
      for (int i = threadIdx.x; i < rows * kVecs; i += kConsumerThreads) {
        const int r = i / kVecs, c = (i % kVecs) * 8;
        *reinterpret_cast<uint4*>(p.y + (m_base + r) * p.N + n_cta + c) =
            *reinterpret_cast<const uint4*>(out + r * C::kOutStride + c);
      }
    } else {
      for (int i = threadIdx.x; i < rows * C::kRows; i += kConsumerThreads) {
        const int r = i / C::kRows, c = i % C::kRows;
        if (c < cols) p.y[(m_base + r) * p.N + n_cta + c] = out[r * C::kOutStride + c];
      }
    }
  }
}

template <bool BF16, GemmMode MODE, int SKIP, GemmTile TILE, int NH = kTileNH<TILE>>
__global__ void __launch_bounds__(kThreads, 1)
    w4a4_gemm_kernel(const GemmParams p, const int64_t n_tiles, const int64_t total) {
  using C = Config<NH>;
  constexpr int S = C::kStages;
  extern __shared__ __align__(128) uint8_t smem[];
  Stage<NH>* stages = reinterpret_cast<Stage<NH>*>(smem);
  uint8_t* epi = smem + S * sizeof(Stage<NH>);
  uint64_t* full = reinterpret_cast<uint64_t*>(epi + C::kEpiBytes);
  uint64_t* empty = full + S;

  const int64_t G = p.K / kGroup;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr bool FP8 = MODE == GemmMode::FP8;
  constexpr uint32_t kScaleBytes = MODE == GemmMode::HALF ? 2 * kTileM : 4 * kTileM;  // one scale vector
  constexpr uint32_t kAScaleBytes = FP8 ? 0 : kScaleBytes;  // FP8: row scales in the epilogue instead
  constexpr uint32_t kStageTxBytes = kCodeTileBytes + NH * (kWeightTileBytes + kScaleBytes) + kAScaleBytes;

  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(&full[s], 1);                  // the producer's arrive_expect_tx
      mbar_init(&empty[s], kConsumerThreads);  // every consumer thread
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (warp >= kConsumerWarps) {
    // Producer warpgroup: gives registers away; its first thread feeds the stages, running ahead
    // across tile boundaries.
    setmaxnreg_dec<24>();
    if (warp == kConsumerWarps && lane == 0) {
      const uint8_t* asc = static_cast<const uint8_t*>(p.ascale);
      const uint8_t* wsc = static_cast<const uint8_t*>(p.wscale);
      uint32_t it = 0;
      for (int64_t tile = blockIdx.x; tile < total; tile += gridDim.x) {
        const int64_t ct = tile % n_tiles, mt = tile / n_tiles;
        for (int64_t g = 0; g < G; ++g, ++it) {
          const int s = int(it % S);
          if (it >= uint32_t(S)) mbar_wait(&empty[s], (it / S - 1) & 1);
          Stage<NH>& st = stages[s];
          if constexpr (SKIP & 4) {  // profiling: the stages are filled once, then only re-armed
            if (it >= uint32_t(S)) {
              mbar_arrive(&full[s]);
              continue;
            }
          }
          mbar_arrive_expect_tx(&full[s], kStageTxBytes);
          if constexpr (SKIP & 8) {  // profiling: the same bytes in four copies
            for (int q = 0; q < 4; ++q)
              bulk_copy_g2s(st.codes + q * (kCodeTileBytes / 4), p.codes + (mt * G + g) * kCodeTileBytes + q * (kCodeTileBytes / 4),
                            kCodeTileBytes / 4, &full[s]);
          } else {
            bulk_copy_g2s(st.codes, p.codes + (mt * G + g) * kCodeTileBytes, kCodeTileBytes, &full[s]);
          }
#pragma unroll
          for (int j = 0; j < NH; ++j) {
            const int64_t nt = NH * ct + j;
            bulk_copy_g2s(st.weights[j], p.wfrag + (nt * G + g) * kWeightTileBytes, kWeightTileBytes, &full[s]);
            bulk_copy_g2s(st.wscale[j], wsc + (nt * G + g) * kScaleBytes, kScaleBytes, &full[s]);
          }
          if constexpr (!FP8) bulk_copy_g2s(st.ascale, asc + (mt * G + g) * kScaleBytes, kScaleBytes, &full[s]);
        }
      }
    }
  } else {
    setmaxnreg_inc<240>();
    consume<BF16, MODE, SKIP, TILE>(p, stages, full, empty, epi, n_tiles, total);
  }
}

int sm_count() {
  int dev = 0, n = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute(SMs)");
  return n;
}

template <bool BF16, GemmMode MODE, int SKIP, GemmTile TILE>
void launch_typed(const GemmParams& p, int sms, cudaStream_t stream) {
  using C = Config<kTileNH<TILE>>;
  auto kernel = w4a4_gemm_kernel<BF16, MODE, SKIP, TILE>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::kSmemBytes)),
        "cudaFuncSetAttribute(w4a4_gemm_kernel)");
  // The weight buffers hold weight_tiles(N) tiles, a multiple of kCtaWeightTiles (sm90_layout.hpp).
  const int64_t n_tiles = ceil_div(p.N, C::kRows), total = n_tiles * ceil_div(p.M, kTileM);
  const unsigned grid = unsigned(total < sms ? total : sms);
  kernel<<<grid, kThreads, C::kSmemBytes, stream>>>(p, n_tiles, total);
  check_launch("w4a4_gemm_kernel");
}

// NH = 1 unless asked: measured faster at every benchmark shape (docs/perf-notes.md v6: with
// the float32 accumulators of 256 rows only two n64 partial sums fit the registers, too little
// tensor-core work in flight; the loads, which 256 rows reduce, are not what bounds the kernel).
GemmTile pick_tile(const GemmParams& p) { return p.tile == GemmTile::AUTO ? GemmTile::ROWS128 : p.tile; }

template <bool BF16, GemmMode MODE, int SKIP>
void launch_tile(const GemmParams& p, cudaStream_t stream) {
  const int sms = sm_count();
  if constexpr (SKIP != 0) {  // profiling: the automatic tile only
    launch_typed<BF16, MODE, SKIP, GemmTile::ROWS128>(p, sms, stream);
  } else {
    switch (pick_tile(p)) {
      case GemmTile::ROWS256: return launch_typed<BF16, MODE, SKIP, GemmTile::ROWS256>(p, sms, stream);
      default: return launch_typed<BF16, MODE, SKIP, GemmTile::ROWS128>(p, sms, stream);
    }
  }
}

}  // namespace

void launch_w4a4_gemm(const GemmParams& p, cudaStream_t stream) {
  if (p.M == 0) return;
  if (p.profile_skip != 0) {  // profiling variants: bf16, fp32 accumulation only
    if (p.dtype != HalfType::BF16 || p.mode != GemmMode::FP32)
      throw UnsupportedError("cuda-sm90: GEMM profiling variants exist for bf16 fp32 accumulation only");
    switch (p.profile_skip) {
      case 1: launch_tile<true, GemmMode::FP32, 1>(p, stream); return;
      case 2: launch_tile<true, GemmMode::FP32, 2>(p, stream); return;
      case 3: launch_tile<true, GemmMode::FP32, 3>(p, stream); return;
      case 4: launch_tile<true, GemmMode::FP32, 4>(p, stream); return;
      case 11: launch_tile<true, GemmMode::FP32, 11>(p, stream); return;
      default: throw UnsupportedError("cuda-sm90: GEMM profile_skip must be 0..4 or 11");
    }
  }
  const bool bf16 = p.dtype == HalfType::BF16;
  switch (p.mode) {
    case GemmMode::FP32: bf16 ? launch_tile<true, GemmMode::FP32, 0>(p, stream) : launch_tile<false, GemmMode::FP32, 0>(p, stream); break;
    case GemmMode::HALF: bf16 ? launch_tile<true, GemmMode::HALF, 0>(p, stream) : launch_tile<false, GemmMode::HALF, 0>(p, stream); break;
    case GemmMode::FP8: bf16 ? launch_tile<true, GemmMode::FP8, 0>(p, stream) : launch_tile<false, GemmMode::FP8, 0>(p, stream); break;
  }
}

}  // namespace svdquant::cuda
