// The fused activation kernel of the cuda-sm90 backend: one pass over x that applies the shift
// and the smoothing (NUMERICS.md §2), quantizes every group of 64 to int4 codes and a T scale
// (§3, bit-exact with the CPU reference: the same float32 operations, each rounded once, and the
// exact reciprocal of the stored scale), and computes the low-rank down projection
// l = x · proj_down (§4.3) with bf16/fp16 tensor-core MMAs accumulating in float32. Products of
// two T values are exact in float32, so this is §4.3's float32 sum in another order (allowed).
//
// fp8 activations (§5) need the amax of a whole row before any code: the same kernel in mode
// FP8_AMAX computes xs, the low-rank sums and the rows' amax, one partial maximum per (chunk,
// group set) and row (float bits: NaN's are above every finite value's and Inf's); a second
// launch in mode FP8_CODES takes their max (order-independent), recomputes xs
// (x is L2-resident by then: pass 1 writes almost nothing), divides by s_row = amax / 448 (by the
// row's reciprocal and one correction step, exactly the division: row_div.hpp) and writes the
// e4m3 codes into the GEMM's tile layout and the row scales. This is the fallback: launch_act_quant
// sends fp8 to the single-pass kernel of fp8_act.cu, which keeps the rows' xs in shared memory
// until their amax is known, wherever its plan fits and the device can host its clusters. The
// smoothing and fp8 helpers both kernels use are in act_primitives.cuh.
//
// Work split (v6.1). A block is 8 warps over 64 rows (4 row tiles of 16) and a K chunk of C
// groups. The chunking takes as many chunks as fill one wave of resident blocks (2 per SM x 132
// SMs; 3 per SM for the R = 0 kernels, which write no partial sums), at most 32, C rounded up to
// even: M = 4608, K = 3072 gives 3 chunks of 16 groups (216 blocks; R = 0: 5 of 10, 360 blocks),
// small M keeps v6's C = 2 (M = 256: 24 chunks). Warp w takes row tile w % 4 and every
// second group of the chunk starting at w / 4. The four warps of a group set read the same
// proj_down fragments and smoothing reciprocals at the same time, so those come from L1 (without
// that sharing the fragments would cost twice x's bytes in L2 traffic).
//
// x ring (v6.1; v6 double-buffered x in registers: ~2 KB in flight per warp, 128 registers, 2
// groups per warp at M = 4608, latency-bound at 27% of copy bandwidth). Each lane cp.async's its own
// 4 x 16 bytes of a group (the bytes the lane roles below give it) into its warp's region of
// dynamic shared memory, kStages = 4 groups deep: while group i is computed, groups i+1 .. i+3 are
// in flight (6 KB per warp, ~96 KB per SM at 16 warps) and cost no registers. A lane reads back
// only what it copied itself, so cp.async.wait_group alone orders the copy before the read: no
// barrier and no bank conflicts (slot (stage * 4 + 2 h + r) * 32 + lane: a warp reads 512
// consecutive bytes; the kernels with MMAs up to R = 64 read them as 4-byte words, 4 wavefronts per
// 512 bytes either way). Padding rows are zero-filled by the copy (src-size 0). Registers (ptxas,
// sm_90a): R = 0 kernels (fp8 pass 2 included) 72-80 at 3 blocks per SM; R = 8 .. 32 82-125 at 2;
// R = 64 / 128 ~165-182 / ~210-224 at 1; no spills. 64 KB of ring per block.
//
// Weight expansion rows (v12). With the expanded-weight GEMM the layer passes the expansion's work
// along (ActQuantParams::wfrag, wexp, exp_tiles): where one wave of activation blocks leaves
// resident-block slots free (M = 4608, K = 3072: 216 blocks for 264 slots, so 48 SMs run one
// block) and the tiles fit the model of expansion_rows, the first launch gets extra grid rows
// whose blocks expand the tiles (expansion_block), and the separate expansion kernel and its
// kernel boundary drop out of the layer.
//
// The two warps of a row tile add their low-rank sums through shared memory (group set 1's ring
// region, warp order fixed); with several chunks, each block writes its 64 x R partial sums and
// the last block of a row block to finish (integer ticket) adds the chunks' partials in chunk
// order (only then the __threadfence and ticket). The result does not depend on scheduling (no
// float atomics); the ticket is reset by that last block for the next call.
//
// Lane roles: lane = 4 g8 + t holds rows g8 and g8 + 8 of its row tile and, per group, the 8
// consecutive columns 8t .. 8t+7 of each k half h (columns 32h + 8t + e): four 16-byte loads, each
// covering 64 contiguous bytes of 8 rows per warp instruction. The group amax of a row is then a
// max over the 4 lanes of that row (two xor shuffles), and the codes of a row half are 8
// consecutive bytes of the code tile (sm90_layout.hpp code_tile_offset(r, 32h + 8t): rows of 64
// bytes, so the two halves' 8-byte stores of a warp fill 8 whole rows, 512 contiguous bytes).
//
// Low-rank without staging: those x registers are used directly as mma.m16n8k16 A fragments. The
// MMA's k slots are a permutation of the 32 columns of a half: for sub-step s in {0, 1}, lane t's
// slots {2t, 2t+1} are columns 32h + 8t + 4s + {0, 1} (x word 2s) and slots {2t+8, 2t+9} columns
// 32h + 8t + 4s + {2, 3} (x word 2s + 1). Since §4.3 allows any summation order over k, only B has
// to follow the same permutation: pack_proj_down (sm90_pack.cpp) emits, for group g, half h, rank
// tile j and lane, 16 bytes whose word i is (pd[k][n], pd[k+1][n]) with k = 64 g + 32 h + 8 t + 2 i,
// n = 8 j + lane / 4 (zero for n >= R); word 2s is b0 and word 2s + 1 is b1 of sub-step s.
//
// The smoothing division uses the reciprocal pairs of smooth_div.hpp (two float32 operations,
// proven and exhaustively checked to round like the division; __fdiv_rn for the rest). A warp first
// computes the fast quotients of its whole group (both rows, both k halves) and tests their range
// on the rounded xs, 16 bits at a time, with the halfword max it needs for the amax anyway and a
// halfword min (smooth_bad: it accepts a subset of smooth_div.hpp's test). If any lane has a value
// of a real row outside the range (zeros, non-finite or extreme values: rare), the whole warp
// takes one branch in which each lane redoes the 8-value sets (row, k half) that failed with
// __fdiv_rn, reading x again from its ring slot; padding rows (valid false: zeros, whose xs no
// output reads) never ask for it, as before. The common path so has no divergent region (v6.1
// had one per 8 values: 4 per group, with their register copies). The int4
// codes avoid float-to-int conversions: q = xs * (1/s) is rounded to an integer by adding
// 1536 + 1.5 * 2^23 (ulp 1, ties to even: the magic is even), whose low 16 bits are then the fp16
// bits of 1536 + rne(q) (|q| <= 23 by the scale's definition, so the float's binade is fixed); two
// of those form an f16x2, clamped and shifted back by 1536 exactly in f16x2, and converted to two
// e4m3 bytes by one instruction (the integers -8 .. 15 are exact in both formats). The clamp is
// left out (warp-uniform) where the rows' amax shows it to be the identity, i.e. nearly always.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <atomic>

