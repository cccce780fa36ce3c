// The CPU reference against the nunchaku fixtures (NUMERICS.md §2-§4): activation codes and scales
// bit-exact, fp32-accumulated output within relative L2 1e-3 of the float64 reference.
#include <gtest/gtest.h>

#include <cstring>

#include "fixture_util.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/linear.hpp"

using namespace svdquant;

class CpuFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(CpuFixture, ActivationCodesAndScalesBitExact) {
  test::Fixture f = test::load_fixture(GetParam());
  Tensor x = f.file.tensor("forward.x");
  ref::QuantizedActivations q = ref::quantize_activations(x, f.layer, Activations::CHECKPOINT);
  Tensor codes = f.file.tensor("forward.act_codes"), scales = f.file.tensor("forward.act_scales");
  ASSERT_EQ(q.codes.shape(), codes.shape());
  ASSERT_EQ(q.scales.shape(), scales.shape());
  ASSERT_EQ(q.scales.dtype(), scales.dtype());
  int64_t bad = 0;
  for (int64_t i = 0; i < codes.numel(); ++i) bad += q.codes.data_as<int8_t>()[i] != codes.data_as<int8_t>()[i];
  EXPECT_EQ(bad, 0) << "activation codes differ";
  EXPECT_EQ(std::memcmp(q.scales.data(), scales.data(), scales.nbytes()), 0) << "activation scales differ";
}

TEST_P(CpuFixture, OutputMatchesFloat64Reference) {
  test::Fixture f = test::load_fixture(GetParam());
  Tensor x = f.file.tensor("forward.x");
  // Before the final rounding to T (which alone costs ~1.5e-3 in bf16) the fp32 result is within
  // 1e-3 of the float64 reference.
  const double err = test::rel_l2(ref::forward_f32(x, f.layer, {}), f.file.tensor("forward.y_ref_f64"));
  EXPECT_LT(err, 1e-3) << GetParam();
  // After it, y agrees with the stored T expectation (the float64 result rounded to T) to 1 ulp.
  Tensor y = ref::forward(x, f.layer, {});
  const auto ulps = test::ulp_diff_histogram(y, f.file.tensor("forward.y_ref"));
  std::printf("%s: %lld of %lld outputs bitwise equal to y_ref, %lld 1 ulp off, %lld more\n", GetParam(), (long long)ulps[0],
              (long long)y.numel(), (long long)ulps[1], (long long)ulps[2]);
  EXPECT_EQ(ulps[2], 0);
  EXPECT_GT(ulps[0], y.numel() * 9 / 10);
  // The same through the runtime object on the CPU backend.
  SVDQuantLinear lin(f.layer, LinearOptions{"cpu", {}});
  Tensor y2 = lin.forward(x);
  EXPECT_EQ(std::memcmp(y.data(), y2.data(), y.nbytes()), 0);
}

TEST_P(CpuFixture, HalfAccumulationStaysClose) {
  test::Fixture f = test::load_fixture(GetParam());
  ForwardOptions opt;
  opt.accumulate = Accumulate::HALF;
  Tensor y = ref::forward(f.file.tensor("forward.x"), f.layer, opt);
  // Half accumulation rounds every group's partial sum to bf16: still well under 1e-2.
  EXPECT_LT(test::rel_l2(y, f.file.tensor("forward.y_ref_f64")), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CpuFixture, ::testing::ValuesIn(test::kFixtures));
