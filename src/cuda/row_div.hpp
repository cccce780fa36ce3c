// The fp8 division of NUMERICS.md §5, q = f32(xs) / s_row (float32 division), without a division
// per element: the row's correctly rounded reciprocal r = RN(1/s_row), computed once per row, and
// Markstein's correction step
//
//     q0 = RN(x * r),   e = fma(-q0, s, x) (exact),   q = fma(e, r, q0)   ->   q == RN(x / s),
//
// three float32 operations instead of __fdiv_rn's reciprocal refinement, remainder and range
// check per element. Shared by the activation kernel (device) and its host test
// (tests/cuda/cuda_act_host_test.cpp), which runs the same formula with std::fma.
//
// Why it is the division (Markstein's theorem, IBM J. Res. Dev. 34, 1990; Muller et al., Handbook
// of Floating-Point Arithmetic, §4.7): if r is within half an ulp of 1/s and q0 within one ulp of
// x/s, the remainder x - q0 s is a float32 (so the fma computes it exactly) and RN(q0 + e r) is
// RN(x / s). Checked exhaustively besides: every x with 11 significant bits (every bf16 and fp16
// value's significand) against every float32 significand of s, 2^33 pairs, no mismatch; the
// ctest runs a sample with scaled exponents.
//
// Where it holds: the argument is scale-free as long as no step rounds in the subnormal range.
// The kernel uses it where 2^-64 <= s <= 2^64 (row_fast_ok; r is then normal) and lets every
// other row take __fdiv_rn. For such s and |x / s| >= 2^-12, q0 and q are normal and e lies on a
// lattice of at least 2^-122, so it is exact. Smaller quotients round to an e4m3 zero either way
// (the smallest e4m3 subnormal is 2^-9, so everything below 2^-10 becomes ±0): the formula stays
// within a few ulps of x / s there, or underflows to zero, and the sign is copied from x
// (row_quotient ORs it in), which also gives -0 / s = -0 (the fma sum of two zeros of opposite
// sign would be +0; e4m3 keeps the sign of zero).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.hpp"

namespace svdquant::cuda {

inline constexpr float kRowFastMin = 0x1p-64f;  // the s_row range of the fast quotient
inline constexpr float kRowFastMax = 0x1p64f;

SVDQUANT_HD inline bool row_fast_ok(float s) { return s >= kRowFastMin && s <= kRowFastMax; }  // false for NaN

// The row's reciprocal RN(1/s).
SVDQUANT_HD inline float row_reciprocal(float s) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(s);
#else
  return 1.0f / s;
#endif
}

// x / s for row_fast_ok(s), r = row_reciprocal(s); every rounding spelled out on both sides.
SVDQUANT_HD inline float row_quotient(float x, float s, float r) {
#if defined(__CUDA_ARCH__)
  const float q0 = __fmul_rn(x, r);
  const float q = __fmaf_rn(__fmaf_rn(-q0, s, x), r, q0);
  return __uint_as_float(__float_as_uint(q) | (__float_as_uint(x) & 0x80000000u));
#else
  const float q0 = x * r;
  const float q = std::fma(std::fma(-q0, s, x), r, q0);
  uint32_t qb, xb;
  std::memcpy(&qb, &q, 4);
  std::memcpy(&xb, &x, 4);
  qb |= xb & 0x80000000u;
  float out;
  std::memcpy(&out, &qb, 4);
  return out;
#endif
}

}  // namespace svdquant::cuda
