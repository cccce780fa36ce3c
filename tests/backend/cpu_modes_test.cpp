// The CPU backend's modes against independent emulations written here from NUMERICS.md:
// half accumulation (§4.2) bit for bit, fp8 activations (§5) bit for bit, non-finite inputs (§6),
// thread-count independence, shapes (§8), and the accuracy of fp8 against 4-bit activations.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "fixture_util.hpp"
#include "unquantized_reference.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/layout_canonical.hpp"

using namespace svdquant;

namespace {

// A random canonical layer with outlier input channels (in x) and matching smoothing.
struct RandomLayer {
  LayerWeights w;
  Tensor x;
  std::vector<double> y64;  // float64 value of the *unquantized* layer: x W^T + b
};

RandomLayer random_layer(int64_t M, int64_t N, int64_t K, int64_t R, Precision p, HalfKind T, bool uns, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const DType dt = T == HalfKind::BF16 ? DType::BF16 : DType::F16;
  const int64_t G = group_size(p);
  auto half = [&](float v) { return f32_to_half(T, v); };
  RandomLayer r;
  LayerWeights& w = r.w;
  w.prefix = "rand";
  Tensor codes = Tensor::zeros(DType::I8, {N, K});
  std::uniform_int_distribution<int> c4(-8, 7), c2(0, 15);
  for (int64_t i = 0; i < N * K; ++i) codes.data_as<int8_t>()[i] = int8_t(p == Precision::INT4 ? c4(rng) : c2(rng));
  w.qweight = pack_codes(codes, p);
  w.wscales = Tensor::zeros(p == Precision::INT4 ? dt : DType::F8_E4M3, {K / G, N});
  for (int64_t i = 0; i < K / G * N; ++i) {
    float s = 0.002f * (1.0f + std::fabs(nd(rng)));
    if (p == Precision::INT4) w.wscales.data_as<uint16_t>()[i] = half(s);
    else w.wscales.data_as<uint8_t>()[i] = f32_to_e4m3(s * 100.0f);
  }
  auto vec = [&](Shape s, float scale, float offset) {
    Tensor t = Tensor::zeros(dt, s);
    for (int64_t i = 0; i < t.numel(); ++i) t.data_as<uint16_t>()[i] = half(offset + scale * nd(rng));
    return t;
  };
  w.smooth = Tensor::zeros(dt, {K});
  std::vector<float> chscale(size_t(K), 1.0f);
  for (int i = 0; i < 4; ++i) chscale[size_t(rng() % uint64_t(K))] = 30.0f;
  for (int64_t k = 0; k < K; ++k) w.smooth.data_as<uint16_t>()[k] = half(std::sqrt(chscale[size_t(k)]) * (0.8f + 0.4f * float(rng() % 100) / 100.0f));
  w.proj_down = vec({K, R}, 0.05f, 0.0f);
  w.proj_up = vec({N, R}, 0.05f, 0.0f);
  w.bias = vec({N}, 0.1f, 0.0f);
  w.wcscales = vec({N}, 0.05f, 1.0f);
  if (p == Precision::NVFP4) {
    w.wtscale = Tensor::zeros(dt, {1});
    w.wtscale.data_as<uint16_t>()[0] = half(0.01f);
  }
  w.validate(p, uns);
  r.x = Tensor::zeros(dt, {M, K});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      float v = nd(rng) * chscale[size_t(k)];
      if (uns) v = 0.5f * v * (1.0f + std::erf(v / std::sqrt(2.0f)));
      r.x.data_as<uint16_t>()[m * K + k] = half(v);
    }
  return r;
}

// Independent emulation of NUMERICS.md §4.2 from the quantized activations: T_fma emulated with
// __float128 and a nearest-neighbour search in T (no shared rounding code path).
uint16_t round_to_t_exact(HalfKind T, __float128 v) {
  const uint16_t guess = f32_to_half(T, float(double(v)));  // possibly double-rounded: fix below
  uint16_t best = guess;
  for (int d : {-1, 1}) {
    const uint16_t nb = uint16_t(guess + d);
    const float nv = half_to_f32(T, nb), bv = half_to_f32(T, best);
    if (!std::isfinite(nv) || ((nb ^ guess) & 0x8000)) continue;
    const __float128 dn = nv > v ? nv - v : v - nv, db = bv > v ? bv - v : v - bv;
    if (dn < db || (dn == db && nb % 2 == 0)) best = nb;
  }
  return best;
}

// NUMERICS.md §4.3 for one output: y * wcscales + bias, plus the low-rank up projection, to T.
uint16_t epilogue(const LayerWeights& w, const float* l_row, int64_t n, float y) {
  const auto& d = w.desc;
  y = y * float(element_as_double(w.wcscales, n)) + float(element_as_double(w.bias, n));
  float u = 0.0f;
  for (int64_t r = 0; r < d.R; ++r) u = u + l_row[r] * float(element_as_double(w.proj_up, n * d.R + r));
  return f32_to_half(d.dtype, y + u);
}

