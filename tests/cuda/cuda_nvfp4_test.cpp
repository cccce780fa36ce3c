// nvfp4 layers on cuda-sm90 (NUMERICS.md §3 nvfp4, §4.1, §4.3, §6): the activation kernel's e2m1
// codes and e4m3 scales bit-exact with ref::quantize_activations (and its dequantized bf16 values
// equal to code·scale), and whole layers against the CPU backend.
//
// Layer tolerance: every product (q_a·s_a)·(q_w·s_w) is exact in float32 and only the float32
// summation order differs from §4.1 (all of K in the tensor cores vs group sums in group order;
// u with fma vs separate roundings). Those sums differ by a few units of 2^-24 of the sum of
// |terms| per addition, far below one unit of T's last place: an element may flip by one unit of
// T where the float32 value lies next to a rounding boundary (rare: at most 1 % here), and more
// only where cancellation makes the output small against its terms (the absolute tolerance).
// rel_l2 then stays below sqrt(1 %) · 2^-8 ≈ 4e-4 even in the worst case.
#include <gtest/gtest.h>

#include "cuda_test_util.hpp"

#ifdef SVDQUANT_HAVE_CUDA
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "device_buffer.hpp"
#include "nvfp4_kernels.hpp"
#include "svdquant/cpu_reference.hpp"

using namespace svdquant;

namespace {

struct NvSpec {
  int64_t N, K, R;
  HalfKind dtype;
};

// A random nvfp4 layer: random e2m1 codes (all 16, including 8 = -0), e4m3 scales over ~2^-4 ..
// 2^3 with a few zero scales, alpha = wtscale (F32), smoothing with large channels.
LayerWeights random_nvfp4_layer(const NvSpec& s, uint64_t seed) {
  cudatest::LayerSpec ls;
  ls.N = s.N;
  ls.K = s.K;  // multiples of 64 here, so the int4 generator accepts them
  ls.R = s.R;
  ls.dtype = s.dtype;
  LayerWeights w = cudatest::random_layer(ls, seed);
  std::mt19937_64 rng(seed ^ 0x9E3779B97F4A7C15ull);
  std::uniform_int_distribution<int> code(0x18, 0x50);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  w.wscales = Tensor::zeros(DType::F8_E4M3, {s.K / 16, s.N});
  for (int64_t i = 0; i < w.wscales.numel(); ++i)
    w.wscales.data_as<uint8_t>()[i] = u01(rng) < 0.01f ? uint8_t(0) : uint8_t(code(rng));
  w.wtscale = Tensor::zeros(DType::F32, {1});
  w.wtscale.data_as<float>()[0] = 0.3671875f;
  w.validate(Precision::NVFP4, false);
  return w;
}

Tensor gpu_forward(const LayerWeights& w, const Tensor& x) {
  ForwardOptions opt;  // auto activations resolve to checkpoint for nvfp4
  const Backend* b = cudatest::cuda_backend();
  EXPECT_EQ(b->resolve(w.desc, opt).activations, Activations::CHECKPOINT);
  auto layer = b->prepare(w, opt);
  return b->forward_host(*layer, x);
}

Tensor cpu_forward(const LayerWeights& w, const Tensor& x) {
  ForwardOptions opt;
  opt.activations = Activations::CHECKPOINT;
  return ref::forward(x, w, opt);
}

double nv_tolerance(const Tensor& ref, int64_t K) { return std::ldexp(1.0, -21) * double(K / 16 + 8) * cudatest::max_abs(ref); }

// ---- activation kernel: bit-exact codes and scales ----

struct ActCase {
  int64_t M, K;
  HalfKind dtype;
};

class CudaNvfp4Act : public ::testing::TestWithParam<ActCase> {};

TEST_P(CudaNvfp4Act, CodesAndScalesBitExact) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const ActCase c = GetParam();
  const LayerWeights w = random_nvfp4_layer({64, c.K, 16, c.dtype}, 500 + uint64_t(c.M));
  Tensor x = cudatest::random_input(c.M, c.K, c.dtype, false, 900 + uint64_t(c.M * 3 + c.K));
  auto* xp = x.data_as<uint16_t>();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  if (c.M >= 3) {  // §6: NaN in row 0 group 1, -Inf in the last row's group 0, +Inf in row 1's last element
    xp[16 + 3] = f32_to_half(c.dtype, nan);
    xp[(c.M - 1) * c.K + 2] = f32_to_half(c.dtype, -inf);
    xp[1 * c.K + c.K - 1] = f32_to_half(c.dtype, inf);
  }
  // Values near the e2m1 rounding boundaries and tiny values (subnormal e4m3 scales, zero groups).
  if (c.M >= 7) {
    for (int64_t k = 0; k < 16; ++k) xp[2 * c.K + k] = 0;                                     // zero group
    for (int64_t k = 16; k < 32; ++k) xp[3 * c.K + k] = f32_to_half(c.dtype, 1e-4f * float(k - 20));  // tiny scale
    for (int64_t k = 0; k < c.K; ++k) xp[4 * c.K + k] = f32_to_half(c.dtype, 0.25f * float(k % 29) - 3.0f);  // ties
  }
  const ref::QuantizedActivations q = ref::quantize_activations(x, w, Activations::CHECKPOINT);

