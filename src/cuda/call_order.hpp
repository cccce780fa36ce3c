// How calls on one prepared cuda-sm90 layer (int4 or nvfp4) are ordered and what becomes of its
// workspace: calls are serialized by a mutex; a call on another stream first waits for the
// previous call's work (an event); a call inside a CUDA-graph capture is recorded without that
// ordering (an event recorded in a capture cannot be waited on outside it, and waiting on an
// outside event invalidates the capture; replays are ordered by the stream the graph is launched
// on) and may not grow the workspace; buffers a graph was captured with are retired, never freed,
// while the layer lives. Also the check of a call's input and output tensors.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "device_buffer.hpp"
#include "svdquant/backend.hpp"

namespace svdquant::cuda {

// x: a contiguous [M, K] T tensor and y a contiguous [M, N] T tensor on cuda:`device` (the
// layer's K, N and T); throws FormatError naming what was found. Returns M.
int64_t check_layer_io(const LayerDesc& desc, int device, const Tensor& x, const Tensor& y);

class CallOrder {
 public:
  CallOrder();
  ~CallOrder();
  CallOrder(const CallOrder&) = delete;
  CallOrder& operator=(const CallOrder&) = delete;

  std::mutex& mutex() { return mutex_; }
  // The rest with mutex() held. Whether `stream` is being captured into a graph.
  static bool capturing(cudaStream_t stream);
  // Before a workspace holding `rows_held` rows grows for a call of M rows: refuses inside a
  // capture, waits for the previous call's work, and returns true when a graph captured the
  // current buffers (pass them to retire() instead of freeing them).
  bool before_growth(int64_t M, int64_t rows_held, bool capturing);
  void retire(std::vector<DeviceBuffer> buffers);
  // Before the call's launches: wait for the previous call when it ran on another stream.
  void before_launch(cudaStream_t stream, bool capturing);
  // After the call's launches.
  void after_launch(cudaStream_t stream, bool capturing);

 private:
  std::mutex mutex_;
  cudaEvent_t last_use_ = nullptr;
  cudaStream_t last_stream_ = nullptr;
  bool used_ = false;
  bool captured_ = false;               // some graph captured the current workspace
  std::vector<DeviceBuffer> retired_;   // workspaces of earlier captures
};

}  // namespace svdquant::cuda
