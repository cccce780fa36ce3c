// An nvfp4 layer prepared for the cuda-sm90 backend: weights in the layouts of nvfp4_kernels.hpp
// (codes kept 4-bit, dequantized to fp16 in the GEMM's registers), plus a reusable
// workspace for the activations. Same call contract as Sm90Layer (ordering across streams,
// CUDA-graph capture: the workspace must have been sized by an earlier call with as many rows).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "call_order.hpp"
#include "device_buffer.hpp"
#include "nvfp4_kernels.hpp"
#include "svdquant/backend.hpp"
#include "svdquant/checkpoint.hpp"

namespace svdquant::cuda {

class Nvfp4Layer final : public PreparedLayer {
 public:
  // `w`: host tensors, nvfp4 precision; `opt` resolved (fp32 accumulation, checkpoint activations).
  Nvfp4Layer(const LayerWeights& w, const ForwardOptions& opt);

  // x: [M, K] T, y: [M, N] T, contiguous device tensors on this layer's device.
  void forward(const Tensor& x, Tensor& y, cudaStream_t stream) const;
  int device() const { return device_; }

 private:
  void ensure_workspace(int64_t M, bool capturing) const;  // called with order_.mutex() held

  int device_ = 0;
  int64_t Kpad_ = 0, Npad_ = 0, Rpad_ = 0;
  float alpha_ = 1.0f;
  int sms_ = 0;
  DeviceBuffer wpack_, tickets_, smooth_, proj_down_, proj_up_, wcscales_, bias_;
  DeviceBuffer smooth_rcp_;  // proj_down_ holds the activation kernel's fragments (nvfp4_act_pack.hpp)

  mutable int64_t ws_rows_ = 0;
  mutable DeviceBuffer act_, lact_;
  mutable CallOrder order_;  // last: waits for the last call's work before buffers are freed
};

}  // namespace svdquant::cuda
