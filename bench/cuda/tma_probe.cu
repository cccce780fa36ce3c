// tma_probe: how fast 1-D bulk copies (cp.async.bulk, the GEMM's producer) bring L2-resident data
// into shared memory, by copy size, copies per stage and bytes in flight (docs/perf-notes.md v8).
// The GEMM's delivery alone measured ~107 us at M = 4608, K = N = 3072 (5 TB/s into the SMs),
// while cuBLASLt's FP8 GEMM moves about as many bytes in 65 us; this probe separates the copy
// mechanism from the GEMM.
//
// Every SM runs one CTA: one producer thread fills a ring of stages (each `copies` bulk copies of
// `bytes`, one mbarrier), one consumer warpgroup waits for each stage and releases it (one arrival
// per warp), as w4a4_gemm.cu's producer and consumers do. The sources walk a 24 MB buffer (L2-resident after the warm-up
// run), each SM from its own offset. Prints GB/s into the SMs.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "probe_main.hpp"
#include "sm90_primitives.cuh"

using namespace svdquant::cuda::sm90;
using svdquant::probe::ck;
using svdquant::probe::require_hopper;

namespace {

constexpr int kConsumers = 128;

__global__ void __launch_bounds__(kConsumers + 32, 1)
    probe_kernel(const uint8_t* src, uint64_t src_bytes, int bytes, int copies, int stages, int iters) {
  extern __shared__ __align__(1024) uint8_t smem[];
  const int stage_bytes = bytes * copies;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + size_t(stages) * stage_bytes);
  uint64_t* empty = full + stages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumers / 32);
    }
    mbar_init_fence();
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp == kConsumers / 32) {
    if (lane == 0) {
      uint64_t off = (uint64_t(blockIdx.x) * 1048573u * 16u) % src_bytes;
      for (int i = 0; i < iters; ++i) {
        const int s = i % stages;
        if (i >= stages) mbar_wait(&empty[s], uint32_t((i / stages) - 1) & 1u);
        mbar_arrive_expect_tx(&full[s], uint32_t(stage_bytes));
        for (int c = 0; c < copies; ++c) {
          if (off + uint64_t(bytes) > src_bytes) off = 0;
          bulk_copy_g2s(smem + size_t(s) * stage_bytes + size_t(c) * bytes, src + off, uint32_t(bytes), &full[s]);
          off += uint64_t(bytes);
        }
      }
    }
  } else {
    for (int i = 0; i < iters; ++i) {
      const int s = i % stages;
      mbar_wait(&full[s], uint32_t(i / stages) & 1u);
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[s]);
    }
  }
}

}  // namespace

int main() {
  const cudaDeviceProp prop = require_hopper("tma_probe");
  const uint64_t src_bytes = uint64_t(24) << 20;
  uint8_t* src = nullptr;
  ck(cudaMalloc(&src, src_bytes), "cudaMalloc");
  ck(cudaMemset(src, 1, src_bytes), "cudaMemset");
  ck(cudaFuncSetAttribute(probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 232448), "cudaFuncSetAttribute");
  cudaEvent_t a, b;
  ck(cudaEventCreate(&a), "event");
  ck(cudaEventCreate(&b), "event");
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::printf("| copy bytes | copies per stage | stages | KB in flight per SM | GB/s into the SMs | us per MB per SM |\n|---|---|---|---|---|---|\n");
  struct Cfg { int bytes, copies, stages; };
  const std::vector<Cfg> cfgs = {
      {512, 25, 12},  {2048, 6, 12},  {4096, 3, 12},  {8192, 2, 12},  {12800, 1, 12}, {16384, 1, 12},
      {32768, 1, 6},  {65536, 1, 3},  {8192, 1, 4},   {8192, 1, 8},   {8192, 1, 16},  {8192, 1, 24},
      {16384, 2, 6},  {2048, 16, 6},  {1024, 13, 12},
  };
  for (const Cfg& c : cfgs) {
    const int stage_bytes = c.bytes * c.copies;
    const size_t smem = size_t(c.stages) * stage_bytes + 2 * c.stages * sizeof(uint64_t);
    if (smem > 232448) continue;
    // About 4.3 MB per SM, as the GEMM's delivery at M = 4608, K = N = 3072.
    const int iters = int((uint64_t(4300) << 10) / uint64_t(stage_bytes));
    float ms = 0;
    for (int rep = 0; rep < 3; ++rep) {
      ck(cudaEventRecord(a), "record");
      probe_kernel<<<prop.multiProcessorCount, kConsumers + 32, smem>>>(src, src_bytes, c.bytes, c.copies, c.stages, iters);
      ck(cudaEventRecord(b), "record");
      ck(cudaEventSynchronize(b), "sync");
      ck(cudaGetLastError(), "probe_kernel");
      ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
    }
    const double total = double(iters) * stage_bytes * prop.multiProcessorCount;
    std::printf("| %d | %d | %d | %d | %.0f | %.1f |\n", c.bytes, c.copies, c.stages, c.stages * stage_bytes / 1024,
                total / (ms * 1e6), ms * 1e3 / (double(iters) * stage_bytes / 1048576.0));
  }
  return 0;
}