#include "act_primitives.cuh"
#include "cuda_check.hpp"
#include "fp8_act.hpp"
#include "pdl.hpp"
#include "row_div.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "smooth_div.hpp"
#include "weight_expand.cuh"

namespace svdquant::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRowTiles = 4;                  // row tiles of 16 per block
constexpr int kGroupSets = kWarps / kRowTiles;  // warps sharing a row tile (interleaved groups)
constexpr int kBlockRows = kRowTiles * 16;    // 64
constexpr int kMaxChunks = 32;
constexpr int kStages = 4;                    // x ring depth per warp: 3 groups in flight while one is computed
constexpr int kRingBytes = kWarps * kStages * 4 * 32 * 16;  // 64 KB per block (dynamic shared memory)
constexpr int kSMs = 132;                     // H100 / H200 SXM
constexpr int kWaveBlocks = 2 * kSMs;         // resident blocks of the R <= 32 kernels (2 per SM)
constexpr int kWaveBlocksR0 = 3 * kSMs;       // ... of the R = 0 kernels (3 per SM; no partial sums)
// Blocks per SM the register budget is set for: without low-rank sums (R = 0, fp8 pass 2) 3 (80
// registers, no spills); R <= 32 2 (at 3, i.e. 80 registers, ptxas spills 40-160 bytes).
template <int RT> constexpr int kMinBlocks = RT == 0 ? 3 : RT <= 4 ? 2 : 1;

enum class Mode { INT4, FP8_AMAX, FP8_CODES };

// One 32-bit word of shared memory that ptxas may not merge with its neighbours into a vector load
// (volatile; ordered after cp.async.wait_group like any access, the wait being a memory clobber).
__device__ __forceinline__ uint32_t lds32(const uint32_t* p) { return *reinterpret_cast<const volatile uint32_t*>(p); }

