// The fused activation kernel of the cuda-sm90 backend: one pass over x that applies the shift
// and the smoothing (NUMERICS.md §2), quantizes every group of 64 to int4 codes and a T scale
// (§3, bit-exact with the CPU reference: the same float32 operations, each rounded once, and the
// exact reciprocal of the stored scale), and computes the low-rank down projection
// l = x · proj_down (§4.3) with bf16/fp16 tensor-core MMAs accumulating in float32. Products of
// two T values are exact in float32, so this is §4.3's float32 sum in another order (allowed).
//
// fp8 activations (§5) need the amax of a whole row before any code: the same kernel in mode
// FP8_AMAX computes xs, the low-rank sums and the rows' amax, folded into row_amax with an
// integer atomicMax on the float bits (max is order-independent, so this is deterministic; NaN's
// bits are above every finite value's and Inf's); a second launch in mode FP8_CODES recomputes xs
// (x is L2-resident by then: pass 1 writes almost nothing), divides by s_row = amax / 448 and
// writes the e4m3 codes into the GEMM's tile layout and the row scales. (One pass would have to
// keep a whole row of xs, up to 12288 x 2 bytes per row, on chip until its amax is known.)
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
// consecutive bytes). Padding rows are zero-filled by the copy (src-size 0). Registers (ptxas,
// sm_90a): R = 0 kernels (fp8 pass 2 included) 80 at 3 blocks per SM; R = 8 .. 32 96-122 at 2;
// R = 64 / 128 ~150 / ~215 at 1; no spills. 64 KB of ring per block.
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
// proven and exhaustively checked to round like the division; __fdiv_rn for the rest). The int4
// codes avoid float-to-int conversions: q = xs * (1/s) is rounded to an integer by adding
// 1536 + 1.5 * 2^23 (ulp 1, ties to even: the magic is even), whose low 16 bits are then the fp16
// bits of 1536 + rne(q) (|q| <= 23 by the scale's definition, so the float's binade is fixed); two
// of those form an f16x2, clamped and shifted back by 1536 exactly in f16x2, and converted to two
// e4m3 bytes by one instruction (the integers -8 .. 15 are exact in both formats).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <atomic>

#include "cuda_check.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "smooth_div.hpp"

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

template <bool BF16> struct HalfOps;
template <> struct HalfOps<true> {
  static __device__ float to_f32(uint32_t b) { return __uint_as_float(b << 16); }
  static __device__ uint16_t from_f32(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
  // Two floats rounded to T, lo in the low half (one F2FP instruction).
  static __device__ uint32_t pack2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ void unpack2(uint32_t w, float& lo, float& hi) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xFFFF0000u);
  }
  static constexpr uint16_t kNaN = 0x7FC0;
  static constexpr uint32_t kInf = 0x7F80;   // |T| bits at or above this are not finite
};
template <> struct HalfOps<false> {
  static __device__ float to_f32(uint32_t b) { return __half2float(__ushort_as_half(uint16_t(b))); }
  static __device__ uint16_t from_f32(float f) { return __half_as_ushort(__float2half_rn(f)); }
  static __device__ uint32_t pack2(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ void unpack2(uint32_t w, float& lo, float& hi) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w));
    lo = f.x;
    hi = f.y;
  }
  static constexpr uint16_t kNaN = 0x7E00;
  static constexpr uint32_t kInf = 0x7C00;
};

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// x goes to shared memory by cp.async.cg (L2 only: L1 holds the shared proj_down fragments and
// reciprocals; x is read once in 4-bit mode, twice from L2 in fp8). bytes = 0 zero-fills the 16
// bytes (padding rows), reading nothing.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, uint32_t bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Per-halfword unsigned max (one instruction on sm_90).
__device__ __forceinline__ uint32_t max_u16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("max.u16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// §2 for 8 consecutive columns k .. k+7 of one row: raw x in, xs out (both as 4 T pairs, low half
// = lower column). rc: the 8 reciprocal pairs (hi, lo) as 4 float4. Padding rows (valid false:
// zeros, whose xs nothing reads) skip the IEEE fallback.
template <bool BF16, bool UNS>
__device__ __forceinline__ uint4 smooth8(const uint4 raw, const float4 (&rc)[4], const uint16_t* smooth_k, bool valid) {
  using H = HalfOps<BF16>;
  float a[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    H::unpack2(word(raw, i), a[2 * i], a[2 * i + 1]);
    if constexpr (UNS) {  // x' = T(x + 0.171875)
      H::unpack2(H::pack2(__fadd_rn(a[2 * i], 0.171875f), __fadd_rn(a[2 * i + 1], 0.171875f)), a[2 * i], a[2 * i + 1]);
    }
  }
  float q[8];
  bool ok = true;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    q[2 * i] = smooth_quotient(a[2 * i], SmoothRcp{rc[i].x, rc[i].y});
    q[2 * i + 1] = smooth_quotient(a[2 * i + 1], SmoothRcp{rc[i].z, rc[i].w});
    ok &= smooth_quotient_ok(q[2 * i]) & smooth_quotient_ok(q[2 * i + 1]);
  }
  if (!ok && valid) {  // zeros, non-finite or extreme values: the IEEE division (rare)
    const uint4 sv = *reinterpret_cast<const uint4*>(smooth_k);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float s0, s1;
      H::unpack2(word(sv, i), s0, s1);
      q[2 * i] = __fdiv_rn(a[2 * i], s0);
      q[2 * i + 1] = __fdiv_rn(a[2 * i + 1], s1);
    }
  }
  return make_uint4(H::pack2(q[0], q[1]), H::pack2(q[2], q[3]), H::pack2(q[4], q[5]), H::pack2(q[6], q[7]));
}

