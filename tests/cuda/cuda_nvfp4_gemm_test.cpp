// The nvfp4 GEMM of cuda-sm90 (nvfp4_gemm.cu) on its own: the packed weight layout against a host
// model of the kernel's decode (no GPU needed), and the kernel against a double-precision
// reference of NUMERICS.md §4.1 / §4.3 on activations given directly in the act layout (so the
// GEMM is tested apart from the activation kernel), with and without split K.
#include <gtest/gtest.h>

#include "cuda_test_util.hpp"

#ifdef SVDQUANT_HAVE_CUDA
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "device_buffer.hpp"
#include "nvfp4_kernels.hpp"
#include "nvfp4_pack.hpp"
#include "svdquant/float_formats.hpp"

using namespace svdquant;

namespace {

// The kernel's decode of register q, half h of a packed word (nvfp4_gemm.cu, dequant_step):
// the fp16 pattern's value times 2^14 must be the e2m1 value of the code.
double decode(uint32_t w, int q, int h) {
  const uint32_t pat = ((w << (3 * q)) & 0x0E000E00u) | ((w << q) & 0x80008000u);
  return std::ldexp(double(fp16_to_f32(uint16_t(pat >> (16 * h)))), 14);
}

TEST(Nvfp4Pack, EveryCodeDecodesInEveryPosition) {
  for (int e = 0; e < 8; ++e)
    for (uint8_t c = 0; c < 16; ++c) {
      uint8_t codes[8] = {};
      for (int o = 0; o < 8; ++o) codes[o] = uint8_t((c + 5 * o + 3) & 0xF);  // the others vary too
      codes[e] = c;
      const uint32_t w = cuda::nv_pack_word(codes);
      for (int o = 0; o < 8; ++o) {
        const double want = e2m1_to_f32(codes[o]), got = decode(w, o / 2, o % 2);
        EXPECT_EQ(got, want) << "element " << o << " code " << int(codes[o]);
        EXPECT_EQ(std::signbit(got), std::signbit(want)) << "element " << o << " code " << int(codes[o]);
      }
    }
}

// Every (n, k) of a packed layer, found where the kernel reads it: thread t = 32 warp + lane of
// the block's warpgroup holds rows 16 warp + lane / 4 (+ 8) and k = 16 j + 2 (lane % 4) (+ 8) + h.
TEST(Nvfp4Pack, LayoutMatchesTheKernelsFragments) {
  const int64_t N = 200, K = 144;  // padding in both
  std::mt19937_64 rng(5);
  Tensor q = Tensor::zeros(DType::U8, {N, K / 2}), s = Tensor::zeros(DType::F8_E4M3, {K / 16, N});
  for (int64_t i = 0; i < q.numel(); ++i) q.data_as<uint8_t>()[i] = uint8_t(rng());
  for (int64_t i = 0; i < s.numel(); ++i) s.data_as<uint8_t>()[i] = uint8_t(rng() % 0x7F);  // finite
  const auto p = cuda::pack_nvfp4_weights(q, s, N, K);
  const int64_t Npad = cuda::nv_round_up(N, cuda::kNvTileN), Kpad = cuda::nv_round_up(K, cuda::kNvTileK), KT = Kpad / 64;
  ASSERT_EQ(p.size(), size_t(Npad / cuda::kNvTileN * KT * cuda::kNvWStepBytes));
  int64_t checked = 0;
  for (int64_t n = 0; n < Npad; ++n)
    for (int64_t k = 0; k < Kpad; ++k) {
      const int64_t nt = n / 256, b = n % 256 / 64, r = n % 64, kt = k / 64, kk = k % 64;
      const int j = int(kk / 16), kin = int(kk % 16), warp = int(r / 16), half8 = int(r % 16 / 8);
      const int c = (kin % 8) / 2, h = kin % 2, hi8 = kin / 8;
      const int lane = int(r % 8) * 4 + c, t = warp * 32 + lane, qreg = half8 + 2 * hi8;
      const uint8_t* blk = p.data() + ((nt * KT + kt) * 4 + b) * cuda::kNvWBlockBytes;
      uint32_t w;
      std::memcpy(&w, blk + t * 16 + j * 4, 4);
      uint16_t sbits;
      std::memcpy(&sbits, blk + 2048 + r * 8 + j * 2, 2);
      const double v = decode(w, qreg, h) * double(fp16_to_f32(sbits)) / 128.0;
      double want = 0;
      if (n < N && k < K) {
        const uint8_t byte = q.data_as<uint8_t>()[n * (K / 2) + k / 2];
        want = double(e2m1_to_f32(k % 2 ? uint8_t(byte >> 4) : uint8_t(byte & 0xF))) *
               double(e4m3_to_f32(s.data_as<uint8_t>()[(k / 16) * N + n]));
      }
      ASSERT_EQ(v, want) << "n " << n << " k " << k;
      ++checked;
    }
  EXPECT_EQ(checked, Npad * Kpad);
}

// The split plan: whole waves stay whole, only a last wave of at most half the SMs splits, into
// non-empty K ranges of at least 4 steps, with partial-sum and ticket space for exactly those tiles.
TEST(Nvfp4GemmSplits, PlanIsValid) {
  int checked_split = 0;
  for (int sms : {0, 1, 4, 66, 132})
    for (int64_t M : {1, 128, 256, 1024, 4608, 4609})
      for (int64_t N : {64, 3072, 12288})
        for (int64_t Kpad : {64, 256, 3072, 12288}) {
          const cuda::Nvfp4Split sp = cuda::nvfp4_gemm_splits(M, N, Kpad, sms);
          const int64_t tiles = cuda::nv_round_up(N, 256) / 256 * (cuda::nv_round_up(M, 128) / 128), KT = Kpad / 64;
          ASSERT_GE(sp.splits, 1);
          if (sp.splits == 1) {
            EXPECT_EQ(sp.full_tiles, tiles);
            continue;
          }
          ++checked_split;
          EXPECT_GT(sms, 0);
          EXPECT_EQ(sp.full_tiles % sms, 0) << "whole waves only";
          EXPECT_LE(2 * (tiles - sp.full_tiles), sms) << "only a last wave of at most half the SMs splits";
          EXPECT_GE(sp.k_steps_per_split, 4);
          EXPECT_LT(int64_t(sp.splits - 1) * sp.k_steps_per_split, KT) << "no empty split";
          EXPECT_GE(int64_t(sp.splits) * sp.k_steps_per_split, KT) << "every step in a split";
          EXPECT_EQ(sp.partial_bytes, size_t((tiles - sp.full_tiles) * sp.splits) * 256 * 128 * 4);
          EXPECT_EQ(sp.ticket_bytes, size_t(tiles - sp.full_tiles) * 4);
        }
  EXPECT_GT(checked_split, 20);
  // The reference shapes on 132 SMs: M = 256, K = N = 3072: 24 tiles x 5 splits; M = 4608: 3 whole
  // waves, then 36 tiles x 3 splits.
  const cuda::Nvfp4Split a = cuda::nvfp4_gemm_splits(256, 3072, 3072, 132), b = cuda::nvfp4_gemm_splits(4608, 3072, 3072, 132);
  EXPECT_EQ(a.splits, 5);
  EXPECT_EQ(a.full_tiles, 0);
  EXPECT_EQ(b.splits, 3);
  EXPECT_EQ(b.full_tiles, 396);
}

// ---- the kernel (Hopper only) ----

struct GemmCase {
  int64_t M, N, K, R;
  HalfKind dtype;
};

std::vector<uint16_t> run_gemm(const cuda::Nvfp4GemmParams& base, const GemmCase& c, int sms) {
  cuda::Nvfp4GemmParams g = base;
  const cuda::Nvfp4Split sp = cuda::nvfp4_gemm_splits(c.M, c.N, g.Kpad, sms);
  g.splits = sp.splits;
  g.k_steps_per_split = sp.k_steps_per_split;
  g.full_tiles = sp.full_tiles;
  cuda::DeviceBuffer partial(sp.partial_bytes + 16), tickets(sp.ticket_bytes + 16), y(size_t(c.M * c.N * 2));
  EXPECT_EQ(cudaMemset(tickets.get(), 0, tickets.size()), cudaSuccess);
  EXPECT_EQ(cudaMemset(y.get(), 0xFF, y.size()), cudaSuccess);
  g.partial = partial.as<float>();
  g.tickets = tickets.as<uint32_t>();
  g.y = y.as<uint16_t>();
  cuda::launch_nvfp4_gemm(g, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> out(size_t(c.M * c.N));
  EXPECT_EQ(cudaMemcpy(out.data(), y.get(), y.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

class CudaNvfp4Gemm : public ::testing::TestWithParam<GemmCase> {};

TEST_P(CudaNvfp4Gemm, MatchesDoubleReference) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const GemmCase c = GetParam();
  std::mt19937_64 rng(uint64_t(c.M * 7 + c.N * 3 + c.K + c.R));
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  const int64_t Kpad = cuda::nv_round_up(c.K, 64), Mpad = cuda::nv_round_up(c.M, 128), Npad = cuda::nv_round_up(c.N, 256);
  const int64_t Rpad = cuda::nv_padded_rank(c.R);
  // Weights: random codes and e4m3 scales 2^-4 .. 2^3; activations q·s of random codes and scales.
  Tensor q = Tensor::zeros(DType::U8, {c.N, c.K / 2}), s = Tensor::zeros(DType::F8_E4M3, {c.K / 16, c.N});
  for (int64_t i = 0; i < q.numel(); ++i) q.data_as<uint8_t>()[i] = uint8_t(rng());
  for (int64_t i = 0; i < s.numel(); ++i) s.data_as<uint8_t>()[i] = uint8_t(0x18 + rng() % 0x38);
  std::vector<double> a(size_t(c.M * c.K));
  std::vector<uint16_t> act(size_t(Mpad * Kpad), 0);
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t g = 0; g < c.K / 16; ++g) {
      const float sa = e4m3_to_f32(uint8_t(0x18 + rng() % 0x40));
      for (int64_t k = g * 16; k < g * 16 + 16; ++k) {
        const float v = e2m1_to_f32(uint8_t(rng() & 0xF)) * sa;  // exact
        a[size_t(m * c.K + k)] = v;
        act[size_t(cuda::nv_act_index(m, k, Kpad))] = f32_to_fp16(v);
      }
    }
  std::vector<float> lact(size_t(Mpad * std::max<int64_t>(Rpad, 1)), 0.0f), up(size_t(Npad * std::max<int64_t>(Rpad, 1)), 0.0f);
  std::vector<float> wc(size_t(Npad), 0.0f), bias(size_t(Npad), 0.0f);
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t r = 0; r < c.R; ++r) lact[size_t(m * Rpad + r)] = (u01(rng) - 0.5f) * 40.0f;
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t r = 0; r < c.R; ++r) up[size_t(n * Rpad + r)] = round_half(c.dtype, (u01(rng) - 0.5f) * 0.1f);  // T values
    wc[size_t(n)] = 0.5f + u01(rng);
    bias[size_t(n)] = u01(rng) - 0.5f;
  }
  const float alpha = 0.3671875f;
  const auto packed = cuda::pack_nvfp4_weights(q, s, c.N, c.K);
  cuda::DeviceBuffer dact, dw, dl, du, dwc, db;
  dact.upload(act.data(), act.size() * 2);
  dw.upload(packed.data(), packed.size());
  dl.upload(lact.data(), lact.size() * 4);
  du.upload(up.data(), up.size() * 4);
  dwc.upload(wc.data(), wc.size() * 4);
  db.upload(bias.data(), bias.size() * 4);
  cuda::Nvfp4GemmParams g;
  g.act = dact.as<uint16_t>();
  g.wpack = dw.as<uint8_t>();
  g.lact = dl.as<float>();
  g.proj_up = du.as<float>();
  g.wcscales = dwc.as<float>();
  g.bias = db.as<float>();
  g.M = c.M;
  g.N = c.N;
  g.Kpad = Kpad;
  g.Rpad = int(Rpad);
  g.alpha = alpha;
  g.dtype = c.dtype == HalfKind::BF16 ? cuda::HalfType::BF16 : cuda::HalfType::FP16;

  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  const auto y_split = run_gemm(g, c, sms);  // split where the layer would split
  const auto y_again = run_gemm(g, c, sms);
  const auto y_one = run_gemm(g, c, 0);      // never split
  const auto y_tail = run_gemm(g, c, 4);     // as on a 4-SM part: whole waves of 4 tiles, then a split tail
  EXPECT_EQ(std::memcmp(y_split.data(), y_again.data(), y_split.size() * 2), 0) << "not deterministic";

