// Helpers of the cuda-sm90 tests: the backend and its gate, random layers with outlier channels,
// and comparisons in units of T's last place.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>

#include "svdquant/backend.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant::cudatest {

inline const Backend* cuda_backend() { return BackendRegistry::instance().find("cuda-sm90"); }

// Why the GPU tests cannot run here (no CUDA build, no GPU, not Hopper), or nullopt.
inline std::optional<std::string> skip_reason() {
  const Backend* b = cuda_backend();
  if (!b) return std::string("built without CUDA: no cuda-sm90 backend");
  LayerDesc d;
  d.N = 128;
  d.K = 128;
  d.R = 16;
  return b->unsupported_reason(d, ForwardOptions{});
}

#define SVDQUANT_SKIP_WITHOUT_HOPPER()                                             \
  do {                                                                             \
    if (auto why_ = ::svdquant::cudatest::skip_reason()) GTEST_SKIP() << *why_;    \
  } while (0)

inline DType dtype_of(HalfKind t) { return t == HalfKind::BF16 ? DType::BF16 : DType::F16; }

inline Tensor half_tensor(HalfKind t, Shape shape, const std::vector<float>& values) {
  Tensor out = Tensor::zeros(dtype_of(t), std::move(shape));
  auto* p = out.data_as<uint16_t>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = f32_to_half(t, values[i]);
  return out;
}

// An aggregate: LayerSpec{N, K, R, dtype, act_unsigned} keeps the other defaults.
struct LayerSpec {
  int64_t N = 256, K = 512, R = 32;
  HalfKind dtype = HalfKind::BF16;
  bool act_unsigned = false;
  bool bias = true, wcscales = true;
  bool zero_lowrank = false;  // proj_down = proj_up = 0: the output is the GEMM alone
};

// A random int4 layer: uniform codes in [-8, 7], positive group scales spread over two decades,
// smoothing factors with a few large channels, small low-rank factors.
inline LayerWeights random_layer(const LayerSpec& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> nib(0, 15);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  LayerWeights w;
  w.prefix = "random";
  w.qweight = Tensor::zeros(DType::I8, {s.N, s.K / 2});
  for (int64_t i = 0; i < w.qweight.numel(); ++i) w.qweight.data_as<uint8_t>()[i] = uint8_t(nib(rng) | (nib(rng) << 4));
  std::vector<float> v(size_t(s.K / 64 * s.N));
  for (auto& x : v) x = 2e-3f * std::pow(10.0f, 2.0f * u01(rng));
  w.wscales = half_tensor(s.dtype, {s.K / 64, s.N}, v);
  v.assign(size_t(s.K), 0.0f);
  for (auto& x : v) x = 0.5f + u01(rng) * (u01(rng) < 0.03f ? 20.0f : 1.5f);
  w.smooth = half_tensor(s.dtype, {s.K}, v);
  v.assign(size_t(s.K * s.R), 0.0f);
  if (!s.zero_lowrank) for (auto& x : v) x = 0.05f * normal(rng);
  w.proj_down = half_tensor(s.dtype, {s.K, s.R}, v);
  v.assign(size_t(s.N * s.R), 0.0f);
  if (!s.zero_lowrank) for (auto& x : v) x = 0.05f * normal(rng);
  w.proj_up = half_tensor(s.dtype, {s.N, s.R}, v);
  if (s.bias) {
    v.assign(size_t(s.N), 0.0f);
    for (auto& x : v) x = normal(rng);
    w.bias = half_tensor(s.dtype, {s.N}, v);
  }
  if (s.wcscales) {
    v.assign(size_t(s.N), 0.0f);
    for (auto& x : v) x = 0.8f + 0.4f * u01(rng);
    w.wcscales = half_tensor(s.dtype, {s.N}, v);
  }
  w.validate(Precision::INT4, s.act_unsigned);
  return w;
}

// Activations with outlier channels (x30 on ~2% of the channels); GELU-like (>= -0.17) for
// unsigned layers.
inline Tensor random_input(int64_t M, int64_t K, HalfKind t, bool act_unsigned, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  std::vector<float> boost(size_t(K), 1.0f);
  for (auto& b : boost)
    if (u01(rng) < 0.02f) b = 30.0f;
  std::vector<float> v(size_t(M * K));
  for (int64_t i = 0; i < M * K; ++i) {
    float x = normal(rng) * boost[size_t(i % K)];
    if (act_unsigned) x = x * 0.5f * (1.0f + std::erf(x / std::sqrt(2.0f)));  // GELU
    v[size_t(i)] = x;
  }
  return half_tensor(t, {M, K}, v);
}

// Distance in units in the last place of T between two 16-bit patterns (NaN vs NaN: 0).
inline int64_t ulp_distance(uint16_t a, uint16_t b, HalfKind t) {
  const uint16_t exp_mask = t == HalfKind::BF16 ? 0x7F80 : 0x7C00;
  auto is_nan = [&](uint16_t v) { return (v & exp_mask) == exp_mask && (v & ~(exp_mask | 0x8000)) != 0; };
  if (is_nan(a) || is_nan(b)) return (is_nan(a) && is_nan(b)) ? 0 : INT64_MAX;
  auto ord = [](uint16_t v) -> int64_t { return (v & 0x8000) ? -int64_t(v & 0x7FFF) : int64_t(v & 0x7FFF); };
  return std::llabs(ord(a) - ord(b));
}

struct UlpStats {
  int64_t differing = 0;  // elements not bitwise equal (NaN == NaN)
  int64_t max_ulp = 0;
  int64_t first_bad = -1;  // first index with the largest distance
  // Elements off by more than one unit in T's last place *and* by more than `atol` (float32
  // rounding of sums much larger than the result, i.e. cancellation).
  int64_t beyond_tolerance = 0;
  int64_t first_beyond = -1;
};
inline UlpStats compare_ulp(const Tensor& a, const Tensor& b, HalfKind t, double atol = 0.0) {
  UlpStats s;
  for (int64_t i = 0; i < b.numel(); ++i) {
    const int64_t d = ulp_distance(a.data_as<uint16_t>()[i], b.data_as<uint16_t>()[i], t);
    if (d > 0) ++s.differing;
    if (d > s.max_ulp) {
      s.max_ulp = d;
      s.first_bad = i;
    }
    if (d > 1 && !(std::fabs(element_as_double(a, i) - element_as_double(b, i)) <= atol)) {
      if (s.first_beyond < 0) s.first_beyond = i;
      ++s.beyond_tolerance;
    }
  }
  return s;
}

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = std::fabs(element_as_double(t, i));
    if (std::isfinite(v)) m = std::max(m, v);
  }
  return m;
}

// Absolute tolerance for a layer whose outputs are sums of K/64 group terms: float32 rounding
// (2^-24 per operation, a few operations per group) of terms up to the largest output magnitude.
inline double fp32_sum_tolerance(const Tensor& ref, int64_t K) {
  return std::ldexp(1.0, -21) * double(K / 64 + 4) * max_abs(ref);
}

inline double rel_l2(const Tensor& a, const Tensor& ref) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double x = element_as_double(a, i), r = element_as_double(ref, i);
    num += (x - r) * (x - r);
    den += r * r;
  }
  return std::sqrt(num / den);
}

}  // namespace svdquant::cudatest