// §3 int4 codes of 8 xs values (4 T pairs) as 8 e4m3 bytes (see the header for the rounding).
// LO / HI: whether the clamp to qmin / qmax is applied (the kernel leaves out what it has shown
// to be the identity).
constexpr float kCodeMagic = 12609024.0f;  // 1.5 * 2^23 + 1536: bits 0x4B406600
template <bool BF16, bool LO, bool HI>
__device__ __forceinline__ uint2 int4_codes8(const uint4 xs, float rcp, __half2 lo, __half2 hi) {
  using H = HalfOps<BF16>;
  const __half2 k1536 = __halves2half2(__ushort_as_half(0x6600), __ushort_as_half(0x6600));
  uint32_t out[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float x0, x1;
    H::unpack2(word(xs, i), x0, x1);
    const uint32_t r0 = __float_as_uint(__fadd_rn(__fmul_rn(x0, rcp), kCodeMagic));
    const uint32_t r1 = __float_as_uint(__fadd_rn(__fmul_rn(x1, rcp), kCodeMagic));
    const uint32_t v = __byte_perm(r0, r1, 0x5410);  // f16x2 (1536 + rne(q0), 1536 + rne(q1))
    __half2 h = *reinterpret_cast<const __half2*>(&v);
    if constexpr (LO) h = __hmax2(h, lo);
    if constexpr (HI) h = __hmin2(h, hi);
    h = __hsub2(h, k1536);
    const __half2_raw hr = h;
    const uint32_t c = uint32_t(__nv_cvt_halfraw2_to_fp8x2(hr, __NV_SATFINITE, __NV_E4M3));
    if (i % 2 == 0) out[i / 2] = c;
    else out[i / 2] |= c << 16;
  }
  return make_uint2(out[0], out[1]);
}

// The code tile offsets of a lane's 4 stores, code_tile_offset(rr + 8 r, 32 h + 8 t) for
// rr % 16 < 8, are (that of r = h = 0) ^ 32 h + 512 r: the swizzle flips bit 5 for the other k
// half and rows 8 apart have the same swizzle (computing each one per group cost ~20 instructions).
constexpr bool code_offsets_regular() {
  for (int rr = 0; rr < kTileM; ++rr)
    for (int t = 0; t < 4; ++t)
      for (int r = 0; r < 2; ++r)
        for (int h = 0; h < 2; ++h)
          if (rr % 16 < 8 &&
              code_tile_offset(rr + 8 * r, 32 * h + 8 * t) != ((code_tile_offset(rr, 8 * t) ^ (32 * h)) + 512 * r))
            return false;
  return true;
}
static_assert(code_offsets_regular());

// The expansion blocks (expansion_block, weight_expand.cuh) are blocks of this kernel's shape and
// assemble their tiles in the x ring's memory.
static_assert(kWarps * 32 == kExpandThreads && kExpandBatch * kCodeTileBytes <= kRingBytes);

