// The nvfp4 activation kernel of the cuda-sm90 backend (launch_nvfp4_act, nvfp4_kernels.hpp):
// one pass over x that applies the smoothing (NUMERICS.md §2), quantizes every group of 16 to an
// e4m3 scale and e2m1 codes (§3, bit-exact with the CPU reference), writes the dequantized values
// q·s as fp16 into the GEMM's tiled layout (nv_act_index), and computes the low-rank down
// projection l = x · proj_down (§4.3) with bf16 / fp16 mma.sync accumulating in float32 (products
// of two T values are exact in float32: §4.3's float32 sum in another order, which it allows).
//
// Work split. A block is 8 warps; a warp owns a row tile of 16 rows and works through K steps of
// 64 columns. The block holds wr row tiles (1, 2 or 4; wk = 8 / wr warps per row tile, "k-sets")
// and one chunk of chunk_steps K steps (blockIdx.y); k-set ks takes the chunk's steps ks, ks + wk,
// ... (the 4 warps of a k-set at wr = 4 read the same proj_down fragments and reciprocals at about
// the same time: L1 hits). nv_act_split picks the largest wr whose blocks, with up to 8 chunks,
// fill at least half of one wave of resident blocks, and then as many chunks as fit in that wave.
// H200 (132 SMs), R = 32, K = 3072, 2 blocks per SM: M = 4608: wr 4, 3 chunks of 16 steps, 216
// blocks, 8 steps per warp; M = 256: wr 1, 6 chunks of 8 steps, 96 blocks, one step per warp.
//
// Low-rank sums across chunks: the chunks of a row block are one thread-block cluster (gridDim.y
// = chunks <= 8). Each warp leaves its 16 x Rpad sums in its own ring region, the block adds its
// k-sets in k-set order, and after a cluster barrier each block of the cluster adds one slice of
// the row block's sums over the cluster's blocks in rank order (distributed shared memory) and
// writes lact; a second barrier keeps every block's shared memory alive until all have read it.
// The result does not depend on scheduling (fixed orders, no atomics, no scratch in global
// memory). Without a low-rank branch the chunks are independent (no cluster, up to 64 of them).
//
// Lane roles (compute): lane = 4 g8 + t holds rows g8 and g8 + 8 of its tile and, per step, the
// 16 consecutive columns 16 t .. 16 t + 15: one whole nvfp4 group per row, so the amax, the scale
// and its reciprocal are the lane's own (no shuffles; 2 groups per lane per step). Its 8 values of
// a row half (c = 0, 1) are one 16-byte granule; the fp16 results of a granule are one 16-byte
// store into core matrix (k % 64 / 8, m % 128 / 8) = (2 t + c, .) of the act tile: for each (row,
// c) a warp store covers 4 whole 128-byte core matrices.
//
// x ring: per warp kStages steps of 16 rows x 128 bytes in dynamic shared memory (8 KB per warp,
// 64 KB per block). The copies are laid out for the global side: copy i of a lane moves granule
// lane % 8 of row 4 i + lane / 8 (a warp copy is 4 whole 128-byte row segments), so the lanes read
// each other's copies: after cp.async.wait_group, a __syncwarp orders every lane's copies before
// every lane's reads (and the last step's reads before the refill of its stage). Granule (row rho,
// kappa) sits at rho * 8 + (kappa ^ 5 (rho & 1)): 8 lanes of a copy write one row's 8 granules,
// and the 8 lanes of a compute read (rows g8 and g8 + 1, kappa 2 t + c) find the odd row's
// granules at the other parity, so both hit 8 distinct 16-byte bank groups (the host test
// CudaNvfp4ActHost.RingSwizzleIsConsistentAndConflictFree checks it). Padding rows and columns >= K
// are zero-filled by the copy (src-size 0), reading nothing.
//
// Low-rank without staging, transposed: l^T (R x 16 rows) += proj_down^T (A, 16 ranks x 16 k,
// from pack_nv_proj_down) * x^T (B, 16 k x 8 rows). The B fragment of lane (g8, t) is 2 k-slot
// pairs of row g8 of an 8-row n tile, so both come from one row: the lane's raw x words, straight
// from the 16-byte shared-memory loads (as A operands, rows g8 and g8 + 8 would have to be
// interleaved into one register quad: 16 moves per step). In MMA j (0..3) of a step, lane t's k
// slots {2t, 2t+1} are columns 16 t + 4 j + {0, 1} (word 2 j) and slots {2t+8, 2t+9} columns
// 16 t + 4 j + {2, 3} (word 2 j + 1); the four lanes t cover 16 columns. A follows the same k
// permutation, and each A fragment serves both n tiles (rows g8 and g8 + 8).
//
// Registers (ptxas, sm_90a, no spills): R = 0 80 at 3 blocks per SM; R = 32 / 64 ~126 / 128 at 2
// (at 80 ptxas spills ~200 bytes: the step keeps ~64 registers of fragment and reciprocal loads in
// flight); R = 96 / 128 ~230 / ~254 at 1. SASS of the common path of one step (32 values per
// lane, bf16, R = 32): ~530 instructions, of which 100 FFMA (smoothing, rounding), 66 FMUL, 64
// T <-> float32 unpacking, 34 F2FP, 32 FMNMX, 30 HMNMX2, 16 HMMA, 16 HMUL2, 16 LDG, 4 LDS, 4 STG,
// 4 LDGSTS; R = 0: ~513.
//
// Smoothing: the reciprocal pairs of smooth_div.hpp (two float32 operations, exactly the division
// where |q| is in [2^-100, 2^126) and the divisor has a pair). Only the top of that range needs a
// test here: a group's |xs| maximum (needed for the amax anyway) at or above 2^126 (bf16) or
// non-finite (fp16) sends that group (in a warp-uniform branch) to the IEEE division (__fdiv_rn),
// which also catches non-finite x and divisors without a pair (their fast quotient is NaN). A
// quotient below 2^-100 changes no output: a group whose amax is that small has the scale
// e4m3(amax / 6) = 0, and in any other group |xs| * (1 / s) <= 2^-100 * 2^9 rounds to code 0. The
// sign of a zero xs changes nothing either (code 0 is +0 whatever the sign).
//
// Scale: s = e4m3(min(amax * f32(1/6), 448)) by the hardware conversion with satfinite (which
// saturates exactly what the min clamps; RNE with subnormals, as §5's codes use it), converted back
// to fp16 by one instruction for both rows, and 1 / s by __frcp_rn (IEEE, like §3's division).
// A non-finite group gets the byte 0x7F, whose fp16 is NaN: its dequantized values are q · NaN =
// NaN whatever q is, and its test codes are set to 0.
//
// Codes and dequantization: v = xs * (1 / s) is rounded to the e2m1 grid by adding and subtracting
// M = 1.5 * 2^22 * max(2^floor(log2 |v|), 1) (two fma with the exact power of two): the ulp of M
// is 0.5 for |v| < 2, 1 for |v| in [2, 4), 2 for [4, 8), so the sum rounds v to the grid's step in
// its binade, ties to even, which is e2m1_rne's tie rule (the even multiple of the step is the even
// code). Results of magnitude >= 8 (only |v| >= 7) saturate to 6: the pair is converted to f16x2
// (exact) and clamped by min.xorsign.abs(h, 6) (sign(h) * min(|h|, 6)); a value rounding to 0
// gives +0 (M - M), code 0. The product q · s of an e2m1 value and an e4m3 scale has at most 6
// significant bits and lies in [2^-10, 2688], so the f16x2 multiply by (s, s) is exact. M would
// overflow for |v| >= 2^106; v is that large only if amax >= 2^97 (1 / s <= 2^9), which a
// warp-uniform test per step (bf16 only: fp16 values stay below 2^16) sends to a path that clamps
// v to [-6, 6] first.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <atomic>
#include <string>