// §3 int4 codes of 8 xs values (4 T pairs) as 8 e4m3 bytes (see the header for the rounding).
template <bool BF16>
__device__ __forceinline__ uint2 int4_codes8(const uint4 xs, float rcp, __half2 lo, __half2 hi) {
  using H = HalfOps<BF16>;
  constexpr float kMagic = 12609024.0f;  // 1.5 * 2^23 + 1536: bits 0x4B406600
  const __half2 k1536 = __halves2half2(__ushort_as_half(0x6600), __ushort_as_half(0x6600));
  uint32_t out[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float x0, x1;
    H::unpack2(word(xs, i), x0, x1);
    const uint32_t r0 = __float_as_uint(__fadd_rn(__fmul_rn(x0, rcp), kMagic));
    const uint32_t r1 = __float_as_uint(__fadd_rn(__fmul_rn(x1, rcp), kMagic));
    const uint32_t v = __byte_perm(r0, r1, 0x5410);  // f16x2 (1536 + rne(q0), 1536 + rne(q1))
    __half2 h = *reinterpret_cast<const __half2*>(&v);
    h = __hsub2(__hmin2(__hmax2(h, lo), hi), k1536);
    const __half2_raw hr = h;
    const uint32_t c = uint32_t(__nv_cvt_halfraw2_to_fp8x2(hr, __NV_SATFINITE, __NV_E4M3));
    if (i % 2 == 0) out[i / 2] = c;
    else out[i / 2] |= c << 16;
  }
  return make_uint2(out[0], out[1]);
}

// §5 e4m3 codes of 8 xs values. A quotient that rounds above 448 (|q| > 464) is NaN (NUMERICS
// §1); that needs s_row subnormal (else |q| <= 448 (1 + 2^-22)), so the test runs only then.
template <bool BF16>
__device__ __forceinline__ uint2 fp8_codes8(const uint4 xs, float s_row, bool s_normal) {
  using H = HalfOps<BF16>;
  uint32_t out[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float x0, x1;
    H::unpack2(word(xs, i), x0, x1);
    const float q0 = __fdiv_rn(x0, s_row), q1 = __fdiv_rn(x1, s_row);
    uint32_t c = uint32_t(__nv_cvt_float2_to_fp8x2(make_float2(q0, q1), __NV_SATFINITE, __NV_E4M3));
    if (!s_normal) {
      if (fabsf(q0) > 464.0f) c = (c & 0xFF00u) | 0x7Fu;
      if (fabsf(q1) > 464.0f) c = (c & 0x00FFu) | 0x7F00u;
    }
    if (i % 2 == 0) out[i / 2] = c;
    else out[i / 2] |= c << 16;
  }
  return make_uint2(out[0], out[1]);
}