// RT: rank tiles of 8 (Rpad = 8 RT); 0 when the layer has no low-rank branch (or in FP8_CODES).
// Grid: (row blocks, act_chunks + expansion rows).
template <bool BF16, int RT, Mode MODE, bool UNS>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks<RT>)
    act_quant_kernel(const ActQuantParams p, const int chunk_groups, const int act_chunks) {
  using H = HalfOps<BF16>;
  constexpr int R = RT * 8;
  pdl_wait();  // launched with PDL (pdl.hpp): no global access before the previous kernel is done
  pdl_launch_dependents();
  if constexpr (MODE != Mode::FP8_CODES) {
    if (int(blockIdx.y) >= act_chunks) {
      extern __shared__ uint4 ring[];
      expansion_block(p.wfrag, p.wexp, unsigned(p.exp_tiles), p.exp_counters, reinterpret_cast<uint8_t*>(ring),
                      (gridDim.y - unsigned(act_chunks)) * gridDim.x);
      return;
    }
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rt = warp % kRowTiles, gs = warp / kRowTiles;
  const int g8 = lane / 4, t = lane % 4;
  const int64_t K = p.K, G = K / kGroup;
  const int64_t mrow[2] = {int64_t(blockIdx.x) * kBlockRows + rt * 16 + g8, int64_t(blockIdx.x) * kBlockRows + rt * 16 + g8 + 8};
  const bool valid[2] = {mrow[0] < p.M, mrow[1] < p.M};
  const int chunk = int(blockIdx.y), chunks = act_chunks;
  const int64_t gbeg = int64_t(chunk) * chunk_groups + gs;
  const int64_t gend = G < int64_t(chunk + 1) * chunk_groups ? G : int64_t(chunk + 1) * chunk_groups;

  const uint16_t* xrow[2] = {p.x + (valid[0] ? mrow[0] : 0) * K + 8 * t, p.x + (valid[1] ? mrow[1] : 0) * K + 8 * t};
  const float4* rcp_tab = reinterpret_cast<const float4*>(p.smooth_rcp);  // float4 = 2 columns

  // INT4 constants; FP8_CODES: the row's s_row.
  const float inv_qmax = UNS ? __uint_as_float(0x3D888889u) : __uint_as_float(0x3E124925u);
  // Clamp bounds as f16x2 values 1536 + qmin, 1536 + qmax (the codes are clamped before the shift
  // back by 1536).
  const __half2 clamp_lo = __half2half2(__ushort_as_half(uint16_t(UNS ? 0x6600 : 0x6600 - 8)));
  const __half2 clamp_hi = __half2half2(__ushort_as_half(uint16_t(UNS ? 0x6600 + 15 : 0x6600 + 7)));
  float s_row[2] = {0.0f, 0.0f}, r_row[2] = {0.0f, 0.0f};
  bool fp8_zero[2] = {true, true}, s_normal[2] = {true, true}, s_fast[2] = {true, true};
  if constexpr (MODE == Mode::FP8_CODES) {
    // The row's amax: the max of pass 1's 2 x amax_chunks partials (float bits, NaN above Inf
    // above every finite value), the 4 lanes of a row loading a quarter each, all at once.
    const int64_t Mpad = int64_t(gridDim.x) * kBlockRows;
    const int parts = 2 * p.amax_chunks;
    uint32_t amax_bits[2] = {0u, 0u};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int i = 0; i < 2 * kMaxChunks / 4; ++i) {
        const int j = t + 4 * i;
        if (valid[r] && j < parts) amax_bits[r] = max(amax_bits[r], p.row_amax[int64_t(j) * Mpad + mrow[r]]);
      }
      amax_bits[r] = max(amax_bits[r], __shfl_xor_sync(0xFFFFFFFFu, amax_bits[r], 1));
      amax_bits[r] = max(amax_bits[r], __shfl_xor_sync(0xFFFFFFFFu, amax_bits[r], 2));
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint32_t bits = valid[r] ? amax_bits[r] : 0u;
      const bool finite = bits < 0x7F800000u;
      s_row[r] = finite ? __fdiv_rn(__uint_as_float(bits), 448.0f) : __uint_as_float(0x7FC00000u);
      fp8_zero[r] = !valid[r] || !finite || s_row[r] == 0.0f;
      s_normal[r] = s_row[r] >= 0x1p-126f;
      s_fast[r] = row_fast_ok(s_row[r]);
      r_row[r] = s_fast[r] ? row_reciprocal(s_row[r]) : 0.0f;
      if (chunk == 0 && gs == 0 && t == 0) p.row_scale[mrow[r]] = valid[r] ? s_row[r] : 0.0f;
    }
  }
  // Warp-uniform: some row of this warp has codes and an s_row outside row_div.hpp's range (rare:
  // amax < 2^-55 or > 2^72), so the warp divides by __fdiv_rn.
  const bool fp8_slow = MODE == Mode::FP8_CODES &&
                        __any_sync(0xFFFFFFFFu, (!fp8_zero[0] && !s_fast[0]) || (!fp8_zero[1] && !s_fast[1]));

  float acc[RT > 0 ? RT : 1][4] = {};
  uint32_t row_amax16[2] = {0u, 0u};  // FP8_AMAX: max |xs| bits over this warp's groups

  // x ring (see the header): this lane's 4 x 16 bytes of each of kStages groups, slot
  // (stage * 4 + 2 h + r) * 32 + lane of its warp's region; a lane only reads what it copied itself.
  extern __shared__ uint4 ring[];
  uint4* const my = ring + warp * kStages * 4 * 32 + lane;
  const uint32_t my_s = uint32_t(__cvta_generic_to_shared(my));
  // Code tile row of row 0 (row 1 is 8 further: both are in one 128-row tile) and the byte offset
  // of its 8 codes of half 0; the other three follow from it (code_offsets_regular).
  const int rr0 = int(mrow[0] % kTileM);
  const int code_off = code_tile_offset(rr0, 8 * t);
  // xg[r]: this lane's x in the next group to issue (advanced by one group of the warp per issue;
  // recomputing row * K + g * 64 per issue cost ~20 instructions of 64-bit address arithmetic).
  const uint16_t* xg[2] = {xrow[0] + gbeg * kGroup, xrow[1] + gbeg * kGroup};
  auto issue_group = [&](int stage) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        cp_async16(my_s + uint32_t((stage * 4 + 2 * h + r) * 32 * 16), xg[r] + 32 * h, valid[r] ? 16u : 0u);
#pragma unroll
    for (int r = 0; r < 2; ++r) xg[r] += kGroupSets * kGroup;
  };
  const int n = gbeg < gend ? int((gend - gbeg + kGroupSets - 1) / kGroupSets) : 0;  // this warp's groups
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n) issue_group(s);
    cp_async_commit();  // empty groups too: wait_group counts them
  }