#include "act_primitives.cuh"
#include "cuda_check.hpp"
#include "nvfp4_kernels.hpp"
#include "nvfp4_primitives.cuh"
#include "pdl.hpp"
#include "smooth_div.hpp"

namespace svdquant::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kStages = 4;                           // x ring depth per warp: 3 steps in flight while one is computed
constexpr int kStageGranules = 16 * 8;               // one step of a warp: 16 rows x 8 granules of 16 bytes
constexpr int kWarpRing = kStages * kStageGranules;  // uint4 per warp (8 KB)
constexpr int kRingBytes = kWarps * kWarpRing * 16;  // 64 KB per block (dynamic shared memory)
constexpr int kMaxCluster = 8;                       // portable cluster size: the chunks of a low-rank kernel
constexpr int kMaxChunksR0 = 64;                     // chunks of the kernel without low-rank sums
// Blocks per SM the register budget is set for (the ring allows 3). Without low-rank sums 3 (80
// registers, no spills); R = 32 / 64 2 (~123 / ~127 registers: at 80, ptxas spills ~200 bytes);
// R = 96 / 128 1.
constexpr int min_blocks(int rt) { return rt == 0 ? 3 : rt <= 8 ? 2 : 1; }
template <int RT> constexpr int kMinBlocks = min_blocks(RT);

