// Exhaustive tests of the narrow float formats (NUMERICS.md §1): every bit pattern decodes, every
// finite value round-trips, every midpoint between neighbours rounds to the even one, overflow
// behaves as specified. fp16 is also checked against the compiler's _Float16 conversion.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "svdquant/cpu_reference.hpp"
#include "svdquant/float_formats.hpp"

using namespace svdquant;

namespace {

// Checks rounding at every midpoint between consecutive positive finite values of a 16-bit format,
// and one float ulp either side of it. `enc` narrows, `dec` widens, `max_bits` = largest finite.
template <class Enc, class Dec>
void check_midpoints16(Enc enc, Dec dec, uint16_t max_bits) {
  for (uint32_t b = 0; b < max_bits; ++b) {
    const float lo = dec(uint16_t(b)), hi = dec(uint16_t(b + 1));
    const float mid = lo + (hi - lo) / 2;  // exact: both have <= 11 significant bits
    ASSERT_EQ(double(mid) * 2, double(lo) + double(hi)) << b;
    const uint16_t even = (b % 2 == 0) ? uint16_t(b) : uint16_t(b + 1);
    ASSERT_EQ(enc(mid), even) << "midpoint after " << b;
    ASSERT_EQ(enc(std::nextafter(mid, 0.0f)), b) << b;
    ASSERT_EQ(enc(std::nextafter(mid, INFINITY)), b + 1) << b;
    ASSERT_EQ(enc(-mid), uint16_t(even | 0x8000)) << b;
  }
}

}  // namespace

TEST(Bf16, EveryPatternRoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_f32(uint16_t(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
      EXPECT_TRUE(std::isnan(bf16_to_f32(f64_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_bf16(f), b);
    ASSERT_EQ(f64_to_bf16(f), b);
  }
}

TEST(Bf16, MidpointsTieToEven) {
  check_midpoints16([](float f) { return f32_to_bf16(f); }, bf16_to_f32, 0x7F7F);
  check_midpoints16([](float f) { return f64_to_bf16(f); }, bf16_to_f32, 0x7F7F);
}

TEST(Bf16, OverflowAndSpecials) {
  const float max = bf16_to_f32(0x7F7F);
  const float mid_to_inf = std::ldexp(1.0f, 127) * (2.0f - 1.0f / 256.0f);  // halfway from max to 2^128
  EXPECT_EQ(f32_to_bf16(std::nextafter(mid_to_inf, 0.0f)), 0x7F7F);
  EXPECT_EQ(f32_to_bf16(mid_to_inf), 0x7F80);
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7F80);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xFF80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(max), 0x7F7F);
}

TEST(Bf16, FastPathMatchesGenericOnRandomFloats) {
  std::mt19937 rng(1);
  for (int i = 0; i < 2'000'000; ++i) {
    const float f = std::bit_cast<float>(uint32_t(rng()));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), f64_to_bf16(f)) << std::bit_cast<uint32_t>(f);
  }
}

TEST(Fp16, EveryPatternRoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = fp16_to_f32(uint16_t(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_f32(f32_to_fp16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_fp16(f), b) << b;
  }
  EXPECT_EQ(fp16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp16_to_f32(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(fp16_to_f32(0x7C00)));
}

TEST(Fp16, MidpointsTieToEven) {
  check_midpoints16([](float f) { return f32_to_fp16(f); }, fp16_to_f32, 0x7BFF);
}

TEST(Fp16, OverflowToInfinity) {
  EXPECT_EQ(f32_to_fp16(65519.99f), 0x7BFF);
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7C00);  // the midpoint between 65504 and 2^16 rounds up
  EXPECT_EQ(f32_to_fp16(-1e9f), 0xFC00);
}

#if defined(__FLT16_MAX__)
TEST(Fp16, MatchesCompilerFloat16OnRandomFloats) {
  std::mt19937 rng(2);
  for (int i = 0; i < 2'000'000; ++i) {
    const float f = std::bit_cast<float>(uint32_t(rng()));
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    ASSERT_EQ(f32_to_fp16(f), std::bit_cast<uint16_t>(h)) << f;
  }
}
#endif

TEST(E4m3, EveryPattern) {
  int nans = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const float f = e4m3_to_f32(uint8_t(b));
    if (std::isnan(f)) {
      ++nans;
      EXPECT_TRUE((b & 0x7F) == 0x7F);
      continue;
    }
    ASSERT_EQ(f32_to_e4m3(f), b) << b;
  }
  EXPECT_EQ(nans, 2);
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
}