#pragma unroll 1
  for (int i = 0; i < n; ++i) {
    const int64_t g = gbeg + int64_t(i) * kGroupSets;
    // Refill the stage that group i - 1 used (its ld.shared results were consumed last iteration).
    if (i + kStages - 1 < n) issue_group((i + kStages - 1) % kStages);  // group i + kStages - 1
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // group i has landed (this thread's copies)
    const uint4* const cur = my + (i % kStages) * 4 * 32;

    uint4 xs[4];  // xs of this group, as T pairs: [2 h + r]
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t k0 = g * kGroup + 32 * h + 8 * t;
      // Low-rank B fragments of this half: all rank tiles at once up to R = 32, loaded before the
      // smoothing so that their (L1) latency hides behind it.
      constexpr int kB = RT >= 4 ? 2 : RT > 0 ? RT : 1;
      const uint4* pd = reinterpret_cast<const uint4*>(p.pdfrag) + ((g * 2 + h) * RT) * 32 + lane;
      uint4 b[kB];
      if constexpr (RT > 0 && MODE != Mode::FP8_CODES) {
#pragma unroll
        for (int j = 0; j < kB; ++j) b[j] = __ldg(pd + j * 32);
      }
      float4 rc[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) rc[i] = __ldg(rcp_tab + k0 / 2 + i);
      // x of both rows, raw[r], and as the MMA A fragments of the two sub-steps, fa[s] = {row 0 word
      // 2s, row 1 word 2s, row 0 word 2s + 1, row 1 word 2s + 1}. With low-rank sums of up to 64
      // ranks x is loaded word by word straight into fragment order: from 16-byte loads (whose 4
      // registers are one row) ptxas rebuilt the fragments by register copies, ~50 per group (the
      // volatile keeps it from merging the loads back; the 4-way bank conflicts of the 16-byte lane
      // stride cost the same wavefronts as the 16-byte loads). At R = 128 the extra registers
      // would spill, and without MMAs there is nothing to rebuild.
      constexpr bool kWordLoads = RT > 0 && RT <= 8 && MODE != Mode::FP8_CODES;
      uint4 raw[2];
      uint32_t fa[2][4];
      if constexpr (kWordLoads) {
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            fa[s][e] = lds32(reinterpret_cast<const uint32_t*>(cur + (2 * h + e % 2) * 32) + 2 * s + e / 2);
#pragma unroll
        for (int r = 0; r < 2; ++r) raw[r] = make_uint4(fa[0][r], fa[0][r + 2], fa[1][r], fa[1][r + 2]);
      } else {
#pragma unroll
        for (int r = 0; r < 2; ++r) raw[r] = cur[(2 * h + r) * 32];
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
          for (int e = 0; e < 4; ++e) fa[s][e] = word(raw[e % 2], 2 * s + e / 2);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) xs[2 * h + r] = smooth8_fast<BF16, UNS>(raw[r], rc);

      if constexpr (RT > 0 && MODE != Mode::FP8_CODES) {
#pragma unroll
        for (int jb = 0; jb < RT; jb += kB) {
          if (jb > 0) {
#pragma unroll
            for (int j = 0; j < kB; ++j) b[j] = __ldg(pd + (jb + j) * 32);
          }
#pragma unroll
          for (int s = 0; s < 2; ++s) {
#pragma unroll
            for (int j = 0; j < kB; ++j) mma_16816<BF16>(acc[jb + j], fa[s], word(b[j], 2 * s), word(b[j], 2 * s + 1));
          }
        }
      }
    }

    // |xs| maxima per row, after the rare IEEE divisions (act_primitives.cuh; x is read again
    // from this group's ring slot, refilled only next iteration).
    uint32_t mx[2];
    smooth_fixup<BF16, UNS>(xs, valid, mx, [&](int h, int r) { return cur[(2 * h + r) * 32]; }, p.smooth + g * kGroup + 8 * t);

    uint32_t amax16[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      uint32_t m = mx[r];
      m = max(m & 0xFFFFu, m >> 16);
      if constexpr (MODE == Mode::FP8_AMAX) {
        row_amax16[r] = max(row_amax16[r], m);
      } else {
        m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
        m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 2));
      }
      amax16[r] = m;
    }

    if constexpr (MODE != Mode::FP8_AMAX) {
      const int64_t mt = mrow[0] / kTileM;  // both rows are in the same 128-row tile
      uint8_t* tile = p.codes + (mt * G + g) * kCodeTileBytes;
      // INT4: §3 / §6: the stored scales of both rows, then codes from the exact reciprocals.
      // The clamp of the codes is the identity unless some rounded quotient is above qmax or
      // below qmin, and that shows in the row's largest one: every |xs| <= amax (the row's max
      // of |xs| bits), RN is monotone, so RN(RN(xs * rcp) + magic) <= RN(RN(amax * rcp) + magic)
      // =: hi_r. If hi_r <= magic + qmax then amax * rcp <= qmax + 1/2 (ulp 1 there), so every
      // RN(RN(-|xs| * rcp) + magic) >= magic - qmax >= magic + qmin (signed; the unsigned codes keep
      // their lower clamp: x' may be negative). NaN and Inf fail the test; rows with zero codes
      // need none. (Checked for every amax and |xs| <= amax, both dtypes and signs.) One warp-
      // uniform choice per group: the clamp runs only for scales far from amax / qmax (subnormal).
      uint16_t s_bits[2];
      bool zero[2];
      float rcp[2];
      bool clamp = false;
      if constexpr (MODE == Mode::INT4) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float amax = H::to_f32(amax16[r]);
          s_bits[r] = H::from_f32(__fmul_rn(amax, inv_qmax));
          const float s = H::to_f32(s_bits[r]);
          zero[r] = !valid[r] || !(s != 0.0f) || isinf(s);
          if (!valid[r]) s_bits[r] = 0;
          if (amax16[r] >= H::kInf && valid[r]) {
            s_bits[r] = H::kNaN;
            zero[r] = true;
          }
          rcp[r] = zero[r] ? 0.0f : __frcp_rn(s);
          const uint32_t hi_r = __float_as_uint(__fadd_rn(__fmul_rn(amax, rcp[r]), kCodeMagic));
          clamp |= !zero[r] && !(hi_r <= 0x4B406600u + (UNS ? 15u : 7u));
        }
        clamp = __any_sync(0xFFFFFFFFu, clamp);
      }
      uint2 ci[2][2];  // INT4 codes [r][h]
      if constexpr (MODE == Mode::INT4) {
        if (clamp) {
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int h = 0; h < 2; ++h) ci[r][h] = int4_codes8<BF16, true, true>(xs[2 * h + r], rcp[r], clamp_lo, clamp_hi);
        } else {
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int h = 0; h < 2; ++h) ci[r][h] = int4_codes8<BF16, UNS, false>(xs[2 * h + r], rcp[r], clamp_lo, clamp_hi);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int rr = rr0 + 8 * r;
        uint2 c[2];
        if constexpr (MODE == Mode::INT4) {
#pragma unroll
          for (int h = 0; h < 2; ++h) c[h] = zero[r] ? make_uint2(0, 0) : ci[r][h];
          if (t == 0) {
            const int64_t at = (mt * G + g) * kTileM + rr;
            if (p.scale_f32) reinterpret_cast<float*>(p.ascale)[at] = H::to_f32(s_bits[r]);
            else p.ascale[at] = s_bits[r];
          }
        } else {
#pragma unroll
          for (int h = 0; h < 2; ++h)
            c[h] = fp8_zero[r] ? make_uint2(0, 0)
                   : fp8_slow  ? fp8_codes8<BF16, false>(xs[2 * h + r], s_row[r], r_row[r], s_normal[r])
                               : fp8_codes8<BF16, true>(xs[2 * h + r], s_row[r], r_row[r], s_normal[r]);
        }
