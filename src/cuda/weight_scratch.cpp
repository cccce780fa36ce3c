#include "weight_scratch.hpp"

#include <array>
#include <atomic>
#include <string>

#include "svdquant/error.hpp"

namespace svdquant::cuda {

WeightScratch::WeightScratch() { check(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate(weight scratch)"); }

WeightScratch& WeightScratch::current() {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<WeightScratch*>, kMaxDevices> all{};
  static std::mutex create;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev < 0 || dev >= kMaxDevices) throw UnsupportedError("cuda-sm90: device index " + std::to_string(dev) + " out of range");
  if (WeightScratch* s = all[dev].load(std::memory_order_acquire)) return *s;
  std::lock_guard<std::mutex> lock(create);
  if (!all[dev].load()) all[dev].store(new WeightScratch(), std::memory_order_release);  // lives until exit
  return *all[dev].load();
}

WeightScratch::Lease::Lease(WeightScratch& s, size_t bytes, cudaStream_t stream) : s_(s), lock_(s.mutex_), stream_(stream) {
  if (bytes > s_.buf_.size()) {
    if (s_.used_) check(cudaEventSynchronize(s_.done_), "cudaEventSynchronize(weight scratch)");  // nothing reads the old buffer
    s_.buf_.resize(bytes);
  }
  if (s_.used_) check(cudaStreamWaitEvent(stream, s_.done_, 0), "cudaStreamWaitEvent(weight scratch)");
}

WeightScratch::Lease::~Lease() {
  // Not thrown from a destructor: a failed record is reported by the next CUDA call.
  if (cudaEventRecord(s_.done_, stream_) == cudaSuccess) s_.used_ = true;
}

}  // namespace svdquant::cuda