constexpr float kRoundMagic = 6291456.0f;  // 1.5 * 2^22: ulp 0.5
constexpr uint32_t kSix2 = 0x46004600u;    // f16x2 (6, 6)

// How a launch splits the work (see the header).
struct Split {
  int wr = 1;           // row tiles of 16 per block; 8 / wr warps (k-sets) per row tile
  int chunk_steps = 1;  // K steps of 64 per block
  int chunks = 1;       // gridDim.y (the cluster size when Rpad > 0)
};

// max(|a|, |b|) per T half (NaN if either is NaN); the sign bits are garbage (xorsign), the caller
// clears them.
template <bool BF16>
__device__ __forceinline__ uint32_t absmax2(uint32_t a, uint32_t b) {
  uint32_t d;
  if constexpr (BF16) asm("max.NaN.xorsign.abs.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  else asm("max.NaN.xorsign.abs.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
// sign(h) * min(|h|, 6) per f16 half.
__device__ __forceinline__ uint32_t clamp6(uint32_t h) {
  uint32_t d;
  asm("min.xorsign.abs.f16x2 %0, %1, %2;" : "=r"(d) : "r"(h), "r"(kSix2));
  return d;
}
__device__ __forceinline__ uint32_t hmul2(uint32_t a, uint32_t b) {
  const __half2 r = __hmul2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
// A lane constant the compiler must keep in a register: without this, ptxas recomputes the
// copy and read offsets, row tests and swizzles from the thread index at every step (~60
// instructions per step of 32 elements per lane).
__device__ __forceinline__ uint32_t pinned(uint32_t v) {
  asm volatile("" : "+r"(v));
  return v;
}

// v rounded to the e2m1 step of its binade (see the header), for |v| < 2^106.
__device__ __forceinline__ float e2m1_round(float v) {
  const float e = fmaxf(__uint_as_float(__float_as_uint(v) & 0x7F800000u), 1.0f);
  return __fmaf_rn(e, -kRoundMagic, __fmaf_rn(e, kRoundMagic, v));
}

// The |xs| maximum of one row's group (8 T pairs) as T bits.
template <bool BF16>
__device__ __forceinline__ uint32_t group_amax(const uint32_t (&xs)[8]) {
  const uint32_t m = absmax2<BF16>(absmax2<BF16>(absmax2<BF16>(xs[0], xs[1]), absmax2<BF16>(xs[2], xs[3])),
                                   absmax2<BF16>(absmax2<BF16>(xs[4], xs[5]), absmax2<BF16>(xs[6], xs[7])));
  return max(m & 0x7FFFu, (m >> 16) & 0x7FFFu);  // unsigned: NaN above Inf above every finite value
}

// §3 for one row's group: the e2m1 values q (f16x2 pairs, exact) of xs * (1 / s).
template <bool BF16, bool CLAMP>
__device__ __forceinline__ void quantize_group(const uint32_t (&xs)[8], float rcp, uint32_t (&q)[8]) {
  using H = HalfOps<BF16>;
#pragma unroll
  for (int w = 0; w < 8; ++w) {
    float a, b;
    H::unpack2(xs[w], a, b);
    float va = __fmul_rn(a, rcp), vb = __fmul_rn(b, rcp);
    if constexpr (CLAMP) {
      va = fminf(fmaxf(va, -6.0f), 6.0f);
      vb = fminf(fmaxf(vb, -6.0f), 6.0f);
    }
    const __half2 h = __floats2half2_rn(e2m1_round(va), e2m1_round(vb));  // exact: grid values or >= 8
    q[w] = clamp6(*reinterpret_cast<const uint32_t*>(&h));
  }
}

// The e2m1 code bytes of 4 f16x2 grid values (the tests' copy of the codes).
__device__ __forceinline__ uint32_t code_bytes(const uint32_t* q) {
  uint32_t c = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t h = q[i / 2] >> (16 * (i % 2));
    c |= nv::e2m1_rne(__half2float(__ushort_as_half(uint16_t(h)))) << (8 * i);
  }
  return c;
}

// RT: rank tiles of 8 (Rpad = 8 RT); 0 without a low-rank branch. Grid: (row blocks, chunks).
template <bool BF16, int RT>
__global__ void __launch_bounds__(kThreads, kMinBlocks<RT>) nvfp4_act_kernel(const Nvfp4ActParams p, const Split sp) {
  using H = HalfOps<BF16>;
  constexpr int R = RT * 8;
  pdl_wait();  // launched with PDL (pdl.hpp): no global access before the previous kernel is done
  pdl_launch_dependents();
  extern __shared__ uint4 ring[];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane / 4, t = lane % 4;
  const int wk = kWarps / sp.wr, rt = warp % sp.wr, ks = warp / sp.wr;
  const int64_t M = p.M;
  const int K = int(p.K), S = int(p.Kpad / kNvTileK);
  const int64_t m0 = (int64_t(blockIdx.x) * sp.wr + rt) * 16;  // the warp's row tile
  const int c_beg = int(blockIdx.y) * sp.chunk_steps, c_end = min(c_beg + sp.chunk_steps, S);
  const int s_beg = c_beg + ks;
  const int n = (m0 < M && s_beg < c_end) ? (c_end - s_beg + wk - 1) / wk : 0;  // this warp's steps

  uint4* const wring = ring + warp * kWarpRing;
  const uint32_t wring_s = uint32_t(__cvta_generic_to_shared(wring));
  // Copies: copy i of this lane is granule kap of row 4 i + lane / 8 (see the header); xg is this
  // lane's row lane / 8 at the next step to issue, rowoff[i] row 4 i + lrow relative to it and
  // sz[i] its copy size (0 and 0 for padding rows: their copies read nothing).
  const int lrow = lane / 8, kap = lane % 8;
  const uint32_t copy_dst = pinned(wring_s + uint32_t((lrow * 8 + (kap ^ (5 * (lrow & 1)))) * 16));
  uint32_t rowoff[4], sz[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool ok = m0 + 4 * i + lrow < M;
    rowoff[i] = pinned(ok ? uint32_t(4 * i * K) : 0u);
    sz[i] = pinned(ok ? 16u : 0u);
  }
  const uint16_t* xg = p.x + (m0 + lrow < M ? m0 + lrow : 0) * p.K + int64_t(s_beg) * kNvTileK + 8 * kap;
  int col_next = s_beg * kNvTileK + 8 * kap;
  auto issue = [&](int j) {  // the copies of this warp's step j (the next one) into stage j % kStages
    const uint32_t dst = copy_dst + uint32_t((j % kStages) * kStageGranules * 16);
    const bool cok = col_next < K;
    const uint16_t* const src = cok ? xg : p.x;  // granules past K read nothing
#pragma unroll
    for (int i = 0; i < 4; ++i) cp_async16(dst + uint32_t(i * 4 * 8 * 16), src + rowoff[i], cok ? sz[i] : 0u);
    xg += wk * kNvTileK;
    col_next += wk * kNvTileK;
  };
#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) {
    if (j < n) issue(j);
    cp_async_commit();  // empty groups too: wait_group counts them
  }
  // The first step's fragments and reciprocals, into L2 while x is on its way (they are read only
  // after the wait).
  if (n > 0) {
    if constexpr (RT > 0) {
      const char* b = reinterpret_cast<const char*>(p.pdfrag) + int64_t(s_beg) * RT * 1024;
      for (int q = lane; q < RT * 8; q += 32) prefetch_l2(b + q * 128);
    }
    if (lane < 4) prefetch_l2(reinterpret_cast<const char*>(p.smooth_rcp) + int64_t(s_beg) * 512 + lane * 128);  // 512 bytes a step
  }

  // Running pointers at this warp's next step. act: this lane's granule (row g8 + 8 r, c) is
  // uint4 ap[c * 128 + r * 8] (tile (m0 / 128, s), core matrix (2 t + c, m0 % 128 / 8 + r), row
  // g8); a step is one tile further (1024 uint4).
  uint4* ap = reinterpret_cast<uint4*>(p.act + ((m0 / kNvTileM) * S + s_beg) * (kNvTileM * kNvTileK) +
                                       (m0 % kNvTileM / 8) * 64 + g8 * 8) +
              t * 2 * 128;
  const float4* rc = reinterpret_cast<const float4*>(p.smooth_rcp) + s_beg * 32 + t;  // word w of a step at 4 w
  const uint4* pd = reinterpret_cast<const uint4*>(p.pdfrag) + int64_t(s_beg) * RT * 64 + lane;  // RT * 64 uint4 per step
  int k0 = s_beg * kNvTileK + 16 * t;  // this lane's first column
  // Which of rows g8, g8 + 8 are real (bits 0, 1).
  const uint32_t row_ok = pinned(uint32_t(m0 + g8 < M) | (uint32_t(m0 + g8 + 8 < M) << 1));
  // Shared-memory addresses of this lane's granules (row g8, c) in stage 0; row g8 + 8 is 1024
  // bytes on (8 rows of 128 bytes), a stage kStageGranules * 16.
  const int swz = 5 * (g8 & 1);  // the granule swizzle of rows g8 and g8 + 8
  const uint32_t rd[2] = {pinned(wring_s + uint32_t((g8 * 8 + ((2 * t) ^ swz)) * 16)),
                          pinned(wring_s + uint32_t((g8 * 8 + ((2 * t + 1) ^ swz)) * 16))};
  const bool want_codes = p.codes != nullptr;

  // l^T accumulators: acc[u][r][e] is rank 16 u + g8 + 8 (e / 2) of row 8 r + 2 t + (e % 2) of the tile.
  float acc[RT > 0 ? RT / 2 : 1][2][4] = {};

#pragma unroll 1
  for (int j = 0; j < n; ++j) {
    cp_async_wait<kStages - 2>();  // step j has landed (this lane's copies) ...
    __syncwarp();                  // ... and every lane's; every lane is done with step j - 1's stage
    if (j + kStages - 1 < n) issue(j + kStages - 1);  // into step j - 1's stage
    cp_async_commit();
    const uint32_t st = uint32_t((j % kStages) * kStageGranules * 16);

    // Per granule c (columns k0 + 8 c .. + 7 of rows g8, g8 + 8): the low-rank MMAs on raw x and
    // §2's fast form; xs[r][w] holds columns k0 + 2 w, k0 + 2 w + 1 of row half r.
    uint32_t xs[2][8];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const uint4 X0 = lds128(rd[c] + st), X1 = lds128(rd[c] + st + 1024);
      if constexpr (RT > 0) {  // l^T += pd^T x^T: MMAs j = 2 c, 2 c + 1 of each rank tile of 16
#pragma unroll
        for (int u = 0; u < RT / 2; ++u)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const uint4 f = __ldg(pd + (u * 4 + 2 * c + h) * 32);
            const uint32_t a[4] = {f.x, f.y, f.z, f.w};
            mma_16816<BF16>(acc[u][0], a, h == 0 ? X0.x : X0.z, h == 0 ? X0.y : X0.w);
            mma_16816<BF16>(acc[u][1], a, h == 0 ? X1.x : X1.z, h == 0 ? X1.y : X1.w);
          }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float4 q = __ldg(rc + 4 * (4 * c + i));
        float a0, a1;
        H::unpack2(word(X0, i), a0, a1);
        xs[0][4 * c + i] = H::pack2(smooth_quotient(a0, SmoothRcp{q.x, q.y}), smooth_quotient(a1, SmoothRcp{q.z, q.w}));
        H::unpack2(word(X1, i), a0, a1);
        xs[1][4 * c + i] = H::pack2(smooth_quotient(a0, SmoothRcp{q.x, q.y}), smooth_quotient(a1, SmoothRcp{q.z, q.w}));
      }
    }
    uint32_t amax16[2] = {group_amax<BF16>(xs[0]), group_amax<BF16>(xs[1])};
    constexpr uint32_t kHi = BF16 ? 0x7E80u : 0x7C00u;  // |xs| >= 2^126 (bf16) or non-finite
    if (__any_sync(0xFFFFFFFFu, amax16[0] >= kHi || amax16[1] >= kHi)) {
      // Rare (non-finite x, huge quotients, divisors without a pair): the IEEE division for the
      // groups that failed (only real columns: zero-filled ones have xs = 0). x again from the
      // stage, which is refilled only next step.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (amax16[r] >= kHi) {
          const uint4* sm = reinterpret_cast<const uint4*>(p.smooth + k0);
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const uint4 xv = lds128(rd[c] + st + 1024 * r), sv = sm[c];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              float a0, a1, b0, b1;
              H::unpack2(word(xv, i), a0, a1);
              H::unpack2(word(sv, i), b0, b1);
              xs[r][4 * c + i] = H::pack2(__fdiv_rn(a0, b0), __fdiv_rn(a1, b1));
            }
          }
          amax16[r] = group_amax<BF16>(xs[r]);
        }
      }
    }

    // The scales of both rows: e4m3 bytes (row 0 low), their fp16 pair, reciprocals.
    const bool fin[2] = {amax16[0] < H::kInf, amax16[1] < H::kInf};
    uint32_t sbits = __nv_cvt_float2_to_fp8x2(
        make_float2(__fmul_rn(H::to_f32(amax16[0]), __uint_as_float(0x3E2AAAABu)),   // f32(1/6)
                    __fmul_rn(H::to_f32(amax16[1]), __uint_as_float(0x3E2AAAABu))),
        __NV_SATFINITE, __NV_E4M3);
    if (!fin[0]) sbits = (sbits & 0xFF00u) | 0x007Fu;
    if (!fin[1]) sbits = (sbits & 0x00FFu) | 0x7F00u;
    const __half2_raw sh = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(sbits), __NV_E4M3);
    const uint32_t s2[2] = {uint32_t(sh.x) * 0x10001u, uint32_t(sh.y) * 0x10001u};
    float rcp[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float s = __half2float(__ushort_as_half(r == 0 ? sh.x : sh.y));
      rcp[r] = s > 0.0f ? __frcp_rn(s) : 0.0f;  // 0 for s = 0 (codes 0) and NaN (any q: q · NaN = NaN)
    }

    uint32_t q[2][8];
    constexpr uint32_t kBig = 0x7000u;  // bf16 2^97: |v| could reach 2^106 (see the header)
    if (BF16 && __any_sync(0xFFFFFFFFu, amax16[0] >= kBig || amax16[1] >= kBig)) {
#pragma unroll
      for (int r = 0; r < 2; ++r) quantize_group<BF16, true>(xs[r], rcp[r], q[r]);
    } else {
#pragma unroll
      for (int r = 0; r < 2; ++r) quantize_group<BF16, false>(xs[r], rcp[r], q[r]);
    }
    if (k0 < K) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (!((row_ok >> r) & 1u)) continue;
        if (want_codes) {  // the tests' copies of the codes (0 for a non-finite group) and scales
          const int64_t m = m0 + g8 + 8 * r;
          const uint4 c4 = fin[r] ? make_uint4(code_bytes(q[r]), code_bytes(q[r] + 2), code_bytes(q[r] + 4), code_bytes(q[r] + 6))
                                  : make_uint4(0, 0, 0, 0);
          *reinterpret_cast<uint4*>(p.codes + m * p.K + k0) = c4;
          p.scales[m * (p.K / kNvGroup) + k0 / kNvGroup] = uint8_t(sbits >> (8 * r));
        }
        uint32_t o[8];  // q · s, exact in fp16