// RT: rank tiles of 8 (Rpad = 8 RT); 0 when the layer has no low-rank branch (or in FP8_CODES).
template <bool BF16, int RT, Mode MODE, bool UNS>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks<RT>) act_quant_kernel(const ActQuantParams p, const int chunk_groups) {
  using H = HalfOps<BF16>;
  constexpr int R = RT * 8;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rt = warp % kRowTiles, gs = warp / kRowTiles;
  const int g8 = lane / 4, t = lane % 4;
  const int64_t K = p.K, G = K / kGroup;
  const int64_t mrow[2] = {int64_t(blockIdx.x) * kBlockRows + rt * 16 + g8, int64_t(blockIdx.x) * kBlockRows + rt * 16 + g8 + 8};
  const bool valid[2] = {mrow[0] < p.M, mrow[1] < p.M};
  const int chunk = int(blockIdx.y), chunks = int(gridDim.y);
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
  float s_row[2] = {0.0f, 0.0f};
  bool fp8_zero[2] = {true, true}, s_normal[2] = {true, true};
  if constexpr (MODE == Mode::FP8_CODES) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint32_t bits = valid[r] ? p.row_amax[mrow[r]] : 0u;
      const bool finite = bits < 0x7F800000u;
      s_row[r] = finite ? __fdiv_rn(__uint_as_float(bits), 448.0f) : __uint_as_float(0x7FC00000u);
      fp8_zero[r] = !valid[r] || !finite || s_row[r] == 0.0f;
      s_normal[r] = s_row[r] >= 0x1p-126f;
      if (chunk == 0 && gs == 0 && t == 0) p.row_scale[mrow[r]] = valid[r] ? s_row[r] : 0.0f;
    }
  }

  float acc[RT > 0 ? RT : 1][4] = {};
  uint32_t row_amax16[2] = {0u, 0u};  // FP8_AMAX: max |xs| bits over this warp's groups

  // x ring (see the header): this lane's 4 x 16 bytes of each of kStages groups, slot
  // (stage * 4 + 2 h + r) * 32 + lane of its warp's region; a lane only reads what it copied itself.
  extern __shared__ uint4 ring[];
  uint4* const my = ring + warp * kStages * 4 * 32 + lane;
  const uint32_t my_s = uint32_t(__cvta_generic_to_shared(my));
  auto issue_group = [&](int64_t g, int stage) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        cp_async16(my_s + uint32_t((stage * 4 + 2 * h + r) * 32 * 16), xrow[r] + g * kGroup + 32 * h, valid[r] ? 16u : 0u);
  };
  const int n = gbeg < gend ? int((gend - gbeg + kGroupSets - 1) / kGroupSets) : 0;  // this warp's groups
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n) issue_group(gbeg + int64_t(s) * kGroupSets, s);
    cp_async_commit();  // empty groups too: wait_group counts them
  }
#pragma unroll 1
  for (int i = 0; i < n; ++i) {
    const int64_t g = gbeg + int64_t(i) * kGroupSets;
    // Refill the stage that group i - 1 used (its ld.shared results were consumed last iteration).
    if (i + kStages - 1 < n) issue_group(g + int64_t(kStages - 1) * kGroupSets, (i + kStages - 1) % kStages);
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
      uint4 raw[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) raw[r] = cur[(2 * h + r) * 32];
#pragma unroll
      for (int r = 0; r < 2; ++r) xs[2 * h + r] = smooth8<BF16, UNS>(raw[r], rc, p.smooth + k0, valid[r]);

      if constexpr (RT > 0 && MODE != Mode::FP8_CODES) {
#pragma unroll
        for (int jb = 0; jb < RT; jb += kB) {
          if (jb > 0) {
#pragma unroll
            for (int j = 0; j < kB; ++j) b[j] = __ldg(pd + (jb + j) * 32);
          }
#pragma unroll
          for (int s = 0; s < 2; ++s) {
            const uint32_t a[4] = {word(raw[0], 2 * s), word(raw[1], 2 * s), word(raw[0], 2 * s + 1), word(raw[1], 2 * s + 1)};
#pragma unroll
            for (int j = 0; j < kB; ++j) mma_16816<BF16>(acc[jb + j], a, word(b[j], 2 * s), word(b[j], 2 * s + 1));
          }
        }
      }
    }

    // |xs| maxima: T bits with the sign cleared order like the magnitudes (NaN above Inf above
    // every finite value), so an unsigned halfword max is §6's NaN-propagating max.
    uint32_t amax16[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      uint32_t m = 0;
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int i = 0; i < 4; ++i) m = max_u16x2(m, word(xs[2 * h + r], i) & 0x7FFF7FFFu);
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
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int rr = int(mrow[r] % kTileM);
        uint2 c[2];
        if constexpr (MODE == Mode::INT4) {
          // §3 / §6: the stored scale, then codes from the exact reciprocal of it.
          const float amax = H::to_f32(amax16[r]);
          uint16_t s_bits = H::from_f32(__fmul_rn(amax, inv_qmax));
          const float s = H::to_f32(s_bits);
          bool zero = !valid[r] || !(s != 0.0f) || isinf(s);
          if (!valid[r]) s_bits = 0;
          if (amax16[r] >= H::kInf && valid[r]) {
            s_bits = H::kNaN;
            zero = true;
          }
          const float rcp = zero ? 0.0f : __frcp_rn(s);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            c[h] = int4_codes8<BF16>(xs[2 * h + r], rcp, clamp_lo, clamp_hi);
            if (zero) c[h] = make_uint2(0, 0);
          }
          if (t == 0) {
            const int64_t at = (mt * G + g) * kTileM + rr;
            if (p.scale_f32) reinterpret_cast<float*>(p.ascale)[at] = H::to_f32(s_bits);
            else p.ascale[at] = s_bits;
          }
        } else {
#pragma unroll
          for (int h = 0; h < 2; ++h)
            c[h] = fp8_zero[r] ? make_uint2(0, 0) : fp8_codes8<BF16>(xs[2 * h + r], s_row[r], s_normal[r]);
        }