#pragma unroll
        for (int h = 0; h < 2; ++h)
          *reinterpret_cast<uint2*>(tile + ((code_off ^ (32 * h)) + 512 * r)) = c[h];
      }
    }
  }

  if constexpr (MODE == Mode::FP8_AMAX) {
    // One partial maximum per (chunk, group set) and row, row_amax[(2 chunk + gs) Mpad + m]: plain
    // stores, every slot rewritten by every call (a warp without groups writes 0, padding rows 0),
    // so nothing needs clearing before the call (v10: the memset before pass 1 was a launch of its
    // own and broke the PDL chain); pass 2 takes the max of the partials.
    const int64_t Mpad = int64_t(gridDim.x) * kBlockRows;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      uint32_t m = row_amax16[r];
      m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
      m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 2));
      if (t == 0) p.row_amax[int64_t(2 * chunk + gs) * Mpad + mrow[r]] = valid[r] ? __float_as_uint(H::to_f32(m)) : 0u;
    }
  }

  if constexpr (RT > 0 && MODE != Mode::FP8_CODES) {
    // The two warps of a row tile: group set 0 adds group set 1's sums (fixed order). Those go
    // through group set 1's own ring region (RT * 512 <= 8192 bytes; its copies have all landed:
    // every real cp.async group was waited for in the loop, the later ones are empty), so no other
    // warp's pending copies can touch it.
    static_assert(RT * 4 * 32 <= kStages * 4 * 32 * 4, "partial sums fit a warp's ring region");
    float* const red = reinterpret_cast<float*>(ring + (rt + kRowTiles) * kStages * 4 * 32);  // [RT * 4][32]
    if (gs == 1) {
      __syncwarp();  // every lane has passed its last wait: no copy of this warp is still pending
#pragma unroll
      for (int j = 0; j < RT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) red[(j * 4 + e) * 32 + lane] = acc[j][e];
    }
    __syncthreads();
    // Accumulator element e of rank tile j: row g8 + 8 (e / 2), rank 8 j + 2 t + (e % 2).
    const int64_t Mpad = int64_t(gridDim.x) * kBlockRows;
    float* dst = chunks == 1 ? p.lact : p.lpart + int64_t(chunk) * Mpad * R;
    if (gs == 0) {
#pragma unroll
      for (int j = 0; j < RT; ++j) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float v0 = acc[j][2 * r] + red[(j * 4 + 2 * r) * 32 + lane];
          const float v1 = acc[j][2 * r + 1] + red[(j * 4 + 2 * r + 1) * 32 + lane];
          *reinterpret_cast<float2*>(dst + mrow[r] * R + 8 * j + 2 * t) = make_float2(v0, v1);
        }
      }
    }
    if (chunks == 1) return;
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) {
      last = atomicAdd(&p.tickets[blockIdx.x], 1u) == unsigned(chunks - 1);
      if (last) p.tickets[blockIdx.x] = 0;  // every block of this row block has taken its ticket
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    // Each thread owns VPT of the block's 64 x R sums and adds the chunks in chunk order, with
    // U chunks x VPT values of loads in flight per round trip (the first form loaded 4 at a time
    // per value, one value after the other: at M = 256, 24 chunks, that was ~48 dependent L2
    // round trips and made the kernel 14 -> 22 us).
    constexpr int kThreadsPerBlock = kWarps * 32;
    constexpr int VPT = kBlockRows * R / kThreadsPerBlock;  // R >= 8: 2 .. 32
    static_assert(VPT * kThreadsPerBlock == kBlockRows * R);
    constexpr int U = VPT >= 32 ? 1 : 32 / VPT;
    const float* src = p.lpart + int64_t(blockIdx.x) * kBlockRows * R + threadIdx.x;
    const int64_t cstride = Mpad * R;
    float sum[VPT];
#pragma unroll
    for (int v = 0; v < VPT; ++v) sum[v] = __ldcg(src + v * kThreadsPerBlock);
    for (int c = 1; c < chunks; c += U) {
      float part[U][VPT];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int v = 0; v < VPT; ++v)
          part[u][v] = c + u < chunks ? __ldcg(src + int64_t(c + u) * cstride + v * kThreadsPerBlock) : 0.0f;
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (c + u < chunks) {
#pragma unroll
          for (int v = 0; v < VPT; ++v) sum[v] += part[u][v];
        }
    }
    float* out = p.lact + int64_t(blockIdx.x) * kBlockRows * R + threadIdx.x;
