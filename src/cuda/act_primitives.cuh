// Device helpers shared by the activation kernels (act_quant.cu: int4 / fp8 codes, two passes;
// fp8_act.cu: fp8 codes, one pass; nvfp4_act.cu: nvfp4): T pairs as floats, the x copies into the
// warps' shared-memory rings, the bf16 / fp16 mma.sync of the low-rank down projection, and the
// §2 smoothing of 8 values with its range test and the §5 e4m3 codes of 8 values (act_quant.cu's
// header explains both).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "row_div.hpp"
#include "smooth_div.hpp"

namespace svdquant::cuda {

// A T value (bf16 or fp16) and a pair of them packed in 32 bits (lower column in the low half).
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

// D (16 x 8, float32) += A (16 x 16, T, row) * B (16 x 8, T, col): products of two T values are
// exact in float32, the sums float32.
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

// Per-halfword unsigned max (one instruction on sm_90).
__device__ __forceinline__ uint32_t max_u16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("max.u16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

__device__ __forceinline__ uint32_t min_u16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("min.u16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// The dividends x' of §2 of one x word (a T pair) as floats.
template <bool BF16, bool UNS>
__device__ __forceinline__ void smooth_in(uint32_t w, float& a0, float& a1) {
  using H = HalfOps<BF16>;
  H::unpack2(w, a0, a1);
  if constexpr (UNS) {  // x' = T(x + 0.171875)
    H::unpack2(H::pack2(__fadd_rn(a0, 0.171875f), __fadd_rn(a1, 0.171875f)), a0, a1);
  }
}
// §2 for 8 consecutive columns k .. k+7 of one row, fast form only: raw x in, xs out (both as 4 T
// pairs, low half = lower column). rc: the 8 reciprocal pairs (hi, lo) as 4 float4. Whether xs may
// be kept is decided afterwards for the whole group (smooth_bad below); the rest is redone by
// smooth8_exact.
template <bool BF16, bool UNS>
__device__ __forceinline__ uint4 smooth8_fast(const uint4 raw, const float4 (&rc)[4]) {
  using H = HalfOps<BF16>;
  uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float a0, a1;
    smooth_in<BF16, UNS>(word(raw, i), a0, a1);
    out[i] = H::pack2(smooth_quotient(a0, SmoothRcp{rc[i].x, rc[i].y}), smooth_quotient(a1, SmoothRcp{rc[i].z, rc[i].w}));
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}
// The same 8 values by the IEEE division (exact for every input).
template <bool BF16, bool UNS>
__device__ __forceinline__ uint4 smooth8_exact(const uint4 raw, const uint16_t* smooth_k) {
  using H = HalfOps<BF16>;
  const uint4 sv = *reinterpret_cast<const uint4*>(smooth_k);
  uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float s0, s1;
    H::unpack2(word(sv, i), s0, s1);
    float a0, a1;
    smooth_in<BF16, UNS>(word(raw, i), a0, a1);
    out[i] = H::pack2(__fdiv_rn(a0, s0), __fdiv_rn(a1, s1));
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

// The range test of the fast quotients, on the rounded xs = T(q) instead of q: given the halfword
// maxima mx and minima mn of |xs| over some words (sign bits cleared), true unless every |xs| is
// in [lo, hi) with (bf16) lo = 2^-100 (1 + 2^-7), hi = 2^126, (fp16) lo = 2^-24, hi = Inf. Each
// bound implies smooth_div.hpp's test on q (RN to T is monotone and maps NaN to NaN): |T(q)| >= lo
// needs |q| > 2^-100 (fp16: |q| > 2^-25, as 2^-25 rounds to 0), and |T(q)| < hi needs |q| < 2^126
// (fp16: < 65520) and q not NaN. So this test accepts a subset of what the q test accepts, where
// the fast q is exactly the division (and so T(q)); what it rejects beyond that (bf16: |q| just
// above 2^-100; fp16: quotients that round to 0 or overflow in fp16) takes the IEEE division, exact
// anyway. (Checked over all 2^32 floats q, both dtypes: no q accepted here fails the q test.)
// Bounds as halfword compares without unpacking: a halfword v < 0x8000 plus 0x8000 - b has bit 15
// set iff v >= b (no carry into the other half).
template <bool BF16>
__device__ __forceinline__ bool smooth_bad(uint32_t mx, uint32_t mn) {
  constexpr uint32_t lo = BF16 ? 0x0D81u : 0x0001u, hi = BF16 ? 0x7E80u : 0x7C00u;
  const uint32_t ge_lo = mn + (0x8000u - lo) * 0x10001u, ge_hi = mx + (0x8000u - hi) * 0x10001u;
  return ((~ge_lo | ge_hi) & 0x80008000u) != 0u;
}

// |xs| maxima and minima of 4 words (T bits with the sign cleared order like the magnitudes, NaN
// above Inf above every finite value).
__device__ __forceinline__ void abs_maxmin(const uint4 v, uint32_t& mx, uint32_t& mn) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t a = word(v, i) & 0x7FFF7FFFu;
    mx = max_u16x2(mx, a);
    mn = min_u16x2(mn, a);
  }
}

// A lane's group after its fast smoothing: xs[2 h + r] holds the fast quotients of its row r
// (rows g8, g8 + 8) and k half h. Returns in mx[r] the halfword maxima of |xs| of row r (an
// unsigned halfword max is §6's NaN-propagating max), after the rare cases (zeros, non-finite or
// extreme values, smooth_bad) have been redone by the IEEE division: one warp-uniform branch per
// group, so that the common path has no divergent region; within it each set of 8 values of a
// valid row that fails its own test is recomputed from raw(h, r), the same 16 bytes of x again
// (where smooth_div.hpp's test alone would have kept the fast values, they are the same bits).
// smooth_g: smooth + the lane's first column of k half 0 in this group. Padding rows (valid
// false: zeros, whose xs no output reads) never take the branch.
template <bool BF16, bool UNS, typename Raw>
__device__ __forceinline__ void smooth_fixup(uint4 (&xs)[4], const bool (&valid)[2], uint32_t (&mx)[2], Raw raw,
                                             const uint16_t* smooth_g) {
  uint32_t mn[2];
  bool slow = false;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = 0u;
    mn[r] = 0xFFFFFFFFu;
    abs_maxmin(xs[r], mx[r], mn[r]);
    abs_maxmin(xs[2 + r], mx[r], mn[r]);
    slow |= valid[r] && smooth_bad<BF16>(mx[r], mn[r]);
  }
  if (__any_sync(0xFFFFFFFFu, slow)) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = 0u;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t hx = 0u, hn = 0xFFFFFFFFu;
        abs_maxmin(xs[2 * h + r], hx, hn);
        if (valid[r] && smooth_bad<BF16>(hx, hn)) {
          xs[2 * h + r] = smooth8_exact<BF16, UNS>(raw(h, r), smooth_g + 32 * h);
          hx = 0u;  // the |xs| maximum of the new values
          abs_maxmin(xs[2 * h + r], hx, hn);
        }
        mx[r] = max_u16x2(mx[r], hx);
      }
    }
  }
}

