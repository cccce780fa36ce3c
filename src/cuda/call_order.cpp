// Call ordering and workspace retirement of the cuda-sm90 layers (call_order.hpp).
#include "call_order.hpp"

#include <string>
#include <utility>

#include "cuda_check.hpp"
#include "svdquant/error.hpp"

namespace svdquant::cuda {

int64_t check_layer_io(const LayerDesc& desc, int device, const Tensor& x, const Tensor& y) {
  const DType T = desc.dtype == HalfKind::BF16 ? DType::BF16 : DType::F16;
  const int64_t K = desc.K, N = desc.N;
  const Device dev{DeviceType::CUDA, device};
  if (x.dim() != 2 || x.size(1) != K || x.dtype() != T || !x.is_contiguous() || !(x.device() == dev))
    throw FormatError("cuda-sm90: input x: expected a contiguous " + std::string(dtype_name(T)) + " tensor [M, " +
                      std::to_string(K) + "] on cuda:" + std::to_string(device) + ", found " +
                      std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()) +
                      (x.device().type == DeviceType::CUDA ? " on cuda:" + std::to_string(x.device().index) : " on the host"));
  const int64_t M = x.size(0);
  if (y.dim() != 2 || y.size(0) != M || y.size(1) != N || y.dtype() != T || !y.is_contiguous() || !(y.device() == dev))
    throw FormatError("cuda-sm90: output y: expected a contiguous " + std::string(dtype_name(T)) + " tensor " +
                      shape_str({M, N}) + " on cuda:" + std::to_string(device) + ", found " +
                      std::string(dtype_name(y.dtype())) + " " + shape_str(y.shape()));
  return M;
}

CallOrder::CallOrder() { check(cudaEventCreateWithFlags(&last_use_, cudaEventDisableTiming), "cudaEventCreate"); }

CallOrder::~CallOrder() {
  if (last_use_) {
    cudaEventSynchronize(last_use_);
    cudaEventDestroy(last_use_);
  }
}

bool CallOrder::capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &cs), "cudaStreamIsCapturing");
  return cs != cudaStreamCaptureStatusNone;
}

bool CallOrder::before_growth(int64_t M, int64_t rows_held, bool capturing) {
  if (capturing)
    throw UnsupportedError("cuda-sm90: CUDA-graph capture of a layer call with M = " + std::to_string(M) +
                           " rows, more than its workspace holds (" + std::to_string(rows_held) +
                           "): run the layer once outside the capture with at least that many rows first");
  if (used_) check(cudaEventSynchronize(last_use_), "cudaEventSynchronize(workspace)");
  const bool retire_old = captured_;
  captured_ = false;  // no graph has captured the new buffers yet
  return retire_old;
}

void CallOrder::retire(std::vector<DeviceBuffer> buffers) {
  for (DeviceBuffer& b : buffers)
    if (b.get()) retired_.push_back(std::move(b));
}

void CallOrder::before_launch(cudaStream_t stream, bool capturing) {
  if (!capturing && used_ && stream != last_stream_) check(cudaStreamWaitEvent(stream, last_use_, 0), "cudaStreamWaitEvent");
}

void CallOrder::after_launch(cudaStream_t stream, bool capturing) {
  if (capturing) {
    captured_ = true;
    return;
  }
  check(cudaEventRecord(last_use_, stream), "cudaEventRecord");
  last_stream_ = stream;
  used_ = true;
}

}  // namespace svdquant::cuda