#pragma unroll
    for (int v = 0; v < VPT; ++v) out[v * kThreadsPerBlock] = sum[v];
  }
}

// As many chunks as fill one wave of wave resident blocks (each warp then has as many groups as
// possible for its ring to run ahead on), at most kMaxChunks (the last block of a row block adds
// them serially); an even C gives both group sets the same number of groups. Kernels without
// low-rank sums (R = 0, FP8_CODES) write no partial sums, so their chunking may differ from
// act_quant_chunking's (which sizes lpart).
ActChunking chunking(int64_t Mpad, int64_t K, int64_t wave) {
  const int64_t G = K / kGroup, row_blocks = round_up(Mpad, kTileM) / kBlockRows;
  const int64_t chunks = std::clamp<int64_t>(wave / row_blocks, 1, kMaxChunks);
  int64_t C = ceil_div(G, chunks);
  if (C > 1) C = round_up(C, int64_t(2));
  return ActChunking{int(C), int(ceil_div(G, C))};
}

// One launch with the ring's dynamic shared memory (above the 48 KB default: the opt-in is a
// per-device function attribute, set once per device and instantiation).
template <bool BF16, int RT, Mode MODE, bool UNS>
void launch_kernel(const ActQuantParams& p, dim3 grid, int chunk_groups, int act_chunks, cudaStream_t stream) {
  static std::atomic<uint64_t> opted{0};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const uint64_t bit = uint64_t(1) << (dev & 63);
  if (!(opted.load(std::memory_order_acquire) & bit)) {
    check(cudaFuncSetAttribute(act_quant_kernel<BF16, RT, MODE, UNS>, cudaFuncAttributeMaxDynamicSharedMemorySize, kRingBytes),
          "cudaFuncSetAttribute(act_quant_kernel)");
    opted.fetch_or(bit, std::memory_order_release);
  }
  launch_pdl(act_quant_kernel<BF16, RT, MODE, UNS>, grid, dim3(kWarps * 32), kRingBytes, stream,
             "cudaLaunchKernelEx(act_quant_kernel)", p, chunk_groups, act_chunks);
}

// The chunking of a launch in mode MODE (the kernels without low-rank sums fill a wave of 3
// blocks per SM).
template <Mode MODE>
int64_t mode_wave(const ActQuantParams& p) {
  return MODE == Mode::FP8_CODES || p.Rpad == 0 ? kWaveBlocksR0 : kWaveBlocks;
}
template <Mode MODE>
ActChunking mode_chunking(const ActQuantParams& p) {
  return chunking(round_up(p.M, kTileM), p.K, mode_wave<MODE>(p));
}

// Grid rows of expansion blocks a launch with this chunking takes on (v12), 0 for none: only where
// one wave of activation blocks leaves at least 8 resident-block slots free and those can expand
// the tiles within the activation blocks' time. The model assumes (not measured on its own; the
// layer A/B of perf-notes v12 is) that a block expands a tile in about half the time an
// activation block spends on one group, so `spare` blocks manage 2 * spare * C tiles while the
// activation blocks work through their C groups.
int expansion_rows(const ActQuantParams& p, const ActChunking& ch, int64_t row_blocks, int64_t wave) {
  if (p.exp_tiles <= 0) return 0;
  // The chunking assumes kSMs; the slots left free are counted on the device itself, so that a
  // part with fewer SMs takes on less expansion work (not a tail of it).
  const int64_t spare = wave / kSMs * sm_count() - row_blocks * ch.chunks;
  if (spare < 8 || p.exp_tiles > 2 * spare * ch.groups || p.exp_tiles >= (int64_t(1) << 31)) return 0;
  return int(ceil_div(spare, row_blocks));
}