#pragma unroll
        for (int w = 0; w < 8; ++w) o[w] = hmul2(q[r][w], s2[r]);
        ap[r * 8] = make_uint4(o[0], o[1], o[2], o[3]);
        ap[128 + r * 8] = make_uint4(o[4], o[5], o[6], o[7]);
      }
    }
    ap += wk * 1024;
    rc += wk * 32;
    pd += wk * RT * 64;
    k0 += wk * kNvTileK;
  }

  if constexpr (RT > 0) {
    // This warp's 16 x R sums into its own ring region, [16][R] floats (its copies have all
    // landed: every real copy group was waited for, the later ones are empty).
    __syncwarp();  // every lane is done reading the ring
    float* const red = reinterpret_cast<float*>(wring);
#pragma unroll
    for (int u = 0; u < RT / 2; ++u)
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int e = 0; e < 4; ++e) red[(8 * r + 2 * t + e % 2) * R + 16 * u + g8 + 8 * (e / 2)] = acc[u][r][e];
    __syncthreads();
    // Element e of the block's wr x 16 x R sums (row e / R of the block, rank e % R) lives in the
    // region of its row tile's k-set 0 warp (warp e / (16 R)); k-set k's is kWarpRing * 4 * wr * k
    // floats further. The k-sets are added in k-set order into the k-set 0 region.
    const int E = sp.wr * 16 * R;
    const int kstride = kWarpRing * 4 * sp.wr;
    auto part = [&](int e) { return reinterpret_cast<float*>(ring + (e / (16 * R)) * kWarpRing) + e % (16 * R); };
    if (wk > 1) {
      for (int e = threadIdx.x; e < E; e += kThreads) {
        float* const p0 = part(e);
        float v = p0[0];
        for (int k = 1; k < wk; ++k) v += p0[k * kstride];
        p0[0] = v;
      }
    }
    const int chunks = sp.chunks;
    cg::cluster_group cluster = cg::this_cluster();
    if (chunks > 1) cluster.sync();  // every block's sums are complete and visible to the cluster
    else __syncthreads();
    // This block's slice of the row block's sums, added over the cluster's blocks in rank order.
    const int rank = chunks > 1 ? int(cluster.block_rank()) : 0;
    const int per = (E + chunks - 1) / chunks;
    const int e_end = min(E, (rank + 1) * per);
    for (int e = rank * per + int(threadIdx.x); e < e_end; e += kThreads) {
      float* const p0 = part(e);
      float v = chunks > 1 ? *cluster.map_shared_rank(p0, 0) : *p0;
      for (int q = 1; q < chunks; ++q) v += *cluster.map_shared_rank(p0, q);
      const int64_t row = int64_t(blockIdx.x) * sp.wr * 16 + e / R;
      const int col = e % R;
      if (row < M) p.lact[row * R + col] = col < p.R ? v : 0.0f;  // padding ranks: 0 (also for non-finite x)
    }
    if (chunks > 1) cluster.sync();  // no block leaves while another still reads its shared memory
  }
}

