// The activation kernel on its own (NUMERICS.md §2, §3, §4.3, §6): codes and scales bit-exact
// with ref::quantize_activations, including padding rows and non-finite rows, and the low-rank
// down projection within float32 summation-order error of ref::lowrank_down.
#include <gtest/gtest.h>

#include "cuda_test_util.hpp"

#ifdef SVDQUANT_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "fp8_act.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "sm90_pack.hpp"
#include "act_kernel_buffers.hpp"
#include "svdquant/cpu_reference.hpp"

using namespace svdquant;

namespace {

using cudatest::ActCase;

class CudaActivationKernel : public ::testing::TestWithParam<ActCase> {};

TEST_P(CudaActivationKernel, CodesScalesBitExactLowRankClose) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const ActCase c = GetParam();
  const LayerWeights w = cudatest::act_case_layer(c, 1000 + uint64_t(c.M * 7 + c.K));
  Tensor x = cudatest::random_input(c.M, c.K, c.dtype, c.act_unsigned, 77 + uint64_t(c.M));
  // Non-finite rows (§6): a NaN in row 0, an Inf in the last row's first group.
  auto* xp = x.data_as<uint16_t>();
  // (Only with M >= 3, so that finite rows remain for the low-rank comparison.)
  const bool non_finite = c.M >= 3;
  if (non_finite) {
    xp[c.K > 64 ? 64 + 5 : 5] = f32_to_half(c.dtype, std::numeric_limits<float>::quiet_NaN());
    xp[(c.M - 1) * c.K + 3] = f32_to_half(c.dtype, -std::numeric_limits<float>::infinity());
  }
  // An all-zero group (scale 0, codes 0) in row 1's first group.
  if (c.M > 1)
    for (int k = 0; k < 64; ++k) xp[c.K + k] = 0;

