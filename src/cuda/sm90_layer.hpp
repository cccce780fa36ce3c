// A layer prepared for the cuda-sm90 backend: the canonical tensors repacked into the layouts of
// sm90_layout.hpp, on the device, plus a reusable workspace for the activations.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "act_workspace.hpp"
#include "call_order.hpp"
#include "device_buffer.hpp"
#include "sm90_kernels.hpp"
#include "svdquant/backend.hpp"
#include "svdquant/checkpoint.hpp"

namespace svdquant::cuda {

class Sm90Layer final : public PreparedLayer {
 public:
  // Repacks `w` (host tensors; int4 precision) on the current CUDA device.
  Sm90Layer(const LayerWeights& w, const ForwardOptions& opt);

  // x: [M, K] T, y: [M, N] T, device tensors on this layer's device. Calls on one layer are
  // ordered: a call on another stream first waits for the previous call's work. A call inside a
  // CUDA-graph capture is recorded without that ordering (replays are ordered by the stream the
  // graph is launched on) and needs a workspace sized by an earlier call with as many rows;
  // buffers a graph was captured with are never freed while the layer lives.
  void forward(const Tensor& x, Tensor& y, cudaStream_t stream) const;

  int device() const { return device_; }

  // The GEMM's cluster size (GemmParams::cluster; 0: chosen per call); tests and benchmarks pin it.
  void set_gemm_cluster(int cluster) { cluster_ = cluster; }

  // How the GEMM gets its weight operand. REGISTERS: each consumer expands the int4 fragments to
  // e4m3 in registers, for every activation row tile. EXPANDED: the call first expands the int4
  // weights once to e4m3 (in spare blocks of the activation kernel where it has room, else
  // launch_expand_weights) into the device's shared WeightScratch (N x K
  // bytes, weight_scratch.hpp) and the GEMM reads them from shared memory (v9: fp8 GEMM 142 ->
  // 116 us at M = 4608, K = N = 3072, docs/perf-notes.md). AUTO: EXPANDED from kExpandMinRows
  // rows up, where the expansion pays for itself. Inside a CUDA-graph capture and with clusters
  // the GEMM always takes the register path. Every path gives bitwise the same output. With
  // fp32 or fp8 accumulation and no pinned cluster, a GEMM of few output tiles is split along K
  // (GemmParams::splits): the same group sums added in another association (NUMERICS.md §4.1, §5
  // allow it), still deterministic.
  enum class WeightPath { AUTO, REGISTERS, EXPANDED };
  static constexpr int64_t kExpandMinRows = 2048;
  void set_weight_path(WeightPath path) { weight_path_ = path; }

 private:
  void ensure_workspace(int64_t M, bool capturing) const;  // called with order_.mutex() held
  int gemm_splits_for(int64_t M) const;                    // GemmParams::splits of a call of M rows
  size_t split_ws_bytes(int64_t Mpad) const;               // split-K partial sums of calls up to Mpad rows

  int device_ = 0;
  int64_t Rpad_ = 0;
  float alpha_ = 1.0f;
  int cluster_ = 0;
  WeightPath weight_path_ = WeightPath::AUTO;
  DeviceBuffer wfrag_, wscale_, smooth_, smooth_rcp_, pdfrag_, proj_up_, wcscales_, bias_;
  int sms_ = 0;                 // SMs of the device (gemm_splits)
  DeviceBuffer split_tickets_;  // GemmParams::split_tickets, 2 x SMs, zero between calls

  // Workspace (grows with M, reused across calls), then the call ordering: declared last, so its
  // destructor waits for the last call's work before any buffer is freed.
  mutable ActWorkspace ws_;
  mutable DeviceBuffer split_ws_;  // GemmParams::split_ws, grown with ws_
  mutable CallOrder order_;
};

}  // namespace svdquant::cuda
