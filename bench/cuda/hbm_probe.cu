// hbm_probe: how fast each way of bringing data that is in HBM (not in L2) into shared memory
// goes, by bytes in flight per SM (docs/perf-notes.md v16 item 5: the fp8 activation kernel's
// bulk copies read x at ~1.3 TB/s where cudaMemcpy reads and writes it at ~3.1; tma_probe reads
// from L2 only). One CTA per SM, each reading its own contiguous slice of a buffer far larger
// than L2, once:
//   bulk      one thread issues 1-D bulk copies (cp.async.bulk), `copies` of `bytes` per stage,
//             into a ring of stages, each stage one mbarrier that all threads wait for before the
//             slot is reused;
//   bulk+pf   the same, each stage's bytes prefetched `ahead` stages earlier (cp.async.bulk.
//             prefetch.L2, one per stage);
//   cp.async  every thread copies 16-byte pieces (cp.async.cg), `per` of them per stage, and
//             waits for the stage `stages - 1` stages later (cp.async.wait_group);
//   ldg       every thread loads `per` 16-byte pieces into registers (ld.global.v4) and stores
//             them to shared memory.
// Prints GB/s of distinct bytes read, over all SMs.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "probe_main.hpp"
#include "sm90_primitives.cuh"

using namespace svdquant::cuda::sm90;
using svdquant::probe::ck;
using svdquant::probe::require_hopper;

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void prefetch_l2(const void* src, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(src), "r"(bytes) : "memory");
}

// Ring of `stages` slots of copies x bytes each; stage i of this CTA's slice goes to slot i % stages.
__global__ void __launch_bounds__(kThreads, 1)
    bulk_kernel(const uint8_t* src, uint64_t slice, int bytes, int copies, int stages, int ahead, uint32_t* sink) {
  extern __shared__ __align__(1024) uint8_t smem[];
  const int stage_bytes = bytes * copies;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + size_t(stages) * stage_bytes);
  const uint8_t* base = src + uint64_t(blockIdx.x) * slice;
  const int iters = int(slice / uint64_t(stage_bytes));
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) mbar_init(&full[s], 1);
    mbar_init_fence();
  }
  __syncthreads();
  uint32_t acc = 0;
  for (int i = 0; i < iters; ++i) {
    const int s = i % stages;
    if (threadIdx.x == 0) {
      if (ahead > 0 && i + ahead < iters) prefetch_l2(base + uint64_t(i + ahead) * stage_bytes, uint32_t(stage_bytes));
      mbar_arrive_expect_tx(&full[s], uint32_t(stage_bytes));
      for (int c = 0; c < copies; ++c)
        bulk_copy_g2s(smem + size_t(s) * stage_bytes + size_t(c) * bytes, base + uint64_t(i) * stage_bytes + uint64_t(c) * bytes,
                      uint32_t(bytes), &full[s]);
    }
    // Waiting for stage i - stages + 1 keeps `stages` copies in flight; the read of one word keeps
    // the slot's data live, and the barrier after it frees the slot for thread 0's next copy.
    const int w = i - stages + 1;
    if (w >= 0) {
      mbar_wait(&full[w % stages], uint32_t(w / stages) & 1u);
      acc += reinterpret_cast<const uint32_t*>(smem + size_t(w % stages) * stage_bytes)[threadIdx.x % (stage_bytes / 4)];
      __syncthreads();
    }
  }
  for (int w = max(iters - stages + 1, 0); w < iters; ++w) mbar_wait(&full[w % stages], uint32_t(w / stages) & 1u);
  if (acc == 0x12345678u) sink[0] = acc;  // never true for the memset pattern; keeps the reads
}

// Every thread PER 16-byte pieces per stage; ASYNC: cp.async with up to STAGES stages in flight
// (after stage i is committed, the wait for all but STAGES - 1 groups lands stage i - STAGES + 1,
// whose slot stage i + 1 reuses), else ld.global.v4 into registers (all PER issued before any is
// stored) and st.shared, one stage at a time.
template <bool ASYNC, int PER, int STAGES>
__global__ void __launch_bounds__(kThreads, 1) thread_kernel(const uint8_t* src, uint64_t slice, uint32_t* sink) {
  extern __shared__ __align__(1024) uint8_t smem[];
  constexpr int kStageBytes = kThreads * PER * 16;
  const uint8_t* base = src + uint64_t(blockIdx.x) * slice;
  const int iters = int(slice / uint64_t(kStageBytes));
  const uint32_t s0 = smem_addr(smem);
  uint32_t acc = 0;
  for (int i = 0; i < iters; ++i) {
    const int s = ASYNC ? i % STAGES : 0;
    const uint8_t* g = base + uint64_t(i) * kStageBytes + threadIdx.x * 16;
    if constexpr (ASYNC) {
#pragma unroll
      for (int j = 0; j < PER; ++j)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s0 + uint32_t(s * kStageBytes + (j * kThreads + threadIdx.x) * 16)),
                     "l"(g + j * kThreads * 16)
                     : "memory");
      asm volatile("cp.async.commit_group;\n" ::: "memory");
      asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 1) : "memory");
    } else {
      uint4 v[PER];
#pragma unroll
      for (int j = 0; j < PER; ++j) v[j] = __ldcg(reinterpret_cast<const uint4*>(g + j * kThreads * 16));
#pragma unroll
      for (int j = 0; j < PER; ++j) reinterpret_cast<uint4*>(smem)[j * kThreads + threadIdx.x] = v[j];
    }
  }
  if constexpr (ASYNC) asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  __syncthreads();
  acc += reinterpret_cast<const uint32_t*>(smem)[threadIdx.x];
  if (acc == 0x12345678u) sink[0] = acc;
}

}  // namespace

