// nvfp4 layers on cuda-sm90 (NUMERICS.md §3 nvfp4, §4.1, §4.3, §6): the activation kernel's e2m1
// codes and e4m3 scales bit-exact with ref::quantize_activations (and its dequantized fp16 values,
// in the GEMM's tiled layout, equal to code·scale), its low-rank sums against a double-precision
// reference, host models of its layout tricks (no GPU needed), and whole layers against the CPU
// backend.
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

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "device_buffer.hpp"
#include "nvfp4_act_pack.hpp"
#include "nvfp4_kernels.hpp"
#include "smooth_div.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/cpu_reference.hpp"

using namespace svdquant;

namespace {

struct NvSpec {
  int64_t N, K, R;
  HalfKind dtype;
};

// A random nvfp4 layer: random e2m1 codes (all 16, including 8 = -0), e4m3 scales over ~2^-4 ..
// 2^3 with a few zero scales, alpha = wtscale (F32), smoothing with large channels.
// K need not be a multiple of 64: the int4 generator runs at round_up(K, 64) and its codes,
// smoothing and proj_down are cut to K.
LayerWeights random_nvfp4_layer(const NvSpec& s, uint64_t seed) {
  cudatest::LayerSpec ls;
  ls.N = s.N;
  ls.K = cuda::nv_round_up(s.K, 64);
  ls.R = s.R;
  ls.dtype = s.dtype;
  LayerWeights w = cudatest::random_layer(ls, seed);
  if (ls.K != s.K) {
    auto cut = [](const Tensor& t, int64_t rows, int64_t cols) {  // the first cols of each row
      Tensor out = Tensor::zeros(t.dtype(), t.dim() == 1 ? Shape{cols} : Shape{rows, cols});
      const size_t esize = t.nbytes() / size_t(t.numel()), src_row = size_t(t.numel() / rows) * esize;
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(static_cast<uint8_t*>(out.data()) + size_t(r * cols) * esize, static_cast<const uint8_t*>(t.data()) + size_t(r) * src_row,
                    size_t(cols) * esize);
      return out;
    };
    w.qweight = cut(w.qweight, s.N, s.K / 2);
    w.smooth = cut(w.smooth, 1, s.K);
    Tensor pd = Tensor::zeros(w.proj_down.dtype(), {s.K, s.R});  // the first K rows
    std::memcpy(pd.data(), w.proj_down.data(), pd.nbytes());
    w.proj_down = pd;
  }
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

// ---- activation kernel (launch_nvfp4_act): act, codes and scales bit-exact, lact ----

// The kernel's inputs and outputs on the device, built the way Nvfp4Layer builds them; act and
// lact start as 0xFF bytes (act columns >= K must keep them).
struct ActRun {
  int64_t M = 0, K = 0, Kpad = 0, Mpad = 0, R = 0, Rpad = 0;
  HalfKind dtype = HalfKind::BF16;
  cuda::DeviceBuffer x, smooth, rcp, pdfrag, act, lact, codes, scales;

  ActRun(const LayerWeights& w, const Tensor& xin, int64_t rank, bool with_codes) {
    M = xin.size(0);
    K = xin.size(1);
    R = rank;
    Rpad = cuda::nv_padded_rank(R);
    dtype = w.desc.dtype;
    Kpad = cuda::nv_round_up(K, cuda::kNvTileK);
    Mpad = cuda::nv_round_up(M, cuda::kNvTileM);
    x.upload(xin.data(), xin.nbytes());
    smooth.upload(w.smooth.data(), w.smooth.nbytes());
    const auto r = cuda::pack_nv_smooth_reciprocal(w.smooth, K);
    rcp.upload(r.data(), r.size() * 4);
    if (Rpad > 0) {
      const auto f = cuda::pack_nv_proj_down(w.proj_down, K, R, Rpad);
      pdfrag.upload(f.data(), f.size() * 4);
    }
    act.resize(size_t(Mpad * Kpad * 2));
    lact.resize(size_t(Mpad * std::max<int64_t>(Rpad, 1) * 4));
    EXPECT_EQ(cudaMemset(act.get(), 0xFF, act.size()), cudaSuccess);
    EXPECT_EQ(cudaMemset(lact.get(), 0xFF, lact.size()), cudaSuccess);
    if (with_codes) {
      codes.resize(size_t(M * K));
      scales.resize(size_t(M * K / 16));
    }
  }
  void launch() const {
    cuda::Nvfp4ActParams p;
    p.x = x.as<uint16_t>();
    p.smooth = smooth.as<uint16_t>();
    p.smooth_rcp = rcp.as<float>();
    p.pdfrag = pdfrag.as<uint32_t>();
    p.act = act.as<uint16_t>();
    p.lact = Rpad > 0 ? lact.as<float>() : nullptr;
    p.codes = codes.as<uint8_t>();
    p.scales = scales.as<uint8_t>();
    p.M = M;
    p.K = K;
    p.Kpad = Kpad;
    p.R = int(R);
    p.Rpad = int(Rpad);
    p.dtype = dtype == HalfKind::BF16 ? cuda::HalfType::BF16 : cuda::HalfType::FP16;
    cuda::launch_nvfp4_act(p, nullptr);
  }
  template <class T> static std::vector<T> host(const cuda::DeviceBuffer& b) {
    std::vector<T> v(b.size() / sizeof(T));
    EXPECT_EQ(cudaMemcpy(v.data(), b.get(), b.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
};

// The codes, scales and act values (read through nv_act_index as fp16) of a run against
// ref::quantize_activations; returns the number of NaN groups.
int64_t expect_act_matches_cpu(const LayerWeights& w, const Tensor& x, const ActRun& run) {
  const int64_t M = run.M, K = run.K, G = K / 16;
  const ref::QuantizedActivations q = ref::quantize_activations(x, w, Activations::CHECKPOINT);
  const auto codes = ActRun::host<uint8_t>(run.codes), scales = ActRun::host<uint8_t>(run.scales);
  const auto act = ActRun::host<uint16_t>(run.act);
  int64_t bad_codes = 0, bad_scales = 0, bad_act = 0, nan_groups = 0, nonzero_codes = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t rs = q.scales.data_as<uint8_t>()[m * G + g];
      if (scales[size_t(m * G + g)] != rs && bad_scales++ == 0)
        ADD_FAILURE() << "scale m " << m << " g " << g << ": gpu " << int(scales[size_t(m * G + g)]) << " cpu " << int(rs);
      if (rs == 0x7F) ++nan_groups;
      const float s = e4m3_to_f32(rs);
      for (int64_t k = g * 16; k < g * 16 + 16; ++k) {
        const uint8_t rc = uint8_t(q.codes.data_as<int8_t>()[m * K + k]);
        nonzero_codes += rc != 0;
        if (codes[size_t(m * K + k)] != rc && bad_codes++ == 0)
          ADD_FAILURE() << "code m " << m << " k " << k << ": gpu " << int(codes[size_t(m * K + k)]) << " cpu " << int(rc);
        const float want = e2m1_to_f32(rc) * s;  // exact
        const uint16_t bits = act[size_t(cuda::nv_act_index(m, k, run.Kpad))];
        const float got = fp16_to_f32(bits);
        // Exact, and +0 for a zero product (the kernel's q is never -0 and s >= 0).
        const bool same = std::isnan(want) ? std::isnan(got) : (got == want && (want != 0.0f || bits == 0));
        if (!same && bad_act++ == 0) ADD_FAILURE() << "act m " << m << " k " << k << ": gpu " << got << " want " << want;
      }
    }
  EXPECT_EQ(bad_codes, 0);
  EXPECT_EQ(bad_scales, 0);
  EXPECT_EQ(bad_act, 0);
  EXPECT_GT(nonzero_codes, M * K / 4);  // not vacuous
  // Padding columns are never written (the workspace clears them; here they keep 0xFFFF).
  if (run.Kpad > K) {
    EXPECT_EQ(act[size_t(cuda::nv_act_index(0, K, run.Kpad))], 0xFFFFu);
    EXPECT_EQ(act[size_t(cuda::nv_act_index(M - 1, run.Kpad - 1, run.Kpad))], 0xFFFFu);
  }
  return nan_groups;
}

struct ActCase {
  int64_t M, K;
  HalfKind dtype;
};

class CudaNvfp4Act : public ::testing::TestWithParam<ActCase> {};

TEST_P(CudaNvfp4Act, CodesAndScalesBitExact) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const ActCase c = GetParam();
  LayerWeights w = random_nvfp4_layer({64, c.K, 16, c.dtype}, 500 + uint64_t(c.M));
  Tensor x = cudatest::random_input(c.M, c.K, c.dtype, false, 900 + uint64_t(c.M * 3 + c.K));
  auto* xp = x.data_as<uint16_t>();
  auto* sp = w.smooth.data_as<uint16_t>();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  if (c.M >= 3) {  // §6: NaN in row 0 group 1, -Inf in the last row's group 0, +Inf in row 1's last element
    xp[16 + 3] = f32_to_half(c.dtype, nan);
    xp[(c.M - 1) * c.K + 2] = f32_to_half(c.dtype, -inf);
    xp[1 * c.K + c.K - 1] = f32_to_half(c.dtype, inf);
  }
  // Values near the e2m1 rounding boundaries and tiny values (subnormal e4m3 scales, zero groups),
  // and groups whose scale is clamped to 448 (|v| far above 6; bf16 also >= 2^97, the kernel's
  // clamping path).
  if (c.M >= 7 && c.K >= 64) {
    for (int64_t k = 0; k < 16; ++k) xp[2 * c.K + k] = 0;                                     // zero group
    for (int64_t k = 16; k < 32; ++k) xp[3 * c.K + k] = f32_to_half(c.dtype, 1e-4f * float(k - 20));  // tiny scale
    for (int64_t k = 0; k < c.K; ++k) xp[4 * c.K + k] = f32_to_half(c.dtype, 0.25f * float(k % 29) - 3.0f);  // ties
    for (int64_t k = 32; k < 48; ++k)
      xp[5 * c.K + k] = f32_to_half(c.dtype, 20000.0f * half_to_f32(c.dtype, sp[k]) * (k % 2 ? 1.0f : -0.37f));
    if (c.dtype == HalfKind::BF16)
      for (int64_t k = 48; k < 64; ++k) xp[6 * c.K + k] = f32_to_half(c.dtype, 0x1p100f * half_to_f32(c.dtype, sp[k]) * (k % 3 ? 1.0f : -0.5f));
  }
  // Divisors the reciprocal pairs do not cover (the IEEE division): a zero smoothing factor (its
  // group is NaN or Inf in every row), and for bf16 2^110 and 2^-110 (xs tiny, xs ~ x · 2^110).
  if (c.K >= 64) {
    sp[c.K - 1] = 0;
    if (c.dtype == HalfKind::BF16) {
      sp[40] = f32_to_half(c.dtype, 0x1p110f);
      sp[41] = f32_to_half(c.dtype, 0x1p-110f);
    }
  }
  ActRun run(w, x, 0, true);
  run.launch();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const int64_t nan_groups = expect_act_matches_cpu(w, x, run);
  if (c.M >= 3) {
    EXPECT_GE(nan_groups, 3);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaNvfp4Act,
                         ::testing::Values(ActCase{1, 256, HalfKind::BF16}, ActCase{7, 256, HalfKind::BF16},
                                           ActCase{300, 512, HalfKind::BF16}, ActCase{1, 64, HalfKind::FP16},
                                           ActCase{7, 512, HalfKind::FP16}, ActCase{300, 256, HalfKind::FP16},
                                           ActCase{5, 80, HalfKind::BF16}, ActCase{130, 208, HalfKind::FP16},
                                           ActCase{1, 16, HalfKind::BF16}, ActCase{2000, 1024, HalfKind::BF16}));

// lact = x · proj_down (NUMERICS.md §4.3) against a double-precision sum: within 8 float32 ulps
// of sum |x · pd| (any float32 summation order is allowed; the kernel's MMAs and its fixed-order
// additions of steps, k-sets and cluster chunks stay far inside that). Padding ranks are 0, a
// row with a NaN is NaN in every real rank, and two calls are bitwise equal (act and lact); the
// act, codes and scales of these launches are checked against the CPU too, and act against a
// launch without the low-rank branch.
struct LactCase {
  int64_t M, K, R;
  HalfKind dtype;
};

class CudaNvfp4Lact : public ::testing::TestWithParam<LactCase> {};

TEST_P(CudaNvfp4Lact, MatchesDoubleSumDeterministically) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const LactCase c = GetParam();
  const LayerWeights w = random_nvfp4_layer({64, c.K, c.R, c.dtype}, 700 + uint64_t(c.M + c.K + c.R));
  Tensor x = cudatest::random_input(c.M, c.K, c.dtype, false, 40 + uint64_t(c.M * 7 + c.R));
  const int64_t nan_row = c.M >= 3 ? 2 : -1;
  if (nan_row >= 0) x.data_as<uint16_t>()[nan_row * c.K + 5] = f32_to_half(c.dtype, std::numeric_limits<float>::quiet_NaN());

  ActRun run(w, x, c.R, true), again(w, x, c.R, false), plain(w, x, 0, false);
  run.launch();
  again.launch();
  plain.launch();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_act_matches_cpu(w, x, run);
  const auto act = ActRun::host<uint16_t>(run.act), act2 = ActRun::host<uint16_t>(again.act), act0 = ActRun::host<uint16_t>(plain.act);
  EXPECT_TRUE(act == act2) << "act differs between two calls";
  EXPECT_TRUE(act == act0) << "act differs from the launch without the low-rank branch";
  const auto l = ActRun::host<float>(run.lact), l2 = ActRun::host<float>(again.lact);
  const int64_t Rp = run.Rpad;
  EXPECT_EQ(std::memcmp(l.data(), l2.data(), size_t(c.M * Rp) * 4), 0) << "lact differs between two calls";

  const auto* xp = x.data_as<uint16_t>();
  const auto* pp = w.proj_down.data_as<uint16_t>();
  std::vector<double> pd(size_t(c.K * c.R));
  for (size_t i = 0; i < pd.size(); ++i) pd[i] = half_to_f32(c.dtype, pp[i]);
  int64_t bad = 0, bad_pad = 0, bad_nan = 0;
  double worst = 0.0;  // largest error in units of 2^-24 sum |x · pd|
  std::vector<double> sum(size_t(c.R)), mag(size_t(c.R));
  for (int64_t m = 0; m < c.M; ++m) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(mag.begin(), mag.end(), 0.0);
    for (int64_t k = 0; k < c.K; ++k) {
      const double xv = half_to_f32(c.dtype, xp[m * c.K + k]);
      if (m == nan_row) break;
      for (int64_t r = 0; r < c.R; ++r) {
        sum[size_t(r)] += xv * pd[size_t(k * c.R + r)];
        mag[size_t(r)] += std::fabs(xv * pd[size_t(k * c.R + r)]);
      }
    }
    for (int64_t r = 0; r < Rp; ++r) {
      const float got = l[size_t(m * Rp + r)];
      if (r >= c.R) {
        if (std::bit_cast<uint32_t>(got) != 0u && bad_pad++ == 0) ADD_FAILURE() << "padding rank m " << m << " r " << r << ": " << got;
      } else if (m == nan_row) {
        if (!std::isnan(got) && bad_nan++ == 0) ADD_FAILURE() << "row with a NaN, rank " << r << ": " << got;
      } else {
        const double err = std::fabs(double(got) - sum[size_t(r)]), unit = std::ldexp(mag[size_t(r)], -24) + 1e-300;
        worst = std::max(worst, err / unit);
        if (!(err <= 8.0 * unit) && bad++ == 0)
          ADD_FAILURE() << "lact m " << m << " r " << r << ": gpu " << got << " want " << sum[size_t(r)] << " (sum |x pd| " << mag[size_t(r)] << ")";
      }
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(bad_pad, 0);
  EXPECT_EQ(bad_nan, 0);
  RecordProperty("worst_error_ulps_of_abs_sum", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaNvfp4Lact,
                         ::testing::Values(LactCase{1, 3072, 32, HalfKind::BF16}, LactCase{7, 512, 16, HalfKind::FP16},
                                           LactCase{300, 1024, 128, HalfKind::BF16}, LactCase{300, 208, 32, HalfKind::FP16},
                                           LactCase{1024, 3072, 32, HalfKind::FP16}, LactCase{4608, 3072, 32, HalfKind::BF16},
                                           LactCase{2000, 3072, 128, HalfKind::FP16}, LactCase{64, 1024, 96, HalfKind::BF16},
                                           LactCase{33, 640, 64, HalfKind::FP16}, LactCase{130, 80, 16, HalfKind::BF16},
                                           LactCase{64, 1040, 32, HalfKind::BF16}));

// ---- host models of the activation kernel's arithmetic and layouts (no GPU needed) ----

uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }

// The kernel's e2m1 rounding (nvfp4_act.cu, e2m1_round and the f16x2 clamp to 6) is e2m1_rne:
// v + M - M with M = 1.5 * 2^22 * max(2^floor(log2 |v|), 1), two fma, then sign(q) · min(|q|, 6).
TEST(CudaNvfp4ActHost, RoundingIsE2m1Rne) {
  auto kernel = [](float v) {
    const float e = std::max(std::bit_cast<float>(f32_bits(v) & 0x7F800000u), 1.0f);
    const float q = std::fma(e, -6291456.0f, std::fma(e, 6291456.0f, v));
    return std::copysign(std::min(std::fabs(q), 6.0f), q);
  };
  std::vector<float> vs = {0.0f, -0.0f, 0x1p-149f, -0x1p-130f, 0x1p100f, -0x1p105f, 7.0f, -7.0f, 1e30f};
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-9.0f, 9.0f);
  for (int i = 0; i < 300000; ++i) vs.push_back(u(rng));
  for (float m : {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f, 0.5f, 1.0f, 2.0f, 4.0f})
    for (float sgn : {1.0f, -1.0f}) {
      vs.push_back(sgn * m);
      vs.push_back(std::nextafter(sgn * m, 100.0f));
      vs.push_back(std::nextafter(sgn * m, -100.0f));
    }
  int64_t bad = 0;
  for (float v : vs) {
    const float want = e2m1_to_f32(f32_to_e2m1(v)), got = kernel(v);
    if (!(got == want && std::signbit(got) == (want != 0.0f && std::signbit(want))) && bad++ < 5)
      ADD_FAILURE() << "v " << v << ": kernel " << got << " e2m1_rne " << want;
  }
  EXPECT_EQ(bad, 0);
}

// The low-rank MMAs: lane (g8 = lane / 4, t = lane % 4) holds x row g8 of an 8-row MMA tile,
// columns 64 s + 16 t + 2 w (+1) in word w; MMA j of a step takes words 2 j, 2 j + 1 as
// b0, b1 (B[2t, 2t+1][g8], B[2t+8, 2t+9][g8]) and pack_nv_proj_down's 4 words as a0..a3
// (A[g8][2t, 2t+1], A[g8+8][2t, 2t+1], A[g8][2t+8, 2t+9], A[g8+8][2t+8, 2t+9]). Modelling
// mma.m16n8k16's fragment ownership, the MMAs must add up to x · proj_down exactly.
TEST(CudaNvfp4ActHost, ProjDownFragmentsMatchTheKernelsKOrder) {
  for (const auto& [K, R] : {std::pair<int64_t, int64_t>{80, 20}, {256, 128}, {64, 96}}) {
    const int64_t Rpad = cuda::nv_padded_rank(R), U = Rpad / 16, S = cuda::nv_round_up(K, 64) / 64;
    std::mt19937 rng(uint32_t(K + R));
    std::uniform_int_distribution<int> small(-4, 4);
    Tensor pd = Tensor::zeros(DType::BF16, {K, R});
    std::vector<float> pdv(size_t(K * R)), xv(size_t(8 * K));
    for (int64_t i = 0; i < K * R; ++i) {
      pdv[size_t(i)] = float(small(rng));
      pd.data_as<uint16_t>()[i] = f32_to_bf16(pdv[size_t(i)]);
    }
    for (auto& v : xv) v = float(small(rng));
    const std::vector<uint32_t> frag = cuda::pack_nv_proj_down(pd, K, R, Rpad);
    ASSERT_EQ(frag.size(), size_t(S * U * 4 * 32 * 4));
    auto lo = [](uint32_t w) { return bf16_to_f32(uint16_t(w & 0xFFFF)); };
    auto hi = [](uint32_t w) { return bf16_to_f32(uint16_t(w >> 16)); };
    auto xat = [&](int64_t row, int64_t k) { return k < K ? xv[size_t(row * K + k)] : 0.0f; };  // zero-filled past K
    std::vector<double> d(size_t(Rpad * 8), 0.0);  // l^T: [rank][row]
    for (int64_t s = 0; s < S; ++s)
      for (int64_t u = 0; u < U; ++u)
        for (int j = 0; j < 4; ++j) {
          float A[16][16] = {}, B[16][8] = {};
          for (int lane = 0; lane < 32; ++lane) {
            const int g8 = lane / 4, t = lane % 4;
            const int64_t k = 64 * s + 16 * t + 4 * j;  // words 2 j, 2 j + 1 of the lane's 16 columns
            B[2 * t][g8] = xat(g8, k), B[2 * t + 1][g8] = xat(g8, k + 1);
            B[2 * t + 8][g8] = xat(g8, k + 2), B[2 * t + 9][g8] = xat(g8, k + 3);
            const uint32_t* f = &frag[size_t((((s * U + u) * 4 + j) * 32 + lane) * 4)];
            A[g8][2 * t] = lo(f[0]), A[g8][2 * t + 1] = hi(f[0]);
            A[g8 + 8][2 * t] = lo(f[1]), A[g8 + 8][2 * t + 1] = hi(f[1]);
            A[g8][2 * t + 8] = lo(f[2]), A[g8][2 * t + 9] = hi(f[2]);
            A[g8 + 8][2 * t + 8] = lo(f[3]), A[g8 + 8][2 * t + 9] = hi(f[3]);
          }
          for (int rr = 0; rr < 16; ++rr)
            for (int n = 0; n < 8; ++n)
              for (int ks = 0; ks < 16; ++ks) d[size_t((16 * u + rr) * 8 + n)] += double(A[rr][ks]) * B[ks][n];
        }
    int64_t bad = 0;
    for (int64_t r = 0; r < Rpad; ++r)
      for (int n = 0; n < 8; ++n) {
        double want = 0;
        if (r < R)
          for (int64_t k = 0; k < K; ++k) want += double(xv[size_t(n * K + k)]) * pdv[size_t(k * R + r)];
        bad += d[size_t(r * 8 + n)] != want;
      }
    EXPECT_EQ(bad, 0) << "K " << K << " R " << R;
  }
}

// pack_nv_smooth_reciprocal: entry (s, w, t) holds the pairs of columns 64 s + 16 t + 2 w and the
// next, (1, 0) past K.
TEST(CudaNvfp4ActHost, ReciprocalTableLayout) {
  const int64_t K = 80, Kpad = 128;
  std::vector<float> v(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) v[size_t(k)] = 0.5f + 0.01f * float(k);
  const Tensor sm = cudatest::half_tensor(HalfKind::FP16, {K}, v);
  const auto tab = cuda::pack_nv_smooth_reciprocal(sm, K);
  ASSERT_EQ(tab.size(), size_t(2 * Kpad));
  int64_t bad = 0;
  for (int64_t s = 0; s < Kpad / 64; ++s)
    for (int w = 0; w < 8; ++w)
      for (int t = 0; t < 4; ++t)
        for (int e = 0; e < 2; ++e) {
          const int64_t k = 64 * s + 16 * t + 2 * w + e;
          const float* f = &tab[size_t(((s * 8 + w) * 4 + t) * 4 + 2 * e)];
          const cuda::SmoothRcp want = k < K ? cuda::smooth_reciprocal(fp16_to_f32(sm.data_as<uint16_t>()[k])) : cuda::SmoothRcp{1.0f, 0.0f};
          bad += f32_bits(f[0]) != f32_bits(want.hi) || f32_bits(f[1]) != f32_bits(want.lo);
        }
  EXPECT_EQ(bad, 0);
}

// The x ring: copy i of lane l moves granule (row 4 i + l / 8, kappa = l % 8) of a warp's step;
// the compute lane (g8, t) reads granules (g8 + 8 r, 2 t + c). Granule (rho, kappa) sits at
// rho * 8 + (kappa ^ 5 (rho & 1)): every read finds what was copied, and each group of 8 lanes
// (one shared-memory wavefront of 16-byte accesses) hits 8 distinct 16-byte bank groups, for the
// copies and for the reads.
TEST(CudaNvfp4ActHost, RingSwizzleIsConsistentAndConflictFree) {
  auto pos = [](int rho, int kappa) { return rho * 8 + (kappa ^ (5 * (rho & 1))); };
  std::vector<int> owner(128, -1);
  for (int i = 0; i < 4; ++i)
    for (int q = 0; q < 4; ++q) {
      std::set<int> banks;
      for (int l = 8 * q; l < 8 * q + 8; ++l) {
        const int p = pos(4 * i + l / 8, l % 8);
        owner[size_t(p)] = (4 * i + l / 8) * 8 + l % 8;
        banks.insert(p % 8);
      }
      EXPECT_EQ(banks.size(), 8u) << "copy " << i << " lanes " << 8 * q;
    }
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c)
      for (int q = 0; q < 4; ++q) {
        std::set<int> banks;
        for (int l = 8 * q; l < 8 * q + 8; ++l) {
          const int g8 = l / 4, t = l % 4, rho = g8 + 8 * r, kappa = 2 * t + c;
          // The kernel's read address: (g8 * 8 + ((2 t + c) ^ 5 (g8 & 1))) * 16 + 1024 r bytes.
          const int p = g8 * 8 + ((2 * t + c) ^ (5 * (g8 & 1))) + 64 * r;
          EXPECT_EQ(owner[size_t(p)], rho * 8 + kappa);
          banks.insert(p % 8);
        }
        EXPECT_EQ(banks.size(), 8u) << "read r " << r << " c " << c << " lanes " << 8 * q;
      }
}

// The kernel's act store address, (tile (m0 / 128, s) * 8192 + (m0 % 128 / 8) * 64 + g8 * 8) +
// (2 t + c) * 1024 + r * 64 uint16 for row m0 + g8 + 8 r and columns 64 s + 16 t + 8 c .. + 7
// (m0 a multiple of 16), is nv_act_index of that row and column; a step is 8192 further.
TEST(CudaNvfp4ActHost, ActStoreAddressIsNvActIndex) {
  const int64_t Kpad = 192, S = Kpad / 64;
  int64_t bad = 0;
  for (int64_t m0 = 0; m0 < 384; m0 += 16)
    for (int64_t s = 0; s < S; ++s)
      for (int lane = 0; lane < 32; ++lane)
        for (int r = 0; r < 2; ++r)
          for (int c = 0; c < 2; ++c) {
            const int g8 = lane / 4, t = lane % 4;
            const int64_t a = ((m0 / 128) * S + s) * 8192 + (m0 % 128 / 8) * 64 + g8 * 8 + (2 * t + c) * 1024 + r * 64;
            for (int e = 0; e < 8; ++e) bad += a + e != cuda::nv_act_index(m0 + g8 + 8 * r, 64 * s + 16 * t + 8 * c + e, Kpad);
          }
  EXPECT_EQ(bad, 0);
}

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
