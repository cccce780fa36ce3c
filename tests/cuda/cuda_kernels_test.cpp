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

#include "device_buffer.hpp"
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

}  // namespace

#endif  // SVDQUANT_HAVE_CUDA