int main() {
  const cudaDeviceProp prop = require_hopper("hbm_probe");
  const int sms = prop.multiProcessorCount;
  const uint64_t slice = uint64_t(8) << 20;  // per SM: 8 MB, 1 GB over the GPU, ~18x the L2
  uint8_t* src = nullptr;
  uint32_t* sink = nullptr;
  ck(cudaMalloc(&src, slice * sms), "cudaMalloc");
  ck(cudaMalloc(&sink, 4), "cudaMalloc");
  ck(cudaMemset(src, 1, slice * sms), "cudaMemset");
  const int max_smem = 227 * 1024;
  ck(cudaFuncSetAttribute(bulk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem), "attr");
  cudaEvent_t a, b;
  ck(cudaEventCreate(&a), "event");
  ck(cudaEventCreate(&b), "event");
  // The best of 3 runs; each reads slices that the previous run's reads of 1 GB pushed out of L2.
  auto time_ms = [&](auto launch) {
    float best = 1e30f;
    for (int rep = 0; rep < 3; ++rep) {
      float ms = 0;
      ck(cudaEventRecord(a), "record");
      launch();
      ck(cudaEventRecord(b), "record");
      ck(cudaEventSynchronize(b), "sync");
      ck(cudaGetLastError(), "kernel");
      ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
      best = ms < best ? ms : best;
    }
    return best;
  };
  const double total = double(slice) * sms;
  std::printf("device: %s, %d SMs; %.0f MB read from HBM per run, one CTA of %d threads per SM\n", prop.name, sms, total / 1e6, kThreads);
  std::printf("| mechanism | bytes per copy | copies per stage | stages | KB in flight per SM | GB/s |\n|---|---|---|---|---|---|\n");
  struct Bulk { int bytes, copies, stages, ahead; };
  const std::vector<Bulk> bulks = {{256, 64, 2, 0},  {256, 64, 4, 0},   {256, 64, 12, 0},  {1024, 16, 2, 0},  {1024, 16, 4, 0},
                                   {1024, 16, 12, 0}, {4096, 4, 2, 0},  {4096, 4, 4, 0},   {4096, 4, 12, 0},  {16384, 1, 2, 0},
                                   {16384, 1, 4, 0},  {16384, 1, 8, 0}, {16384, 1, 12, 0}, {32768, 1, 6, 0},  {1024, 16, 4, 4},
                                   {1024, 16, 4, 8},  {16384, 1, 4, 4}, {16384, 1, 4, 8}};
  for (const Bulk& c : bulks) {
    const size_t smem = size_t(c.stages) * c.bytes * c.copies + size_t(c.stages) * 8;
    if (smem > size_t(max_smem)) continue;
    const float ms = time_ms([&] { bulk_kernel<<<sms, kThreads, smem>>>(src, slice, c.bytes, c.copies, c.stages, c.ahead, sink); });
    std::printf("| bulk%s | %d | %d | %d | %d | %.0f |\n", c.ahead ? (" + L2 prefetch " + std::to_string(c.ahead) + " ahead").c_str() : "",
                c.bytes, c.copies, c.stages, c.stages * c.bytes * c.copies / 1024, total / (ms * 1e6));
  }
  auto threads = [&](auto kernel, const char* name, int per, int stages) {
    const size_t smem = size_t(stages) * kThreads * per * 16;
    ck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem), "attr");
    const float ms = time_ms([&] { kernel<<<sms, kThreads, smem>>>(src, slice, sink); });
    std::printf("| %s | 16 | %d per thread | %d | %zu | %.0f |\n", name, per, stages, smem / 1024, total / (ms * 1e6));
  };
  threads(thread_kernel<false, 4, 1>, "ldg", 4, 1);
  threads(thread_kernel<false, 8, 1>, "ldg", 8, 1);
  threads(thread_kernel<false, 16, 1>, "ldg", 16, 1);
  threads(thread_kernel<true, 4, 2>, "cp.async", 4, 2);
  threads(thread_kernel<true, 4, 8>, "cp.async", 4, 8);
  threads(thread_kernel<true, 8, 4>, "cp.async", 8, 4);
  threads(thread_kernel<true, 16, 3>, "cp.async", 16, 3);
  return 0;
}
