// wgmma_probe: how fast e4m3 wgmma runs in the shapes the GEMM could use, with its operands
// resident in shared memory and nothing else in the loop (no producer, no barriers, no fold), by
// warpgroups per SM, instruction width N, partial-sum buffers per warpgroup, k32 steps per commit
// group and whether each buffer waits for its previous group (docs/perf-notes.md v15).
//
// Why: at M = 4608, K = N = 3072 the fp8 GEMM's consumers alone take ~110 us even without the
// fold and without loads (cuda_bench breakdown, "no fold, no loads"): ~40 % of the dense e4m3 rate,
// with two warpgroups of 64 weight rows x 128 activation rows and two partial sums each, every
// group of 64 (two m64n128k32) its own commit group. This probe asks whether that structure itself
// caps the tensor pipe, and which structure would not.
//
// Every SM runs one CTA of WGS warpgroups over a ring of 4 operand slots written once (B: 256
// rows x 64 e4m3 in the 64-byte swizzle, A: 64 rows per warpgroup); the loop issues `iters` commit
// groups per warpgroup. Prints TOPS per variant.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "probe_main.hpp"
#include "sm90_primitives.cuh"

using namespace svdquant::cuda::sm90;
using svdquant::probe::ck;
using svdquant::probe::require_hopper;