#pragma unroll
        for (int h = 0; h < 2; ++h)
          *reinterpret_cast<uint2*>(tile + code_tile_offset(rr, 32 * h + 8 * t)) = c[h];
      }
    }
  }

  if constexpr (MODE == Mode::FP8_AMAX) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      uint32_t m = row_amax16[r];
      m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
      m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 2));
      if (t == 0 && valid[r]) atomicMax(&p.row_amax[mrow[r]], __float_as_uint(H::to_f32(m)));
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
void launch_kernel(const ActQuantParams& p, dim3 grid, int chunk_groups, cudaStream_t stream) {
  static std::atomic<uint64_t> opted{0};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const uint64_t bit = uint64_t(1) << (dev & 63);
  if (!(opted.load(std::memory_order_acquire) & bit)) {
    check(cudaFuncSetAttribute(act_quant_kernel<BF16, RT, MODE, UNS>, cudaFuncAttributeMaxDynamicSharedMemorySize, kRingBytes),
          "cudaFuncSetAttribute(act_quant_kernel)");
    opted.fetch_or(bit, std::memory_order_release);
  }
  act_quant_kernel<BF16, RT, MODE, UNS><<<grid, dim3(kWarps * 32), kRingBytes, stream>>>(p, chunk_groups);
}

template <bool BF16, Mode MODE, bool UNS>
void launch_mode(const ActQuantParams& p, cudaStream_t stream) {
  const int64_t Mpad = round_up(p.M, kTileM);
  const bool r0 = MODE == Mode::FP8_CODES || p.Rpad == 0;
  const ActChunking ch = chunking(Mpad, p.K, r0 ? kWaveBlocksR0 : kWaveBlocks);
  const dim3 grid(unsigned(Mpad / kBlockRows), unsigned(ch.chunks));
  if constexpr (MODE == Mode::FP8_CODES) {
    launch_kernel<BF16, 0, MODE, UNS>(p, grid, ch.groups, stream);
  } else {
    switch (p.Rpad) {
    case 0: launch_kernel<BF16, 0, MODE, UNS>(p, grid, ch.groups, stream); break;
    case 8: launch_kernel<BF16, 1, MODE, UNS>(p, grid, ch.groups, stream); break;
    case 16: launch_kernel<BF16, 2, MODE, UNS>(p, grid, ch.groups, stream); break;
    case 32: launch_kernel<BF16, 4, MODE, UNS>(p, grid, ch.groups, stream); break;
    case 64: launch_kernel<BF16, 8, MODE, UNS>(p, grid, ch.groups, stream); break;
    case 128: launch_kernel<BF16, 16, MODE, UNS>(p, grid, ch.groups, stream); break;
    default: throw UnsupportedError("cuda-sm90: padded rank " + std::to_string(p.Rpad) + " has no kernel");
    }
  }
  check_launch("act_quant_kernel");
}

template <bool BF16, bool UNS>
void launch_typed(const ActQuantParams& p, cudaStream_t stream) {
  if (!p.fp8) return launch_mode<BF16, Mode::INT4, UNS>(p, stream);
  const int64_t Mpad = round_up(p.M, kTileM);
  check(cudaMemsetAsync(p.row_amax, 0, size_t(Mpad) * sizeof(unsigned), stream), "cudaMemsetAsync(row_amax)");
  launch_mode<BF16, Mode::FP8_AMAX, UNS>(p, stream);
  launch_mode<BF16, Mode::FP8_CODES, UNS>(p, stream);
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

int64_t act_quant_tickets(int64_t Mpad) { return round_up(Mpad, kTileM) / kBlockRows; }

void launch_act_quant(const ActQuantParams& p, cudaStream_t stream) {
  if (p.M == 0) return;
  if (p.dtype == HalfType::BF16) p.act_unsigned ? launch_typed<true, true>(p, stream) : launch_typed<true, false>(p, stream);
  else p.act_unsigned ? launch_typed<false, true>(p, stream) : launch_typed<false, false>(p, stream);
}

}  // namespace svdquant::cuda
