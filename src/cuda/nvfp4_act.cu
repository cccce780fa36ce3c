// The nvfp4 activation kernels of the cuda-sm90 backend (nvfp4_kernels.hpp):
//  - nvfp4_act: NUMERICS.md §2 and §3 (nvfp4), one thread per row and group of 16: two 16-byte
//    loads of x and of smooth, xs = T(f32(x) / f32(smooth)) (one IEEE division, __fdiv_rn, then
//    RNE to T: the CPU's float32 operations), amax with NaN/Inf detection (§6), the e4m3 scale
//    s = e4m3(min(amax · f32(1/6), 448)), codes e2m1_rne(xs · (1 / s)), and the dequantized
//    values q·s written as bf16 (exact) for the GEMM. A group with a non-finite amax gets the
//    scale 0x7F (NaN) and codes 0, so its dequantized values are 0·NaN = NaN.
//  - nvfp4_lowrank: §4.3 l = x · proj_down in float32 (k ascending, fma), 16 rows per block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_check.hpp"
#include "nvfp4_kernels.hpp"
#include "nvfp4_primitives.cuh"

namespace svdquant::cuda {
namespace {

using namespace nv;

constexpr float kInv6 = 1.0f / 6.0f;  // f32(1/6) = 0x3E2AAAAB (NUMERICS.md §3)

template <bool BF16>
__device__ __forceinline__ float half_to_f32(uint32_t b) {
  if constexpr (BF16) return __uint_as_float(b << 16);
  else return __half2float(__ushort_as_half(uint16_t(b)));
}
template <bool BF16>
__device__ __forceinline__ float round_half(float f) {
  if constexpr (BF16) return __bfloat162float(__float2bfloat16_rn(f));
  else return __half2float(__float2half_rn(f));
}

template <bool BF16>
__global__ void __launch_bounds__(256) nvfp4_act_kernel(Nvfp4ActParams p) {
  const int64_t G = p.K / kNvGroup;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.M * G) return;
  const int64_t m = idx / G, g = idx % G;
  const uint4* xp = reinterpret_cast<const uint4*>(p.x + m * p.K + g * kNvGroup);
  const uint4* sp = reinterpret_cast<const uint4*>(p.smooth + g * kNvGroup);
  uint4 xv[2], sv[2];
  xv[0] = __ldg(xp);
  xv[1] = __ldg(xp + 1);
  sv[0] = __ldg(sp);
  sv[1] = __ldg(sp + 1);
  const uint32_t* xw = reinterpret_cast<const uint32_t*>(xv);
  const uint32_t* sw = reinterpret_cast<const uint32_t*>(sv);
  float xs[kNvGroup];
  float amax = 0.0f;
  bool finite = true;
#pragma unroll
  for (int i = 0; i < kNvGroup; ++i) {
    const uint32_t xb = (xw[i / 2] >> (16 * (i % 2))) & 0xFFFFu;
    const uint32_t sb = (sw[i / 2] >> (16 * (i % 2))) & 0xFFFFu;
    const float v = round_half<BF16>(__fdiv_rn(half_to_f32<BF16>(xb), half_to_f32<BF16>(sb)));
    xs[i] = v;
    finite = finite && isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  uint32_t sbits;
  float s;
  if (finite) {
    sbits = e4m3_from_nonneg(fminf(__fmul_rn(amax, kInv6), 448.0f));
    s = e4m3_to_f32(sbits);
  } else {
    sbits = 0x7Fu;
    s = __uint_as_float(0x7FC00000u);
  }
  uint32_t codes[kNvGroup];
  if (finite && s != 0.0f) {
    const float r = __fdiv_rn(1.0f, s);
#pragma unroll
    for (int i = 0; i < kNvGroup; ++i) codes[i] = e2m1_rne(__fmul_rn(xs[i], r));
  } else {
#pragma unroll
    for (int i = 0; i < kNvGroup; ++i) codes[i] = 0;
  }
  // Dequantized values q·s (exact in float32 and in bf16; NaN for a non-finite group).
  uint32_t out[kNvGroup / 2];
#pragma unroll
  for (int i = 0; i < kNvGroup / 2; ++i) {
    const float lo = __fmul_rn(e2m1_to_f32(codes[2 * i]), s), hi = __fmul_rn(e2m1_to_f32(codes[2 * i + 1]), s);
    out[i] = uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
             (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
  }
  uint4* ap = reinterpret_cast<uint4*>(p.act + m * p.Kpad + g * kNvGroup);
  ap[0] = make_uint4(out[0], out[1], out[2], out[3]);
  ap[1] = make_uint4(out[4], out[5], out[6], out[7]);
  if (p.codes) {
    uint32_t cw[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      cw[j] = codes[4 * j] | (codes[4 * j + 1] << 8) | (codes[4 * j + 2] << 16) | (codes[4 * j + 3] << 24);
    *reinterpret_cast<uint4*>(p.codes + m * p.K + g * kNvGroup) = make_uint4(cw[0], cw[1], cw[2], cw[3]);
  }
  if (p.scales) p.scales[m * G + g] = uint8_t(sbits);
}

constexpr int kLrRows = 16;    // rows per block
constexpr int kLrK = 32;       // K per shared-memory chunk
constexpr int kLrThreads = 256;
constexpr int kLrOut = kLrRows * kNvMaxRank / kLrThreads;  // outputs per thread, at most 8

template <bool BF16>
__global__ void __launch_bounds__(kLrThreads) nvfp4_lowrank_kernel(Nvfp4LowrankParams p) {
  __shared__ float xs[kLrRows][kLrK];
  __shared__ float pd[kLrK][kNvMaxRank];
  const int tid = threadIdx.x;
  const int64_t m0 = int64_t(blockIdx.x) * kLrRows;
  const int R = p.Rpad, total = kLrRows * R;
  float acc[kLrOut];
#pragma unroll
  for (int i = 0; i < kLrOut; ++i) acc[i] = 0.0f;
  for (int64_t k0 = 0; k0 < p.K; k0 += kLrK) {
    const int kc = int(p.K - k0 < kLrK ? p.K - k0 : kLrK);
    __syncthreads();
    for (int i = tid; i < kLrRows * kLrK; i += kLrThreads) {
      const int r = i / kLrK, c = i % kLrK;
      const int64_t m = m0 + r;
      xs[r][c] = (m < p.M && c < kc) ? half_to_f32<BF16>(p.x[m * p.K + k0 + c]) : 0.0f;
    }
    for (int i = tid; i < kLrK * R; i += kLrThreads) {
      const int c = i / R, r = i % R;
      pd[c][r] = c < kc ? p.proj_down[(k0 + c) * R + r] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kLrOut; ++j) {
      const int o = tid + j * kLrThreads;
      if (o < total) {
        const int row = o / R, r = o % R;
        float a = acc[j];
        for (int c = 0; c < kc; ++c) a = __fmaf_rn(xs[row][c], pd[c][r], a);
        acc[j] = a;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kLrOut; ++j) {
    const int o = tid + j * kLrThreads;
    if (o < total) {
      const int row = o / R, r = o % R;
      if (m0 + row < p.M) p.lact[(m0 + row) * R + r] = acc[j];
    }
  }
}

}  // namespace

void launch_nvfp4_act(const Nvfp4ActParams& p, cudaStream_t stream) {
  if (p.M <= 0) return;
  const int64_t items = p.M * (p.K / kNvGroup);
  const dim3 grid(unsigned((items + 255) / 256));
  if (p.dtype == HalfType::BF16) nvfp4_act_kernel<true><<<grid, 256, 0, stream>>>(p);
  else nvfp4_act_kernel<false><<<grid, 256, 0, stream>>>(p);
  check_launch("nvfp4_act_kernel");
}

void launch_nvfp4_lowrank(const Nvfp4LowrankParams& p, cudaStream_t stream) {
  if (p.M <= 0 || p.Rpad <= 0) return;
  const dim3 grid(unsigned((p.M + kLrRows - 1) / kLrRows));
  if (p.dtype == HalfType::BF16) nvfp4_lowrank_kernel<true><<<grid, kLrThreads, 0, stream>>>(p);
  else nvfp4_lowrank_kernel<false><<<grid, kLrThreads, 0, stream>>>(p);
  check_launch("nvfp4_lowrank_kernel");
}

}  // namespace svdquant::cuda