namespace {

// D[64 x 192] (+)= A[64 x 32] (e4m3, shared) * B[32 x 192] (e4m3, shared, K-major); scale_d 0 overwrites.
__device__ __forceinline__ void wgmma_m64n192k32_e4m3_ss(float (&d)[96], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %98, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, "
      "%96, %97, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}
// D[64 x 256] (+)= A[64 x 32] (e4m3, shared) * B[32 x 256] (e4m3, shared, K-major); scale_d 0 overwrites.
__device__ __forceinline__ void wgmma_m64n256k32_e4m3_ss(float (&d)[128], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
      "%128, %129, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

constexpr int kSlots = 4;
constexpr int kBBytes = 256 * 64;  // B of one group: 256 rows x 64 e4m3
constexpr int kABytes = 192 * 64;  // A of one group: 64 rows per warpgroup, up to 3
constexpr int kSlotBytes = kBBytes + kABytes;

template <int N>
struct Buf {
  float d[N / 2];
};

// STEPS k32 steps from slot s (STEPS = 4 spans slots s and s + 1) into buf; one commit group.
// ZERO: the first step overwrites buf (a fresh partial sum); otherwise every step accumulates, so
// that no wgmma's result is dead (ptxas removes wgmmas whose results are overwritten unread).
template <int N, int STEPS, bool ZERO>
__device__ __forceinline__ void issue(Buf<N>& buf, uint64_t bdesc0, uint64_t adesc0, int s) {
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < STEPS; ++k) {
    const int slot = (s + k / 2) % kSlots;
    const uint64_t off = uint64_t(slot) * (kSlotBytes >> 4) + uint64_t(k % 2) * (32 >> 4);
    const uint32_t acc = ZERO && k == 0 ? 0u : 1u;
    if constexpr (N == 128) wgmma_m64n128k32_e4m3_ss(buf.d, adesc0 + off, bdesc0 + off, acc);
    else if constexpr (N == 192) wgmma_m64n192k32_e4m3_ss(buf.d, adesc0 + off, bdesc0 + off, acc);
    else wgmma_m64n256k32_e4m3_ss(buf.d, adesc0 + off, bdesc0 + off, acc);
  }
  wgmma_commit();
}

// FOLD: before a buffer is reused, its completed group is folded into float32 accumulators,
// acc += p * s (the fp8 GEMM's one-sided fold; the scales read from shared memory before the
// wait, as w4a4_gemm.cu's consumers do).
template <int WGS, int N, int BUFS, int STEPS, bool WAIT, bool FOLD = false>
__global__ void __launch_bounds__(WGS * 128, 1) wgmma_kernel(int iters, float* out) {
  extern __shared__ __align__(1024) uint8_t smem[];
  {
    uint32_t* w = reinterpret_cast<uint32_t*>(smem);
    for (int i = threadIdx.x; i < kSlots * kSlotBytes / 4; i += blockDim.x) w[i] = (uint32_t(i) * 2654435761u) & 0x3F3F3F3Fu;
    fence_proxy_async();
    __syncthreads();
  }
  const int wg = threadIdx.x / 128;
  const uint64_t bdesc0 = smem_desc_sw64(smem);
  const uint64_t adesc0 = smem_desc_sw64(smem + kBBytes + wg * 4096);
  Buf<N> b0 = {}, b1 = {};
  float acc[FOLD ? N / 2 : 1] = {};
  const float* scales = reinterpret_cast<const float*>(smem + kBBytes) + (threadIdx.x % 128) / 4;  // any finite values
  auto fold = [&](Buf<N>& b, int s) {
    if constexpr (FOLD) {
      fence_regs(b.d);
#pragma unroll
      for (int j = 0; j < N / 8; ++j) {
        const float sw = scales[(s * 8 + (j % 2)) & 255];
        acc[4 * j + 0] = fmaf(b.d[4 * j + 0], sw, acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(b.d[4 * j + 1], sw, acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(b.d[4 * j + 2], sw, acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(b.d[4 * j + 3], sw, acc[4 * j + 3]);
      }
    }
  };
  constexpr int kAdv = STEPS / 2;  // slots per commit group
  int s = 0;
  if constexpr (BUFS == 1) {
    issue<N, STEPS, FOLD>(b0, bdesc0, adesc0, s);
#pragma unroll 1
    for (int i = 1; i < iters; ++i) {
      if constexpr (WAIT) wgmma_wait<0>();
      fold(b0, s);
      s = (s + kAdv) % kSlots;
      issue<N, STEPS, FOLD>(b0, bdesc0, adesc0, s);
    }
  } else {
    issue<N, STEPS, FOLD>(b0, bdesc0, adesc0, s);
    s = (s + kAdv) % kSlots;
#pragma unroll 1
    for (int i = 2; i < iters; i += 2) {
      issue<N, STEPS, FOLD>(b1, bdesc0, adesc0, s);
      if constexpr (WAIT) wgmma_wait<1>();
      fold(b0, s);
      s = (s + kAdv) % kSlots;
      issue<N, STEPS, FOLD>(b0, bdesc0, adesc0, s);
      if constexpr (WAIT) wgmma_wait<1>();
      fold(b1, s);
      s = (s + kAdv) % kSlots;
    }
    issue<N, STEPS, FOLD>(b1, bdesc0, adesc0, s);
  }
  wgmma_wait<0>();
  fold(b0, s);
  if constexpr (BUFS == 2) fold(b1, s);
  fence_regs(b0.d);
  float v = b0.d[0] + b0.d[N / 2 - 1];
  if constexpr (BUFS == 2) {
    fence_regs(b1.d);
    v += b1.d[0] + b1.d[N / 2 - 1];
  }
  if constexpr (FOLD) {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) v += acc[i];
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

template <int WGS, int N, int BUFS, int STEPS, bool WAIT, bool FOLD = false>
void run(const char* what, int sms, float* out, cudaEvent_t a, cudaEvent_t b) {
  auto kernel = wgmma_kernel<WGS, N, BUFS, STEPS, WAIT, FOLD>;
  const int smem = kSlots * kSlotBytes;
  ck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "attribute");
  // ~1 ms of work at the dense rate: iters commit groups per warpgroup, even.
  const double flop_per_group = 2.0 * 64 * N * 32 * STEPS;
  const int iters = int(2.0e12 / (sms * WGS * flop_per_group)) / 2 * 2;
  float ms = 0;
  for (int rep = 0; rep < 3; ++rep) {
    ck(cudaEventRecord(a), "record");
    kernel<<<sms, WGS * 128, smem>>>(iters, out);
    ck(cudaEventRecord(b), "record");
    ck(cudaEventSynchronize(b), "sync");
    ck(cudaGetLastError(), "wgmma_kernel");
    ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
  }
  const double tops = flop_per_group * iters * WGS * sms / (ms * 1e9);
  std::printf("| %s | %d | m64n%dk32 x %d | %d | %s | %s | %.0f |\n", what, WGS, N, STEPS, BUFS, WAIT ? "yes" : "no",
              FOLD ? "yes" : "no", tops);
}

}  // namespace

int main() {
  const cudaDeviceProp prop = require_hopper("wgmma_probe");
  const int sms = prop.multiProcessorCount;
  float* out = nullptr;
  ck(cudaMalloc(&out, size_t(sms) * 384 * 4), "cudaMalloc");
  cudaEvent_t a, b;
  ck(cudaEventCreate(&a), "event");
  ck(cudaEventCreate(&b), "event");
  std::printf("device: %s, %d SMs\n", prop.name, sms);
  std::printf("| structure | warpgroups | commit group | buffers per warpgroup | wait before reuse | fold | TOPS |\n"
              "|---|---|---|---|---|---|---|\n");
  run<2, 128, 2, 2, true>("the GEMM's consumers without fold", sms, out, a, b);
  run<2, 128, 2, 2, false>("the same, never waiting", sms, out, a, b);
  run<2, 128, 1, 2, true>("one buffer, drained per group", sms, out, a, b);
  run<1, 128, 2, 2, true>("one warpgroup", sms, out, a, b);
  run<3, 128, 2, 2, true>("three warpgroups", sms, out, a, b);
  run<2, 128, 2, 4, true>("two groups per commit", sms, out, a, b);
  run<2, 256, 1, 2, true>("n256, one buffer", sms, out, a, b);
  run<2, 256, 1, 4, true>("n256, one buffer, two groups per commit", sms, out, a, b);
  run<2, 256, 1, 2, false>("n256, never waiting", sms, out, a, b);
  run<2, 128, 1, 2, true, true>("one buffer, folded per group", sms, out, a, b);
  run<3, 128, 1, 2, true, true>("three warpgroups, one buffer each", sms, out, a, b);
  run<2, 192, 1, 2, true, true>("n192 (128 x 192 tile), one buffer", sms, out, a, b);
  return 0;
}