Tensor emulate_half(const Tensor& x, const LayerWeights& w) {
  const auto& d = w.desc;
  const HalfKind T = d.dtype;
  const int64_t M = x.size(0), G = group_size(d.precision), groups = d.K / G;
  ref::QuantizedActivations q = ref::quantize_activations(x, w, Activations::CHECKPOINT);
  std::vector<float> l = ref::lowrank_down(x, w);
  Tensor codes = unpack_codes(w.qweight, d.precision);
  auto val = [&](int8_t c) { return d.precision == Precision::INT4 ? double(c) : double(e2m1_to_f32(uint8_t(c))); };
  Tensor y = Tensor::zeros(x.dtype(), {M, d.N});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < d.N; ++n) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        double p = 0;
        for (int64_t k = g * G; k < (g + 1) * G; ++k) p += val(q.codes.data_as<int8_t>()[m * d.K + k]) * val(codes.data_as<int8_t>()[n * d.K + k]);
        const float sa = float(element_as_double(q.scales, m * groups + g)), sw = float(element_as_double(w.wscales, g * d.N + n));
        const float a = round_half(T, float(p)), b = round_half(T, sa * sw);
        acc = half_to_f32(T, round_to_t_exact(T, (__float128)a * b + acc));
      }
      float yv = acc * w.alpha();
      y.data_as<uint16_t>()[m * d.N + n] = epilogue(w, &l[size_t(m * d.R)], n, yv);
    }
  return y;
}

// Independent emulation of NUMERICS.md §5 (fp8 activations) in float64 where the spec says exact.
Tensor emulate_fp8(const Tensor& x, const LayerWeights& w) {
  const auto& d = w.desc;
  const int64_t M = x.size(0), G = group_size(d.precision), groups = d.K / G;
  std::vector<float> xs = ref::shift_and_smooth(x, w);
  std::vector<float> l = ref::lowrank_down(x, w);
  Tensor codes = unpack_codes(w.qweight, d.precision);
  auto val = [&](int8_t c) { return d.precision == Precision::INT4 ? double(c) : double(e2m1_to_f32(uint8_t(c))); };
  Tensor y = Tensor::zeros(x.dtype(), {M, d.N});
  for (int64_t m = 0; m < M; ++m) {
    float amax = 0;
    for (int64_t k = 0; k < d.K; ++k) amax = std::max(amax, std::fabs(xs[size_t(m * d.K + k)]));
    const float s_row = amax / 448.0f;
    std::vector<double> a(size_t(d.K), 0.0);
    if (s_row > 0)
      for (int64_t k = 0; k < d.K; ++k) a[size_t(k)] = e4m3_to_f32(f32_to_e4m3(xs[size_t(m * d.K + k)] / s_row));
    for (int64_t n = 0; n < d.N; ++n) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        double p = 0;
        for (int64_t k = g * G; k < (g + 1) * G; ++k) p += a[size_t(k)] * val(codes.data_as<int8_t>()[n * d.K + k]);
        acc = acc + float(p) * float(element_as_double(w.wscales, g * d.N + n));
      }
      float yv = (acc * s_row) * w.alpha();
      y.data_as<uint16_t>()[m * d.N + n] = epilogue(w, &l[size_t(m * d.R)], n, yv);
    }
  }
  return y;
}

int64_t count_diff(const Tensor& a, const Tensor& b) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) n += a.data_as<uint16_t>()[i] != b.data_as<uint16_t>()[i];
  return n;
}

struct Case {
  Precision p;
  HalfKind t;
  bool uns;
};
const Case kCases[] = {{Precision::INT4, HalfKind::BF16, false}, {Precision::INT4, HalfKind::FP16, false},
                       {Precision::INT4, HalfKind::BF16, true},  {Precision::INT4, HalfKind::FP16, true},
                       {Precision::NVFP4, HalfKind::BF16, false}, {Precision::NVFP4, HalfKind::FP16, false}};

}  // namespace

TEST(CpuModes, HalfAccumulationMatchesIndependentEmulation) {
  uint64_t seed = 10;
  for (const Case& c : kCases) {
    RandomLayer r = random_layer(7, 40, 256, 16, c.p, c.t, c.uns, seed++);
    ForwardOptions opt;
    opt.accumulate = Accumulate::HALF;
    Tensor y = ref::forward(r.x, r.w, opt);
    EXPECT_EQ(count_diff(y, emulate_half(r.x, r.w)), 0) << to_string(c.p) << " fp16=" << (c.t == HalfKind::FP16) << " uns=" << c.uns;
  }
  for (const char* name : test::kFixtures) {
    test::Fixture f = test::load_fixture(name);
    ForwardOptions opt;
    opt.accumulate = Accumulate::HALF;
    Tensor x = f.file.tensor("forward.x");
    EXPECT_EQ(count_diff(ref::forward(x, f.layer, opt), emulate_half(x, f.layer)), 0) << name;
  }
}

TEST(CpuModes, Fp8ActivationsMatchIndependentEmulation) {
  uint64_t seed = 20;
  for (const Case& c : kCases) {
    RandomLayer r = random_layer(5, 24, 512, 32, c.p, c.t, c.uns, seed++);
    ForwardOptions opt;
    opt.activations = Activations::FP8;
    EXPECT_EQ(count_diff(ref::forward(r.x, r.w, opt), emulate_fp8(r.x, r.w)), 0) << to_string(c.p);
  }
}

