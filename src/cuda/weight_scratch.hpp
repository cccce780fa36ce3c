// One device buffer per GPU for what a layer needs only during one call, shared by every layer on
// that device: the weights an int4 layer expands to e4m3 per call (weight_expand.cuh,
// GemmParams::wexp; N x K bytes, twice the layer's int4 weights, so no layer keeps its own), and
// the float32 split-K partial sums of an nvfp4 layer at small M (Nvfp4GemmParams::partial).
//
// A Lease holds the scratch from before the expansion (Sm90Layer takes it before the activation
// kernel, which may carry the expansion) through the GEMM that reads it: its stream first
// waits for the previous lease's work (an event), whichever stream that was on, and the lease
// records its own work's completion when it ends. The host mutex is held for the lease's lifetime,
// so leases are enqueued one at a time. Growing the buffer waits for the previous work on the host
// (it happens only when a larger layer comes along). Not for use inside a CUDA-graph capture: the
// caller falls back to the register path there (bitwise the same output).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "device_buffer.hpp"

namespace svdquant::cuda {

class WeightScratch {
 public:
  class Lease {
   public:
    Lease(WeightScratch& s, size_t bytes, cudaStream_t stream);
    ~Lease();  // records the end of the work enqueued on `stream` meanwhile
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    uint8_t* data() const { return s_.buf_.as<uint8_t>(); }

   private:
    WeightScratch& s_;
    std::lock_guard<std::mutex> lock_;
    cudaStream_t stream_;
  };

  // The scratch of the current device (created on first use, never freed).
  static WeightScratch& current();

 private:
  WeightScratch();
  std::mutex mutex_;
  DeviceBuffer buf_;
  cudaEvent_t done_ = nullptr;  // the last lease's work
  bool used_ = false;
};

}  // namespace svdquant::cuda