Split nv_act_split(int64_t M, int64_t Kpad, int Rpad, int sms) {
  const int64_t tiles = (M + 15) / 16, S = Kpad / kNvTileK;
  const int64_t slots = int64_t(std::max(sms, 1)) * min_blocks(Rpad / 8);  // one wave of resident blocks
  const int64_t max_chunks = std::min<int64_t>(S, Rpad > 0 ? kMaxCluster : kMaxChunksR0);
  for (int wr : {4, 2, 1}) {
    const int64_t rb = (tiles + wr - 1) / wr;
    // At most one wave (unless that leaves more than 40 % of it idle: one more chunk), at most the
    // cluster size, and at least one step per warp where K allows.
    int64_t want = slots / rb;
    if (10 * rb * want < 6 * slots) ++want;
    const int64_t chunks = std::clamp<int64_t>(want, 1, std::max<int64_t>(1, std::min(max_chunks, S / (kWarps / wr))));
    if (wr == 1 || 2 * rb * chunks >= slots) {
      const int64_t C = (S + chunks - 1) / chunks;
      return Split{wr, int(C), int((S + C - 1) / C)};
    }
  }
  return Split{};
}

template <bool BF16, int RT>
void launch_typed(const Nvfp4ActParams& p, const Split& sp, int64_t row_blocks, cudaStream_t stream) {
  static std::atomic<uint64_t> opted{0};  // the opt-in above 48 KB of dynamic shared memory, per device
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const uint64_t bit = uint64_t(1) << (dev & 63);
  if (!(opted.load(std::memory_order_acquire) & bit)) {
    check(cudaFuncSetAttribute(nvfp4_act_kernel<BF16, RT>, cudaFuncAttributeMaxDynamicSharedMemorySize, kRingBytes),
          "cudaFuncSetAttribute(nvfp4_act_kernel)");
    opted.fetch_or(bit, std::memory_order_release);
  }
  cudaLaunchAttribute attr[2] = {pdl_attribute(), {}};
  unsigned nattr = 1;
  if (RT > 0 && sp.chunks > 1) {
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = 1;
    attr[1].val.clusterDim.y = unsigned(sp.chunks);
    attr[1].val.clusterDim.z = 1;
    nattr = 2;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(row_blocks), unsigned(sp.chunks));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kRingBytes;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = nattr;
  check(cudaLaunchKernelEx(&cfg, nvfp4_act_kernel<BF16, RT>, p, sp), "cudaLaunchKernelEx(nvfp4_act_kernel)");
  check_launch("nvfp4_act_kernel");
}