// Returns whether this launch carried the weight expansion (FP8_CODES never does).
template <bool BF16, Mode MODE, bool UNS>
bool launch_mode(const ActQuantParams& p, cudaStream_t stream) {
  const int64_t Mpad = round_up(p.M, kTileM), row_blocks = Mpad / kBlockRows;
  const ActChunking ch = mode_chunking<MODE>(p);
  const int exp_rows = MODE == Mode::FP8_CODES ? 0 : expansion_rows(p, ch, row_blocks, mode_wave<MODE>(p));
  const dim3 grid(unsigned(row_blocks), unsigned(ch.chunks + exp_rows));
  if constexpr (MODE == Mode::FP8_CODES) {
    launch_kernel<BF16, 0, MODE, UNS>(p, grid, ch.groups, ch.chunks, stream);
  } else {
    switch (p.Rpad) {
    case 0: launch_kernel<BF16, 0, MODE, UNS>(p, grid, ch.groups, ch.chunks, stream); break;
    case 8: launch_kernel<BF16, 1, MODE, UNS>(p, grid, ch.groups, ch.chunks, stream); break;
    case 16: launch_kernel<BF16, 2, MODE, UNS>(p, grid, ch.groups, ch.chunks, stream); break;
    case 32: launch_kernel<BF16, 4, MODE, UNS>(p, grid, ch.groups, ch.chunks, stream); break;
    case 64: launch_kernel<BF16, 8, MODE, UNS>(p, grid, ch.groups, ch.chunks, stream); break;
    case 128: launch_kernel<BF16, 16, MODE, UNS>(p, grid, ch.groups, ch.chunks, stream); break;
    default: throw UnsupportedError("cuda-sm90: padded rank " + std::to_string(p.Rpad) + " has no kernel");
    }
  }
  check_launch("act_quant_kernel");
  return exp_rows > 0;
}

template <bool BF16, bool UNS>
bool launch_typed(const ActQuantParams& p, cudaStream_t stream) {
  if (!p.fp8) return launch_mode<BF16, Mode::INT4, UNS>(p, stream);
  ActQuantParams q = p;
  q.amax_chunks = mode_chunking<Mode::FP8_AMAX>(p).chunks;  // pass 2 reads pass 1's partial maxima
  const bool expanded = launch_mode<BF16, Mode::FP8_AMAX, UNS>(q, stream);
  launch_mode<BF16, Mode::FP8_CODES, UNS>(q, stream);
  return expanded;
}

}  // namespace

ActChunking act_quant_chunking(int64_t Mpad, int64_t K) { return chunking(Mpad, K, kWaveBlocks); }

int64_t act_quant_lpart_floats(int64_t Mpad, int64_t K, int Rpad) {
  int64_t most = 0;
  for (int64_t m = kTileM; m <= round_up(Mpad, kTileM); m += kTileM) {
    const int chunks = act_quant_chunking(m, K).chunks;
    if (chunks > 1) most = std::max(most, int64_t(chunks) * m * Rpad);
  }
  return most;
}

int64_t act_quant_tickets(int64_t Mpad) { return round_up(Mpad, kTileM) / kBlockRows + 2; }

int64_t act_quant_amax_words(int64_t Mpad) { return 2 * kMaxChunks * round_up(Mpad, kTileM); }

namespace {

void require_expansion_buffers(const ActQuantParams& p) {
  if (p.exp_tiles > 0 && (!p.wfrag || !p.wexp || !p.exp_counters))
    throw Error("cuda-sm90: weight expansion asked of the activation kernel without its buffers");
}

bool launch_any(const ActQuantParams& p, cudaStream_t stream) {
  require_expansion_buffers(p);
  if (p.dtype == HalfType::BF16) return p.act_unsigned ? launch_typed<true, true>(p, stream) : launch_typed<true, false>(p, stream);
  return p.act_unsigned ? launch_typed<false, true>(p, stream) : launch_typed<false, false>(p, stream);
}

}  // namespace

// fp8: the single-pass kernel (fp8_act.cu) where its plan fits the shape and the device can host
// its clusters; else the two passes here.
bool launch_act_quant(const ActQuantParams& p, cudaStream_t stream) {
  if (p.M == 0) return false;
  if (p.fp8) {
    require_expansion_buffers(p);
    const Fp8ActPlan plan = fp8_act_plan(p.M, p.K, p.Rpad, p.exp_tiles, sm_count());
    if (plan.rows > 0 && fp8_act_schedulable(p, plan)) {
      launch_fp8_act(p, plan, stream);
      return plan.exp_rows > 0;
    }
  }
  return launch_any(p, stream);
}

bool launch_act_quant_fp8_two_pass(const ActQuantParams& p, cudaStream_t stream) {
  if (!p.fp8) throw Error("cuda-sm90: launch_act_quant_fp8_two_pass without fp8");
  if (p.M == 0) return false;
  return launch_any(p, stream);
}

}  // namespace svdquant::cuda