  cudatest::ActKernelBuffers buf(w, x, false);
  const int64_t G = buf.G, Mt = buf.Mpad / cuda::kTileM, Mpad = buf.Mpad, Rpad = buf.Rpad;
  const cuda::ActQuantParams& p = buf.p;
  auto& codes = buf.codes;
  auto& ascale = buf.ascale;
  auto& lact = buf.lact;
  auto& tickets = buf.tickets;
  cuda::launch_act_quant(p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // The same with float32 scales (the fp32-accumulation format): the same values, widened.
  cuda::DeviceBuffer ascale32(size_t(Mt * G * 128 * 4));
  cuda::ActQuantParams p32 = p;
  p32.ascale = ascale32.as<uint16_t>();
  p32.scale_f32 = true;
  cuda::launch_act_quant(p32, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> hs32(ascale32.size() / 4);
  ASSERT_EQ(cudaMemcpy(hs32.data(), ascale32.get(), ascale32.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<unsigned> ht(tickets.size() / 4);
  ASSERT_EQ(cudaMemcpy(ht.data(), tickets.get(), tickets.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(std::count(ht.begin(), ht.end(), 0u), int64_t(ht.size())) << "ticket counters are left zero";

  std::vector<uint8_t> hc(codes.size());
  std::vector<uint16_t> hs(ascale.size() / 2);
  std::vector<float> hl(lact.size() / 4);
  ASSERT_EQ(cudaMemcpy(hc.data(), codes.get(), hc.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(hs.data(), ascale.get(), hs.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(hl.data(), lact.get(), hl.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);

  const ref::QuantizedActivations q = ref::quantize_activations(x, w, Activations::CHECKPOINT);
  int64_t bad_codes = 0, bad_scales = 0, bad_pad = 0, nan_scales = 0;
  for (int64_t m = 0; m < Mpad; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t mt = m / 128, r = m % 128;
      const uint8_t* tile = hc.data() + (mt * G + g) * cuda::kCodeTileBytes;
      const uint16_t s = hs[size_t((mt * G + g) * 128 + r)];
      for (int k = 0; k < 64; ++k) {
        const float v = e4m3_to_f32(tile[cuda::code_tile_offset(int(r), k)]);
        if (m >= c.M) {
          bad_pad += v != 0.0f;
          continue;
        }
        bad_codes += v != float(q.codes.data_as<int8_t>()[m * c.K + g * 64 + k]);
      }
      if (m >= c.M) {
        bad_pad += s != 0;
        continue;
      }
      const uint16_t rs = q.scales.data_as<uint16_t>()[m * G + g];
      const float s32 = hs32[size_t((mt * G + g) * 128 + r)], w32 = half_to_f32(c.dtype, s);
      bad_scales += (std::isnan(s32) || std::isnan(w32)) ? std::isnan(s32) != std::isnan(w32) : s32 != w32;
      const bool gn = std::isnan(half_to_f32(c.dtype, s)), rn = std::isnan(half_to_f32(c.dtype, rs));
      nan_scales += gn;
      bad_scales += (gn || rn) ? gn != rn : s != rs;
    }
  EXPECT_EQ(bad_codes, 0);
  EXPECT_EQ(bad_scales, 0);
  EXPECT_EQ(bad_pad, 0) << "padding rows must hold zero codes and scales";
  if (non_finite) {
    EXPECT_GT(nan_scales, 0) << "the NaN and Inf groups get NaN scales (§6)";
  }

  if (Rpad > 0) {
    const std::vector<float> l = ref::lowrank_down(x, w);
    double num = 0, den = 0;
    int64_t nan_mismatch = 0;  // non-finite on one side only
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t r = 0; r < c.R; ++r) {
        const float a = hl[size_t(m * Rpad + r)], b = l[size_t(m * c.R + r)];
        if (!std::isfinite(a) || !std::isfinite(b)) {
          nan_mismatch += std::isfinite(a) != std::isfinite(b);
          continue;
        }
        num += double(a - b) * double(a - b);
        den += double(b) * double(b);
      }
    EXPECT_EQ(nan_mismatch, 0);
    EXPECT_LT(std::sqrt(num / den), 1e-5) << "low-rank down projection";
    for (int64_t m = c.M; m < Mpad; ++m)
      for (int64_t r = 0; r < Rpad; ++r) EXPECT_EQ(hl[size_t(m * Rpad + r)], 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaActivationKernel,
                         ::testing::Values(ActCase{1, 64, 32, HalfKind::BF16, false},
                                           ActCase{7, 512, 16, HalfKind::BF16, true},
                                           ActCase{130, 1024, 32, HalfKind::FP16, false},
                                           ActCase{33, 640, 128, HalfKind::FP16, true},
                                           ActCase{300, 3072, 8, HalfKind::BF16, false},
                                           ActCase{129, 256, 0, HalfKind::BF16, false},
                                           ActCase{64, 1536, 64, HalfKind::BF16, true},
                                           // Large M: few chunks of many groups, so the x ring
                                           // wraps (8 groups per warp at R = 32; 8 at R = 0 with
                                           // its own chunking) and an uneven last chunk (G = 25).
                                           ActCase{4609, 3072, 32, HalfKind::BF16, false},
                                           ActCase{2000, 12288, 0, HalfKind::FP16, true},
                                           ActCase{4609, 1600, 16, HalfKind::FP16, true}),
                         cudatest::act_case_name);

// The weight expansion carried by spare blocks of the activation kernel (act_quant.cu, v12; with
// fp8 the single-pass kernel's, fp8_act.cu): the same e4m3 tiles as launch_expand_weights, byte
// for byte; the activation outputs unchanged; the counters left zero, so a second call expands
// again. Where the tiles do not fit the spare blocks the kernel leaves the expansion to the caller
// (returns false, writes nothing there). fp8 calls carry it where fp8_act_plan says so; with
// `cluster` > 0 they run launch_fp8_act on a plan of 64 rows, that many chunks and `fp8_rows`
// expansion rows instead (whatever the planner's model would pick).
struct ExpandCase {
  int64_t M, K, R, Nt;
  bool fp8;
  bool fits;  // int4: whether the kernel carries the expansion
  int cluster = 0, fp8_rows = 0;
};
class CudaActKernelExpansion : public ::testing::TestWithParam<ExpandCase> {};

TEST_P(CudaActKernelExpansion, SameTilesAsTheExpansionKernel) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const ExpandCase c = GetParam();
  const ActCase ac{c.M, c.K, c.R, HalfKind::BF16, false};
  const LayerWeights w = cudatest::act_case_layer(ac, 4242 + uint64_t(c.M));
  const Tensor x = cudatest::random_input(c.M, c.K, ac.dtype, false, 99);
  cudatest::ActKernelBuffers buf(w, x, c.fp8);
  const int64_t G = c.K / cuda::kGroup, tiles = c.Nt * G;
  std::vector<uint8_t> hw(size_t(tiles * cuda::kWeightTileBytes));
  uint64_t r = 12345;
  for (auto& b : hw) b = uint8_t((r = r * 6364136223846793005ull + 1442695040888963407ull) >> 56);  // any bytes are int4 codes
  cuda::DeviceBuffer wfrag, wexp_ref(size_t(tiles * cuda::kCodeTileBytes)), wexp(size_t(tiles * cuda::kCodeTileBytes));
  wfrag.upload(hw.data(), hw.size());
  cuda::launch_expand_weights(wfrag.as<uint8_t>(), wexp_ref.as<uint8_t>(), c.Nt, G, nullptr);

  cuda::Fp8ActPlan forced;  // c.cluster > 0: the plan, without and with the expansion rows
  if (c.cluster > 0) {
    forced = cuda::fp8_act_make_plan(64, c.cluster, c.K, int(buf.Rpad), true);
    ASSERT_EQ(forced.cluster, c.cluster);
  }
  auto launch = [&](const cuda::ActQuantParams& p, int exp_rows) {
    if (c.cluster == 0) return cuda::launch_act_quant(p, nullptr);
    cuda::Fp8ActPlan pl = forced;
    pl.exp_rows = exp_rows;
    cuda::launch_fp8_act(p, pl, nullptr);
    return exp_rows > 0;
  };
  const bool fits = c.cluster > 0 ? true
                    : c.fp8        ? cuda::fp8_act_plan(c.M, c.K, int(buf.Rpad), tiles, cuda::sm_count()).exp_rows > 0
                                   : c.fits;

  // The activation outputs without the expansion, for comparison.
  ASSERT_FALSE(launch(buf.p, 0));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto bytes = [](const cuda::DeviceBuffer& b) {
    std::vector<uint8_t> h(b.size());
    if (!h.empty()) {
      EXPECT_EQ(cudaMemcpy(h.data(), b.get(), h.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return h;
  };
  const std::vector<uint8_t> codes0 = bytes(buf.codes), lact0 = bytes(buf.lact), ref = bytes(wexp_ref);
  const std::vector<uint8_t> scales0 = bytes(c.fp8 ? buf.row_scale : buf.ascale);

  cuda::ActQuantParams p = buf.p;
  p.wfrag = wfrag.as<uint8_t>();
  p.wexp = wexp.as<uint8_t>();
  p.exp_tiles = tiles;
  for (int call = 0; call < 2; ++call) {
    ASSERT_EQ(cudaMemset(wexp.get(), 0xAA, wexp.size()), cudaSuccess);
    const bool expanded = launch(p, c.fp8_rows);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(expanded, fits) << "call " << call;
    const std::vector<uint8_t> got = bytes(wexp);
    if (fits) {
      EXPECT_TRUE(got == ref) << "call " << call << ": expanded tiles differ from launch_expand_weights";
    } else {
      EXPECT_EQ(std::count(got.begin(), got.end(), uint8_t(0xAA)), int64_t(got.size())) << "nothing written";
    }
    EXPECT_TRUE(bytes(buf.codes) == codes0) << "codes";
    EXPECT_TRUE(bytes(buf.lact) == lact0) << "low-rank sums";
    EXPECT_TRUE(bytes(c.fp8 ? buf.row_scale : buf.ascale) == scales0) << "scales";
    const std::vector<uint8_t> t = bytes(buf.tickets);
    EXPECT_EQ(std::count(t.begin(), t.end(), uint8_t(0)), int64_t(t.size())) << "tickets and counters left zero";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaActKernelExpansion,
                         ::testing::Values(ExpandCase{4609, 3072, 32, 24, false, true}, ExpandCase{4609, 3072, 32, 24, true, true},
                                           ExpandCase{7, 512, 32, 3, false, true}, ExpandCase{300, 1024, 16, 5, true, true},
                                           ExpandCase{4609, 3072, 0, 8, false, true},
                                           ExpandCase{4609, 3072, 32, 168, false, false},
                                           // fp8, forced: few expansion blocks (many batches
                                           // each), and many (more than batches).
                                           ExpandCase{4609, 3072, 32, 24, true, true, 4, 2},
                                           ExpandCase{1000, 1024, 0, 3, true, true, 2, 40}),
                         [](const ::testing::TestParamInfo<ExpandCase>& i) {
                           const ExpandCase& c = i.param;
                           return "M" + std::to_string(c.M) + "_K" + std::to_string(c.K) + "_R" + std::to_string(c.R) + "_Nt" +
                                  std::to_string(c.Nt) + (c.fp8 ? "_fp8" : "_int4") +
                                  (c.cluster > 0 ? "_cluster" + std::to_string(c.cluster) + "_rows" + std::to_string(c.fp8_rows) : "");
                         });

}  // namespace

#endif  // SVDQUANT_HAVE_CUDA