template <bool BF16>
void launch_rank(const Nvfp4ActParams& p, const Split& sp, int64_t row_blocks, cudaStream_t stream) {
  switch (p.Rpad) {
  case 0: launch_typed<BF16, 0>(p, sp, row_blocks, stream); break;
  case 32: launch_typed<BF16, 4>(p, sp, row_blocks, stream); break;
  case 64: launch_typed<BF16, 8>(p, sp, row_blocks, stream); break;
  case 96: launch_typed<BF16, 12>(p, sp, row_blocks, stream); break;
  case 128: launch_typed<BF16, 16>(p, sp, row_blocks, stream); break;
  default: throw UnsupportedError("cuda-sm90: nvfp4 activation kernel: padded rank " + std::to_string(p.Rpad) + " has no kernel");
  }
}

}  // namespace

void launch_nvfp4_act(const Nvfp4ActParams& p, cudaStream_t stream) {
  if (p.M <= 0) return;
  if (p.K <= 0 || p.K % kNvGroup != 0 || p.Kpad != nv_round_up(p.K, kNvTileK) || p.R < 0 || p.R > p.Rpad ||
      (p.Rpad > 0 && (!p.pdfrag || !p.lact)) || !p.x || !p.smooth || !p.smooth_rcp || !p.act ||
      (p.codes != nullptr) != (p.scales != nullptr))
    throw Error("cuda-sm90: launch_nvfp4_act: inconsistent parameters");
  const Split sp = nv_act_split(p.M, p.Kpad, p.Rpad, sm_count());
  const int64_t row_blocks = ((p.M + 15) / 16 + sp.wr - 1) / sp.wr;
  if (p.dtype == HalfType::BF16) launch_rank<true>(p, sp, row_blocks, stream);
  else launch_rank<false>(p, sp, row_blocks, stream);
}

}  // namespace svdquant::cuda
