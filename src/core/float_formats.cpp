// Narrow float formats, docs/NUMERICS.md §1. One generic RNE encoder serves fp16, e4m3 and e2m1;
// bf16 also has a fast bit-trick path, tested against the generic one (tests/core/float_formats_test).
#include "svdquant/float_formats.hpp"

#include <cmath>
#include <limits>

namespace svdquant {
namespace {

// An IEEE-like binary format with `man` mantissa bits and minimum normal exponent `emin`.
struct Format {
  int exp_bits;
  int man_bits;
  int emin;        // exponent of the smallest normal number
  double max_finite;
  enum class Overflow { Inf, NaN, Saturate } overflow;
};

constexpr Format kFp16{5, 10, -14, 65504.0, Format::Overflow::Inf};
constexpr Format kBf16{8, 7, -126, 3.3895313892515355e38, Format::Overflow::Inf};
constexpr Format kE4m3{4, 3, -6, 448.0, Format::Overflow::NaN};
constexpr Format kE4m3Sat{4, 3, -6, 448.0, Format::Overflow::Saturate};
constexpr Format kE2m1{2, 1, 0, 6.0, Format::Overflow::Saturate};

// Rounds |v| (+ tail, which only breaks ties) to the format; returns the magnitude as a double, or
// +inf/NaN on overflow per the format's rule. v must be finite.
double round_magnitude(const Format& f, double a, double tail) {
  if (a == 0.0) return 0.0;
  int ex;
  std::frexp(a, &ex);                      // a = m * 2^ex, m in [0.5, 1)
  int e = std::max(ex - 1, f.emin);        // exponent of the binade (subnormals share emin)
  double quantum = std::ldexp(1.0, e - f.man_bits);
  double q = a / quantum;                  // exact: power-of-two scaling
  double fl = std::floor(q);
  double frac = q - fl;
  double r;
  if (frac > 0.5) r = fl + 1;
  else if (frac < 0.5) r = fl;
  else if (tail > 0) r = fl + 1;
  else if (tail < 0) r = fl;
  else r = (std::fmod(fl, 2.0) == 0.0) ? fl : fl + 1;
  double mag = r * quantum;
  if (mag > f.max_finite) {
    switch (f.overflow) {
      case Format::Overflow::Inf: return std::numeric_limits<double>::infinity();
      case Format::Overflow::NaN: return std::numeric_limits<double>::quiet_NaN();
      case Format::Overflow::Saturate: return f.max_finite;
    }
  }
  return mag;
}

// Bits of a representable magnitude (no sign). Infinity -> all-ones exponent, zero mantissa.
uint32_t magnitude_bits(const Format& f, double mag) {
  if (mag == 0.0) return 0;
  if (std::isinf(mag)) return ((1u << f.exp_bits) - 1u) << f.man_bits;
  int ex;
  std::frexp(mag, &ex);
  int e = ex - 1;
  int bias = 1 - f.emin;
  if (e < f.emin) {  // subnormal
    return uint32_t(mag / std::ldexp(1.0, f.emin - f.man_bits));
  }
  uint32_t mant = uint32_t(mag / std::ldexp(1.0, e - f.man_bits)) - (1u << f.man_bits);
  return (uint32_t(e + bias) << f.man_bits) | mant;
}

uint32_t encode(const Format& f, double v, double tail, uint32_t nan_bits, bool keep_neg_zero) {
  const int width = 1 + f.exp_bits + f.man_bits;
  const uint32_t sign = std::signbit(v) ? (1u << (width - 1)) : 0u;
  if (std::isnan(v)) return nan_bits;
  double a = std::fabs(v);
  double t = std::signbit(v) ? -tail : tail;  // tail in the direction of |v|
  double mag;
  if (std::isinf(a)) {
    mag = f.overflow == Format::Overflow::Inf ? a
        : f.overflow == Format::Overflow::NaN ? std::numeric_limits<double>::quiet_NaN()
                                              : f.max_finite;
  } else {
    mag = round_magnitude(f, a, t);
  }
  if (std::isnan(mag)) return nan_bits | sign;
  uint32_t bits = magnitude_bits(f, mag);
  if (bits == 0 && !keep_neg_zero) return 0;
  return sign | bits;
}

}  // namespace

float fp16_to_f32(uint16_t h) {
  uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  float mag;
  if (exp == 0) mag = std::ldexp(float(man), -24);
  else if (exp == 31) mag = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else mag = std::ldexp(float(man | 0x400), int(exp) - 25);
  return sign ? -mag : mag;
}

float e4m3_to_f32(uint8_t v) {
  uint32_t sign = (v >> 7) & 1, exp = (v >> 3) & 0xF, man = v & 7;
  float mag;
  if (exp == 15 && man == 7) mag = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0) mag = std::ldexp(float(man), -9);
  else mag = std::ldexp(float(man | 8), int(exp) - 10);
  return sign ? -mag : mag;
}

float e2m1_to_f32(uint8_t code) {
  static constexpr float kValues[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
  float m = kValues[code & 7];
  return (code & 8) ? -m : m;
}

uint16_t f64_to_bf16(double v, double tail) { return uint16_t(encode(kBf16, v, tail, 0x7FC0, true)); }
uint16_t f64_to_fp16(double v, double tail) { return uint16_t(encode(kFp16, v, tail, 0x7E00, true)); }

uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x40);  // NaN: keep sign, quiet
  u += 0x7FFFu + ((u >> 16) & 1u);                                          // RNE on the low 16 bits
  return uint16_t(u >> 16);
}

uint8_t f32_to_e4m3(float f, bool saturate) {
  return uint8_t(encode(saturate ? kE4m3Sat : kE4m3, f, 0.0, 0x7F, true));
}

uint8_t f32_to_e2m1(float f) {
  if (std::isnan(f)) return 0;
  return uint8_t(encode(kE2m1, f, 0.0, 0, false));
}

}  // namespace svdquant
