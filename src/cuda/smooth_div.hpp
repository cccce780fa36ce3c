// The smoothing division of NUMERICS.md §2, xs = T(f32(x') / f32(smooth[k])), without a division
// in the common case: two float32 operations on a reciprocal pair (hi, lo) built at load time, and
// a range test that sends every other case to the IEEE division (__fdiv_rn). Shared by the
// activation kernel (device) and its host test (tests/cuda/cuda_act_host_test.cpp), which runs the
// same formula with std::fma.
//
// The pair: r = 1.0 / double(b) (correctly rounded double), hi = float(r), lo = float(r - hi)
// (r - hi is exact in double), so |hi + lo - 1/b| <= 2^-47.9 |1/b|. Where |1/b| is outside
// [2^-100, 2^100] (b zero, Inf, NaN, or extreme) hi = NaN, which the range test rejects.
//
// The quotient: q = fma(a, hi, RN(a * lo)): one rounding of a*hi + RN(a*lo), which differs from
// a/b by at most ~2^-46.8 |a/b| (the pair's error, the rounding of a*lo, and at most 2^-150
// absolute if a*lo is subnormal, relative 2^-50 because |q| >= 2^-100 below).
//
// Why that rounds like the division: a and b are T values (bf16 or fp16: at most 11 significant
// bits, A and B odd integers times powers of two). A float32 rounding boundary mu has at most 25
// significant bits. If a/b != mu, their distance is at least 2^-37 |a/b| (write both over the
// common denominator B: the numerator is a non-zero integer multiple of the smaller of the two
// lowest bit weights, so the relative distance is >= 1/(B 2^25) >= 2^-36 or >= 1/A >= 2^-11). So
// a value within 2^-46.8 of a/b rounds to RN32(a/b). a/b == mu needs B = 1 (b a power of two);
// then lo = 0, hi = 1/b exactly and q = RN(a*hi) = RN32(a/b) exactly. The same argument covers
// the overflow threshold (itself such a boundary); subnormal results are excluded by the test.
//
// The range test: the fast q is used where 2^-100 <= |q| < 2^126. It rejects a = ±0 (the sum of
// two zeros of opposite sign would lose the sign of -0/b, which fp8 codes keep), Inf, NaN, tiny
// and huge quotients, and every b without a pair; those take __fdiv_rn.
//
// Checked exhaustively (the host formula, all finite non-zero T pairs with a of both signs, both
// dtypes: 3.25e9 fast cases, no mismatch against the float32 division; the ctest runs a sample).
// The argument needs both operands to be T values: the fp8 division by the float32 s_row (§5)
// does not qualify; it has its own exact form (row_div.hpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "host_device.hpp"

namespace svdquant::cuda {

inline constexpr float kSmoothFastMin = 0x1p-100f;  // the range test of the fast quotient
inline constexpr float kSmoothFastMax = 0x1p126f;

struct SmoothRcp {
  float hi, lo;
};

// Host: the reciprocal pair of one smoothing factor b (a T value widened to float32).
inline SmoothRcp smooth_reciprocal(float b) {
  const double r = 1.0 / double(b);
  const double ar = std::fabs(r);
  if (!(ar >= 0x1p-100 && ar <= 0x1p100)) return {std::numeric_limits<float>::quiet_NaN(), 0.0f};
  const float hi = float(r);
  return {hi, float(r - double(hi))};
}

// The fast quotient and whether it may be used (host and device; no contraction on either side:
// the device form spells every rounding).
SVDQUANT_HD inline float smooth_quotient(float a, SmoothRcp r) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, r.hi, __fmul_rn(a, r.lo));
#else
  const float c = a * r.lo;
  return std::fma(a, r.hi, c);
#endif
}
SVDQUANT_HD inline bool smooth_quotient_ok(float q) {
#if defined(__CUDA_ARCH__)
  const float aq = fabsf(q);
#else
  const float aq = std::fabs(q);
#endif
  return aq >= kSmoothFastMin && aq < kSmoothFastMax;  // false for NaN
}

}  // namespace svdquant::cuda