  // Reference: exact products summed in double; the §4.3 epilogue on it. Tolerance: the float32
  // summation of the GPU (2^-24 per addition of terms up to Σ|a·w|), its low-rank product from
  // l split into two bf16 parts (~2^-17 of Σ|l·up|), then T's rounding.
  int64_t bad = 0, differ = 0;
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < c.N; ++n) {
      double acc = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const uint8_t byte = q.data_as<uint8_t>()[n * (c.K / 2) + k / 2];
        const double w = double(e2m1_to_f32(k % 2 ? uint8_t(byte >> 4) : uint8_t(byte & 0xF))) *
                         double(e4m3_to_f32(s.data_as<uint8_t>()[(k / 16) * c.N + n]));
        acc += a[size_t(m * c.K + k)] * w;
        mag += std::fabs(a[size_t(m * c.K + k)] * w);
      }
      double u = 0, umag = 0;
      for (int64_t r = 0; r < c.R; ++r) {
        u += double(lact[size_t(m * Rpad + r)]) * double(up[size_t(n * Rpad + r)]);
        umag += std::fabs(double(lact[size_t(m * Rpad + r)]) * double(up[size_t(n * Rpad + r)]));
      }
      const double want = (acc * alpha) * wc[size_t(n)] + bias[size_t(n)] + u;
      const double tol = std::ldexp(mag * alpha * wc[size_t(n)], -24) * double(c.K / 8 + 4) +
                         std::ldexp(umag, -16) + std::ldexp(std::fabs(want), c.dtype == HalfKind::BF16 ? -7 : -10);
      for (const auto* y : {&y_split, &y_one, &y_tail}) {
        const double got = half_to_f32(c.dtype, (*y)[size_t(m * c.N + n)]);
        if (!(std::fabs(got - want) <= tol) && bad++ < 5)
          ADD_FAILURE() << "m " << m << " n " << n << ": gpu " << got << " want " << want << " tol " << tol;
      }
      differ += y_split[size_t(m * c.N + n)] != y_one[size_t(m * c.N + n)];
    }
  EXPECT_EQ(bad, 0);
  // Split and unsplit sums differ only in float32 rounding: rarely in T.
  EXPECT_LE(double(differ), 0.02 * double(c.M * c.N) + 1);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaNvfp4Gemm,
                         ::testing::Values(GemmCase{1, 64, 64, 0, HalfKind::BF16}, GemmCase{7, 200, 256, 16, HalfKind::FP16},
                                           GemmCase{128, 256, 4096, 32, HalfKind::BF16},  // 1 tile: 16 splits
                                           GemmCase{257, 520, 512, 32, HalfKind::BF16},
                                           GemmCase{300, 384, 1024, 128, HalfKind::FP16},
                                           GemmCase{130, 1000, 2048, 32, HalfKind::BF16}));

}  // namespace
#endif  // SVDQUANT_HAVE_CUDA