// §5 e4m3 codes of 8 xs values. FAST (s_row in row_div.hpp's range for every row of the warp
// that has codes): the quotients by the row's reciprocal and one correction step, exactly the
// float32 division (row_div.hpp). Otherwise __fdiv_rn, and a quotient that rounds above 448
// (|q| > 464) is NaN (NUMERICS §1); that needs s_row subnormal (else |q| <= 448 (1 + 2^-22)),
// so the test runs only then.
template <bool BF16, bool FAST>
__device__ __forceinline__ uint2 fp8_codes8(const uint4 xs, float s_row, float r_row, bool s_normal) {
  using H = HalfOps<BF16>;
  uint32_t out[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float x0, x1;
    H::unpack2(word(xs, i), x0, x1);
    float q0, q1;
    if constexpr (FAST) {
      q0 = row_quotient(x0, s_row, r_row);
      q1 = row_quotient(x1, s_row, r_row);
    } else {
      q0 = __fdiv_rn(x0, s_row);
      q1 = __fdiv_rn(x1, s_row);
    }
    uint32_t c = uint32_t(__nv_cvt_float2_to_fp8x2(make_float2(q0, q1), __NV_SATFINITE, __NV_E4M3));
    if (!FAST && !s_normal) {
      if (fabsf(q0) > 464.0f) c = (c & 0xFF00u) | 0x7Fu;
      if (fabsf(q1) > 464.0f) c = (c & 0x00FFu) | 0x7F00u;
    }
    if (i % 2 == 0) out[i / 2] = c;
    else out[i / 2] |= c << 16;
  }
  return make_uint2(out[0], out[1]);
}

}  // namespace svdquant::cuda