TEST(E4m3, MidpointsTieToEven) {
  for (uint32_t b = 0; b < 0x7E; ++b) {
    const float lo = e4m3_to_f32(uint8_t(b)), hi = e4m3_to_f32(uint8_t(b + 1));
    const float mid = (lo + hi) / 2;
    const uint8_t even = (b % 2 == 0) ? uint8_t(b) : uint8_t(b + 1);
    ASSERT_EQ(f32_to_e4m3(mid), even) << b;
    ASSERT_EQ(f32_to_e4m3(std::nextafter(mid, 0.0f)), b) << b;
    ASSERT_EQ(f32_to_e4m3(std::nextafter(mid, INFINITY)), b + 1) << b;
    ASSERT_EQ(f32_to_e4m3(-mid), uint8_t(even | 0x80)) << b;
  }
}

TEST(E4m3, OverflowIsNaNUnlessSaturating) {
  EXPECT_EQ(f32_to_e4m3(463.9f), 0x7E);  // below the midpoint between 448 and 480: 448
  EXPECT_EQ(f32_to_e4m3(464.0f), 0x7E);  // the midpoint ties to the even mantissa: 448
  EXPECT_EQ(f32_to_e4m3(464.5f), 0x7F);  // rounds to 480, which e4m3fn lacks: NaN
  EXPECT_EQ(f32_to_e4m3(-1000.0f), 0xFF);
  EXPECT_EQ(f32_to_e4m3(1000.0f, true), 0x7E);
  EXPECT_EQ(f32_to_e4m3(-INFINITY, true), 0xFE);
  EXPECT_EQ(f32_to_e4m3(NAN) & 0x7F, 0x7F);
  EXPECT_EQ(f32_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);               // half the smallest subnormal: tie to 0
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.5f, -10)), 0x01);
}

TEST(E2m1, TableAndTies) {
  const float values[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (uint8_t c = 0; c < 16; ++c) {
    EXPECT_EQ(e2m1_to_f32(c), (c & 8 ? -1.0f : 1.0f) * values[c & 7]);
    if (c != 8) EXPECT_EQ(f32_to_e2m1(e2m1_to_f32(c)), c);
  }
  // Ties go to the even index: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
  const std::pair<float, uint8_t> ties[] = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4}, {2.5f, 4}, {3.5f, 6}, {5.0f, 6}};
  for (auto [v, code] : ties) {
    EXPECT_EQ(f32_to_e2m1(v), code) << v;
    EXPECT_EQ(f32_to_e2m1(-v), v == 0.25f ? 0 : (code | 8)) << -v;
  }
  EXPECT_EQ(f32_to_e2m1(0.2499f), 0);
  EXPECT_EQ(f32_to_e2m1(0.2501f), 1);
  EXPECT_EQ(f32_to_e2m1(-0.1f), 0);  // magnitude 0 is always +0 (NUMERICS.md §1)
  EXPECT_EQ(f32_to_e2m1(-0.0f), 0);
  EXPECT_EQ(f32_to_e2m1(100.0f), 7);  // saturates at 6
  EXPECT_EQ(f32_to_e2m1(-INFINITY), 15);
  EXPECT_EQ(f32_to_e2m1(5.01f), 7);
}

// T_fma must be the exact a*b + c rounded once. Checked against an independent criterion: the
// result is the T value nearest to the exact sum (computed in __float128), ties to even.
template <HalfKind T>
void check_half_fma() {
  std::mt19937 rng(T == HalfKind::BF16 ? 3 : 4);
  auto rand_t = [&](int lo_exp, int hi_exp) {
    std::uniform_real_distribution<float> m(1.0f, 2.0f);
    std::uniform_int_distribution<int> e(lo_exp, hi_exp);
    float v = std::ldexp(m(rng), e(rng)) * (rng() & 1 ? -1.0f : 1.0f);
    return round_half(T, v);
  };
  int ties_seen = 0;
  for (int i = 0; i < 300000; ++i) {
    const float a = rand_t(-6, 9), b = rand_t(-12, 2), c = rand_t(-10, 10);
    const float r = ref::half_fma(T, a, b, c);
    const __float128 exact = (__float128)a * (__float128)b + (__float128)c;
    const uint16_t rb = f32_to_half(T, r);
    for (int d : {-1, 1}) {
      const uint16_t nb = uint16_t(rb + d);
      const float nv = half_to_f32(T, nb);
      if (!std::isfinite(nv) || ((nb ^ rb) & 0x8000)) continue;
      const __float128 dr = r > exact ? r - exact : exact - r;
      const __float128 dn = nv > exact ? nv - exact : exact - nv;
      ASSERT_TRUE(dr <= dn) << a << " * " << b << " + " << c;
      if (dr == dn) {
        ++ties_seen;
        ASSERT_EQ(rb % 2, 0) << "tie not to even: " << a << " * " << b << " + " << c;
      }
    }
  }
  // Exact ties between the product and the addend happen; make sure the test met some.
  EXPECT_GT(ties_seen, 0);
}
TEST(HalfFma, Bf16SingleRounding) { check_half_fma<HalfKind::BF16>(); }
TEST(HalfFma, Fp16SingleRounding) { check_half_fma<HalfKind::FP16>(); }
