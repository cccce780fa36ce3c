// Device buffers and launch parameters for running the activation kernel (act_quant.cu) on its
// own in a test: inputs uploaded, outputs poisoned (every byte the GEMM reads must be written),
// in both modes (4-bit codes with T scales; fp8 codes with float32 row scales). CUDA builds only.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "cuda_test_util.hpp"

#include "act_workspace.hpp"
#include "device_buffer.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "sm90_pack.hpp"
#include "svdquant/checkpoint.hpp"

namespace svdquant::cudatest {

// One activation-kernel test case and its test name ("M7_K512_R16_bf16_unsigned").
struct ActCase {
  int64_t M, K, R;
  HalfKind dtype;
  bool act_unsigned;
};
inline std::string act_case_name(const ::testing::TestParamInfo<ActCase>& i) {
  const ActCase& c = i.param;
  return "M" + std::to_string(c.M) + "_K" + std::to_string(c.K) + "_R" + std::to_string(c.R) +
         (c.dtype == HalfKind::BF16 ? "_bf16" : "_fp16") + (c.act_unsigned ? "_unsigned" : "_signed");
}

// A random int4 layer of N = 64 rows for activation-kernel tests (the kernel does not read N).
inline LayerWeights act_case_layer(const ActCase& c, uint64_t seed) {
  return random_layer(LayerSpec{64, c.K, c.R, c.dtype, c.act_unsigned}, seed);
}

struct ActKernelBuffers {
  int64_t M = 0, K = 0, G = 0, Mpad = 0, Rpad = 0;
  cuda::DeviceBuffer dx, pd, smooth, smooth_rcp;
  cuda::ActWorkspace ws;
  cuda::DeviceBuffer &codes = ws.codes, &ascale = ws.ascale, &lact = ws.lact, &tickets = ws.tickets,
                     &row_amax = ws.row_amax, &row_scale = ws.row_scale;
  cuda::ActQuantParams p;

  ActKernelBuffers(const LayerWeights& w, const Tensor& x, bool fp8) {
    M = x.size(0);
    K = w.desc.K;
    G = K / cuda::kGroup;
    Mpad = cuda::round_up(M, cuda::kTileM);
    Rpad = cuda::padded_rank(w.desc.R);
    ws.allocate(M, K, int(Rpad), fp8);
    dx.upload(x.data(), x.nbytes());
    smooth.upload(w.smooth.data(), w.smooth.nbytes());
    const auto rcp = cuda::pack_smooth_reciprocal(w.smooth, K);
    smooth_rcp.upload(rcp.data(), rcp.size() * 4);
    if (Rpad > 0) {
      const auto frag = cuda::pack_proj_down(w.proj_down, K, w.desc.R, Rpad);
      pd.upload(frag.data(), frag.size() * 4);
    }
    ok(cudaMemset(codes.get(), 0x7F, codes.size()));
    ok(cudaMemset(ascale.get(), 0xFF, ascale.size()));
    ok(cudaMemset(lact.get(), 0xFF, lact.size()));
    if (fp8) {
      ok(cudaMemset(row_scale.get(), 0xFF, row_scale.size()));
      ok(cudaMemset(row_amax.get(), 0x55, row_amax.size()));  // scratch: the kernel must not depend on its contents
    }
    ws.fill(p);
    p.x = dx.as<uint16_t>();
    p.smooth = smooth.as<uint16_t>();
    p.smooth_rcp = smooth_rcp.as<float>();
    p.pdfrag = pd.as<uint32_t>();
    p.M = M;
    p.K = K;
    p.Rpad = int(Rpad);
    p.act_unsigned = w.desc.act_unsigned;
    p.dtype = w.desc.dtype == HalfKind::BF16 ? cuda::HalfType::BF16 : cuda::HalfType::FP16;
    p.fp8 = fp8;
  }

  static void ok(cudaError_t e) {
    if (e != cudaSuccess) throw std::runtime_error(std::string("test setup: ") + cudaGetErrorString(e));
  }
};

}  // namespace svdquant::cudatest