  const int64_t G = c.K / 16, Kpad = cuda::nv_round_up(c.K, cuda::kNvTileK), Mpad = cuda::nv_round_up(c.M, cuda::kNvTileM);
  cuda::DeviceBuffer dx, dsm, dact(size_t(Mpad * Kpad * 2)), dcodes(size_t(c.M * c.K)), dscales(size_t(c.M * G));
  dx.upload(x.data(), x.nbytes());
  dsm.upload(w.smooth.data(), w.smooth.nbytes());
  ASSERT_EQ(cudaMemset(dact.get(), 0xFF, dact.size()), cudaSuccess);
  cuda::Nvfp4ActParams p;
  p.x = dx.as<uint16_t>();
  p.smooth = dsm.as<uint16_t>();
  p.act = dact.as<uint16_t>();
  p.codes = dcodes.as<uint8_t>();
  p.scales = dscales.as<uint8_t>();
  p.M = c.M;
  p.K = c.K;
  p.Kpad = Kpad;
  p.dtype = c.dtype == HalfKind::BF16 ? cuda::HalfType::BF16 : cuda::HalfType::FP16;
  cuda::launch_nvfp4_act(p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> codes(size_t(c.M * c.K)), scales(size_t(c.M * G));
  std::vector<uint16_t> act(size_t(Mpad * Kpad));
  ASSERT_EQ(cudaMemcpy(codes.data(), dcodes.get(), codes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(scales.data(), dscales.get(), scales.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(act.data(), dact.get(), act.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);

  int64_t bad_codes = 0, bad_scales = 0, bad_act = 0, nan_groups = 0, nonzero_codes = 0;
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t rs = q.scales.data_as<uint8_t>()[m * G + g];
      if (scales[size_t(m * G + g)] != rs && bad_scales++ == 0)
        ADD_FAILURE() << "scale m " << m << " g " << g << ": gpu " << int(scales[size_t(m * G + g)]) << " cpu " << int(rs);
      if (rs == 0x7F) ++nan_groups;
      const float s = e4m3_to_f32(rs);
      for (int64_t k = g * 16; k < g * 16 + 16; ++k) {
        const uint8_t rc = uint8_t(q.codes.data_as<int8_t>()[m * c.K + k]);
        nonzero_codes += rc != 0;
        if (codes[size_t(m * c.K + k)] != rc && bad_codes++ == 0)
          ADD_FAILURE() << "code m " << m << " k " << k << ": gpu " << int(codes[size_t(m * c.K + k)]) << " cpu " << int(rc);
        const float want = e2m1_to_f32(rc) * s;  // exact
        const float got = bf16_to_f32(act[size_t(m * Kpad + k)]);
        const bool same = std::isnan(want) ? std::isnan(got) : got == want;
        if (!same && bad_act++ == 0) ADD_FAILURE() << "act m " << m << " k " << k << ": gpu " << got << " want " << want;
      }
    }
  EXPECT_EQ(bad_codes, 0);
  EXPECT_EQ(bad_scales, 0);
  EXPECT_EQ(bad_act, 0);
  EXPECT_GT(nonzero_codes, c.M * c.K / 4);  // not vacuous
  if (c.M >= 3) {
    EXPECT_GE(nan_groups, 3);
  }
  // Padding columns are never written (the workspace clears them; here they keep 0xFFFF).
  if (Kpad > c.K) {
    EXPECT_EQ(act[size_t(c.K)], 0xFFFFu);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaNvfp4Act,
                         ::testing::Values(ActCase{1, 256, HalfKind::BF16}, ActCase{7, 256, HalfKind::BF16},
                                           ActCase{300, 512, HalfKind::BF16}, ActCase{1, 64, HalfKind::FP16},
                                           ActCase{7, 512, HalfKind::FP16}, ActCase{300, 256, HalfKind::FP16}));

// ---- layers against the CPU backend ----

struct LayerCase {
  int64_t M, N, K, R;
  HalfKind dtype;
};

class CudaNvfp4Layer : public ::testing::TestWithParam<LayerCase> {};

TEST_P(CudaNvfp4Layer, MatchesCpu) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const LayerCase c = GetParam();
  const LayerWeights w = random_nvfp4_layer({c.N, c.K, c.R, c.dtype}, 31 * uint64_t(c.N + c.K + c.R));
  ASSERT_FALSE(cudatest::cuda_backend()->unsupported_reason(w.desc, {}).has_value());
  const Tensor x = cudatest::random_input(c.M, c.K, c.dtype, false, 7 + uint64_t(c.M));
  const Tensor y = gpu_forward(w, x), r = cpu_forward(w, x);
  ASSERT_EQ(y.shape(), r.shape());
  const double atol = nv_tolerance(r, c.K);
  const auto st = cudatest::compare_ulp(y, r, c.dtype, atol);
  const int64_t i = std::max<int64_t>(st.first_beyond, 0);
  EXPECT_EQ(st.beyond_tolerance, 0) << "first at " << i << ": gpu " << element_as_double(y, i) << " cpu "
                                    << element_as_double(r, i) << " (atol " << atol << ")";
  EXPECT_LE(double(st.differing), 0.01 * double(r.numel()) + 1) << st.differing << " of " << r.numel() << " differ";
  EXPECT_LT(cudatest::rel_l2(y, r), 4e-4);
  EXPECT_GT(cudatest::max_abs(r), 0.0);
  for (int64_t j = 0; j < y.numel(); ++j)
    if (!std::isfinite(element_as_double(y, j))) {
      ADD_FAILURE() << "non-finite output at " << j;
      break;
    }
}

std::vector<LayerCase> layer_cases() {
  std::vector<LayerCase> v;
  for (HalfKind t : {HalfKind::BF16, HalfKind::FP16})
    for (int64_t M : {1, 7, 257})
      for (int64_t K : {64, 256, 512})
        for (int64_t N : {64, 200, 256})
          for (int64_t R : {0, 16, 32}) v.push_back({M, N, K, R, t});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaNvfp4Layer, ::testing::ValuesIn(layer_cases()));

// A larger rank and an M spanning several tiles, with no bias / wcscales.
TEST(CudaNvfp4LayerRuns, LargeRankNoBias) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  LayerWeights w = random_nvfp4_layer({384, 1024, 128, HalfKind::BF16}, 99);
  w.bias = Tensor();
  w.wcscales = Tensor();
  w.validate(Precision::NVFP4, false);
  const Tensor x = cudatest::random_input(300, 1024, HalfKind::BF16, false, 5);
  const Tensor y = gpu_forward(w, x), r = cpu_forward(w, x);
  const auto st = cudatest::compare_ulp(y, r, HalfKind::BF16, nv_tolerance(r, 1024));
  EXPECT_EQ(st.beyond_tolerance, 0);
  EXPECT_LE(double(st.differing), 0.01 * double(r.numel()) + 1);
  EXPECT_LT(cudatest::rel_l2(y, r), 4e-4);
}

// §6: a non-finite input makes every output of its row NaN; the other rows are unaffected.
TEST(CudaNvfp4LayerRuns, NonFiniteRowsAreNaN) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const LayerWeights w = random_nvfp4_layer({200, 256, 16, HalfKind::BF16}, 17);
  Tensor x = cudatest::random_input(9, 256, HalfKind::BF16, false, 18);
  x.data_as<uint16_t>()[2 * 256 + 40] = f32_to_bf16(std::numeric_limits<float>::quiet_NaN());
  x.data_as<uint16_t>()[5 * 256 + 255] = f32_to_bf16(-std::numeric_limits<float>::infinity());
  const Tensor y = gpu_forward(w, x), r = cpu_forward(w, x);
  for (int64_t m = 0; m < 9; ++m)
    for (int64_t n = 0; n < 200; ++n) {
      const double v = element_as_double(y, m * 200 + n);
      if (m == 2 || m == 5) {
        EXPECT_TRUE(std::isnan(v)) << m << "," << n;
      } else {
        EXPECT_TRUE(std::isfinite(v)) << m << "," << n;
      }
    }
  EXPECT_EQ(cudatest::compare_ulp(y, r, HalfKind::BF16, nv_tolerance(r, 256)).beyond_tolerance, 0);
}

// Repeated calls (workspace reuse, growing M, another stream) give bitwise equal outputs.
TEST(CudaNvfp4LayerRuns, DeterministicAcrossCallsAndGrowth) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const LayerWeights w = random_nvfp4_layer({256, 512, 32, HalfKind::FP16}, 23);
  const Backend* b = cudatest::cuda_backend();
  auto layer = b->prepare(w, {});
  const Tensor xs = cudatest::random_input(7, 512, HalfKind::FP16, false, 1);
  const Tensor xl = cudatest::random_input(300, 512, HalfKind::FP16, false, 2);
  const Tensor y1 = b->forward_host(*layer, xs);
  const Tensor y2 = b->forward_host(*layer, xl);
  const Tensor y3 = b->forward_host(*layer, xs);
  EXPECT_EQ(std::memcmp(y1.data(), y3.data(), y1.nbytes()), 0);
  auto fresh = b->prepare(w, {});
  const Tensor y4 = b->forward_host(*fresh, xl);
  EXPECT_EQ(std::memcmp(y2.data(), y4.data(), y2.nbytes()), 0);
}

TEST(CudaNvfp4Gate, HalfAccumulationAndFp8Refused) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const LayerWeights w = random_nvfp4_layer({64, 64, 16, HalfKind::BF16}, 3);
  const Backend* b = cudatest::cuda_backend();
  ForwardOptions half;
  half.accumulate = Accumulate::HALF;
  auto why = b->unsupported_reason(w.desc, half);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("fp32"), std::string::npos) << *why;
  EXPECT_THROW(b->prepare(w, half), UnsupportedError);
  ForwardOptions fp8;
  fp8.activations = Activations::FP8;
  EXPECT_TRUE(b->unsupported_reason(w.desc, fp8).has_value());
  LayerDesc d = w.desc;
  d.K = 40;
  EXPECT_TRUE(b->unsupported_reason(d, {}).has_value());
  d.K = 48;  // a multiple of 16 but not of 64: padded internally
  EXPECT_FALSE(b->unsupported_reason(d, {}).has_value());
}

}  // namespace
#endif