TEST(CpuModes, Fp8IsMoreAccurateThan4BitOnFixtures) {
  for (const char* name : test::kFixtures) {
    test::Fixture f = test::load_fixture(name);
    Tensor x = f.file.tensor("forward.x");
    // Both modes against the layer with unquantized activations.
    Tensor exact = test::unquantized_activation_output(x, f.layer);
    ForwardOptions fp8;
    fp8.activations = Activations::FP8;
    const double e4 = test::rel_l2(ref::forward(x, f.layer, {}), exact);
    const double e8 = test::rel_l2(ref::forward(x, f.layer, fp8), exact);
    std::printf("%s: error vs unquantized activations: 4-bit %.5f, fp8 %.5f (ratio %.3f)\n", name, e4, e8, e8 / e4);
    EXPECT_LT(e8, 0.6 * e4) << name;
  }
}

TEST(CpuModes, DeterministicAcrossThreadCounts) {
  RandomLayer r = random_layer(67, 300, 512, 32, Precision::INT4, HalfKind::BF16, false, 30);
  for (auto acc : {Accumulate::FP32, Accumulate::HALF}) {
    ForwardOptions opt;
    opt.accumulate = acc;
    Tensor y1 = ref::forward(r.x, r.w, opt, 1);
    for (int t : {2, 3, 8}) EXPECT_EQ(count_diff(y1, ref::forward(r.x, r.w, opt, t)), 0) << t;
  }
}

TEST(CpuModes, NonFiniteInputsNeverComeOutFinite) {
  for (const Case& c : kCases) {
    RandomLayer r = random_layer(4, 16, 128, 16, c.p, c.t, c.uns, 40);
    auto* x = r.x.data_as<uint16_t>();
    x[0 * 128 + 5] = f32_to_half(c.t, NAN);
    x[1 * 128 + 70] = f32_to_half(c.t, INFINITY);
    x[2 * 128 + 127] = f32_to_half(c.t, -INFINITY);
    for (auto act : {Activations::CHECKPOINT, Activations::FP8})
      for (auto acc : {Accumulate::FP32, Accumulate::HALF}) {
        if (act == Activations::FP8 && acc == Accumulate::HALF) continue;
        Tensor y = ref::forward(r.x, r.w, {acc, act});
        for (int64_t m = 0; m < 4; ++m)
          for (int64_t n = 0; n < 16; ++n) {
            const float v = half_to_f32(c.t, y.data_as<uint16_t>()[m * 16 + n]);
            if (m < 3) ASSERT_TRUE(std::isnan(v)) << "row " << m << " col " << n << " = " << v;
            else ASSERT_TRUE(std::isfinite(v));
          }
      }
    // The bad group's scale is NaN and its codes are 0 (NUMERICS.md §6).
    ref::QuantizedActivations q = ref::quantize_activations(r.x, r.w, Activations::CHECKPOINT);
    EXPECT_TRUE(std::isnan(element_as_double(q.scales, 0)));
    EXPECT_EQ(q.codes.data_as<int8_t>()[5], 0);
  }
}

TEST(CpuModes, ShapesAndRefusals) {
  RandomLayer r = random_layer(1, 33, 192, 0, Precision::INT4, HalfKind::BF16, false, 50);  // M = 1, rank 0, odd N
  Tensor y = ref::forward(r.x, r.w, {});
  EXPECT_EQ(y.shape(), (Shape{1, 33}));
  Tensor x0 = Tensor::zeros(DType::BF16, {0, 192});
  EXPECT_EQ(ref::forward(x0, r.w, {}).numel(), 0);
  Tensor wrong = Tensor::zeros(DType::BF16, {2, 128});
  EXPECT_THROW(ref::forward(wrong, r.w, {}), FormatError);
  Tensor wrong_dtype = Tensor::zeros(DType::F16, {2, 192});
  EXPECT_THROW(ref::forward(wrong_dtype, r.w, {}), FormatError);
  EXPECT_THROW(ref::forward(r.x, r.w, {Accumulate::HALF, Activations::FP8}), UnsupportedError);
}

TEST(CpuModes, Fp8MoreAccurateOnRandomOutlierLayers) {
  for (const Case& c : kCases) {
    RandomLayer r = random_layer(16, 64, 512, 16, c.p, c.t, c.uns, 60);
    Tensor y4 = ref::forward(r.x, r.w, {});
    Tensor y8 = ref::forward(r.x, r.w, {Accumulate::FP32, Activations::FP8});
    Tensor exact = test::unquantized_activation_output(r.x, r.w);
    const double e4 = test::rel_l2(y4, exact), e8 = test::rel_l2(y8, exact);
    std::printf("%s fp16=%d uns=%d: 4-bit %.5f, fp8 %.5f\n", std::string(to_string(c.p)).c_str(), c.t == HalfKind::FP16, c.uns, e4, e8);
    EXPECT_LT(e8, 0.6 * e4);
  }
}
