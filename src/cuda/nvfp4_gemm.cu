// The nvfp4 GEMM of the cuda-sm90 backend (nvfp4_kernels.hpp): NUMERICS.md §4 with §4.1's float32
// accumulation in another summation order, and the §4.3 epilogue.
//
// Every product (q_a·s_a)·(q_w·s_w) is exact: e2m1 × e4m3 has at most 6 significant bits and an
// exponent within bf16's range, so both factors are exact bf16 values and their product is exact
// in float32. The GEMM therefore runs bf16 wgmma (m64n128k16, float32 accumulation) over all of K
// on the dequantized values and multiplies by alpha at the end; only the float32 summation order
// differs from §4.1 (which sums the exact group sums p[g]·(s_a·s_w) in group order).
//
// One CTA per 128 x 128 tile of y^T: blockIdx.x = weight tile (output columns n, wgmma's M side:
// warpgroup w covers rows 64w..64w+63), blockIdx.y = activation tile (rows m, wgmma's N side).
// 256 threads, no producer warpgroup: two shared-memory stages of K = 64, each holding
//   A: the weights of 128 rows, dequantized to bf16 by the threads (16-byte code loads and the
//      group scales, held in registers one stage ahead), and
//   B: the activations of 128 rows (already bf16, copied with cp.async),
// both in wgmma's K-major no-swizzle core-matrix order for a 128-row x 64-column bf16 tile:
//   byte offset(r, k) = (k / 8) * 2048 + (r / 8) * 128 + (r % 8) * 16 + (k % 8) * 2.
// While the wgmmas of one stage run, the next stage is filled.
// Epilogue: ·alpha, ·wcscales + bias (two float32 operations), + u = Σ_r l·up (float32 fma on the
// CUDA cores, 32 ranks per shared-memory chunk), rounded to T, stored with bounds checks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_check.hpp"
#include "nvfp4_kernels.hpp"
#include "nvfp4_primitives.cuh"

namespace svdquant::cuda {
namespace {

using namespace nv;

constexpr int kThreads = 256;
constexpr int kTileBytes = kNvTileN * kNvTileK * 2;   // 16 KB per operand tile
constexpr int kStageBytes = 2 * kTileBytes;           // A then B
constexpr int kSmemBytes = 2 * kStageBytes;           // 64 KB
constexpr int kLdsStride = kNvRankChunk + 1;          // floats per row of the epilogue's l / up chunk
static_assert(2 * kNvTileM * kLdsStride * 4 <= kSmemBytes);

__device__ __forceinline__ int tile_offset(int r, int k) { return (k / 8) * 2048 + (r / 8) * 128 + (r % 8) * 16 + (k % 8) * 2; }

// One thread's share of a weight stage: row r = tid % 128, k half h = tid / 128 (32 codes).
struct WRegs {
  uint4 codes;
  uint32_t scales;  // two e4m3 bytes (groups 2h, 2h + 1 of the stage)
};

__device__ __forceinline__ WRegs load_weights(const Nvfp4GemmParams& p, int64_t n0, int64_t kt, int tid) {
  const int r = tid % kNvTileN, h = tid / kNvTileN;
  const int64_t n = n0 + r;
  WRegs w;
  w.codes = __ldg(reinterpret_cast<const uint4*>(p.wcodes + n * (p.Kpad / 2) + kt * (kNvTileK / 2) + h * 16));
  w.scales = __ldg(reinterpret_cast<const uint16_t*>(p.wscales + n * (p.Kpad / kNvGroup) + kt * (kNvTileK / kNvGroup) + 2 * h));
  return w;
}

// Two e2m1 codes (low byte of c: low nibble first) times s -> a bf16 pair.
__device__ __forceinline__ uint32_t dequant2(uint32_t c, float s) {
  const float lo = __fmul_rn(e2m1_to_f32(c & 0xFu), s), hi = __fmul_rn(e2m1_to_f32((c >> 4) & 0xFu), s);
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) | (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

__device__ __forceinline__ void store_weights(uint8_t* a_tile, const WRegs& w, int tid) {
  const int r = tid % kNvTileN, h = tid / kNvTileN;
  const float s0 = e4m3_to_f32(w.scales & 0xFFu), s1 = e4m3_to_f32((w.scales >> 8) & 0xFFu);
  const uint32_t words[4] = {w.codes.x, w.codes.y, w.codes.z, w.codes.w};
#pragma unroll
  for (int c = 0; c < 4; ++c) {  // word c: 8 codes, k = 32h + 8c .. +7; group 2h + c / 2
    const float s = c < 2 ? s0 : s1;
    const uint32_t v = words[c];
    const uint4 out = make_uint4(dequant2(v & 0xFFu, s), dequant2((v >> 8) & 0xFFu, s), dequant2((v >> 16) & 0xFFu, s),
                                 dequant2(v >> 24, s));
    *reinterpret_cast<uint4*>(a_tile + tile_offset(r, 32 * h + 8 * c)) = out;
  }
}

// The activation stage: 128 rows x 8 chunks of 16 bytes, four per thread (row fastest: no bank
// conflicts on the shared-memory side).
__device__ __forceinline__ void load_acts(uint8_t* b_tile, const Nvfp4GemmParams& p, int64_t m0, int64_t kt, int tid) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int c = tid + i * kThreads, r = c % kNvTileM, kc = c / kNvTileM;
    const uint16_t* src = p.act + (m0 + r) * p.Kpad + kt * kNvTileK + kc * 8;
    cp_async16(b_tile + tile_offset(r, kc * 8), src);
  }
  cp_async_commit();
}

template <bool BF16>
__device__ __forceinline__ uint16_t to_half(float f) {
  if constexpr (BF16) return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  else return __half_as_ushort(__float2half_rn(f));
}

template <bool BF16>
__global__ void __launch_bounds__(kThreads, 1) nvfp4_gemm_kernel(const __grid_constant__ Nvfp4GemmParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, wg = tid / 128, t = tid % 128, warp = t / 32, lane = t % 32;
  const int64_t n0 = int64_t(blockIdx.x) * kNvTileN, m0 = int64_t(blockIdx.y) * kNvTileM;
  const int64_t KT = p.Kpad / kNvTileK;

  float d[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) d[i] = 0.0f;

  WRegs w = load_weights(p, n0, 0, tid);
  load_acts(smem + kTileBytes, p, m0, 0, tid);
  store_weights(smem, w, tid);
  cp_async_wait_all();
  fence_proxy_async();
  __syncthreads();

  for (int64_t kt = 0; kt < KT; ++kt) {
    uint8_t* cur = smem + (kt & 1) * kStageBytes;
    uint8_t* nxt = smem + ((kt + 1) & 1) * kStageBytes;
    const bool more = kt + 1 < KT;
    if (more) {
      w = load_weights(p, n0, kt + 1, tid);
      load_acts(nxt + kTileBytes, p, m0, kt + 1, tid);
    }
    wgmma_fence();
    fence_regs(d);
#pragma unroll
    for (int j = 0; j < kNvTileK / 16; ++j) {
      // k16 step j: core matrices 2j, 2j + 1 along K (2048 bytes apart); warpgroup wg's 64 rows
      // start at core row 8 wg (1024 bytes).
      const uint64_t da = smem_desc(cur + j * 2 * 2048 + wg * 1024, 2048, 128);
      const uint64_t db = smem_desc(cur + kTileBytes + j * 2 * 2048, 2048, 128);
      wgmma_m64n128k16_bf16_ss(d, da, db);
    }
    wgmma_commit();
    if (more) store_weights(nxt, w, tid);
    wgmma_wait0();
    fence_regs(d);
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();
  }

  // Epilogue. d[i], i = 4 c8 + 2 hh + e: row (weight n) 16 warp + lane / 4 + 8 hh of this
  // warpgroup's 64, column (activation m) 8 c8 + 2 (lane % 4) + e.
  const int nl0 = wg * 64 + warp * 16 + lane / 4;  // local n of hh = 0 (hh = 1: + 8)
  const int ml0 = 2 * (lane % 4);                  // local m of c8 = 0, e = 0
  {
    const float wc0 = p.wcscales[n0 + nl0], wc1 = p.wcscales[n0 + nl0 + 8];
    const float b0 = p.bias[n0 + nl0], b1 = p.bias[n0 + nl0 + 8];
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const bool hh = (i >> 1) & 1;
      d[i] = __fadd_rn(__fmul_rn(__fmul_rn(d[i], p.alpha), hh ? wc1 : wc0), hh ? b1 : b0);
    }
  }
  if (p.Rpad > 0) {
    float u[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) u[i] = 0.0f;
    float* ls = reinterpret_cast<float*>(smem);          // [128 m][33]
    float* us = ls + kNvTileM * kLdsStride;              // [128 n][33]
    for (int rc = 0; rc < p.Rpad; rc += kNvRankChunk) {
      __syncthreads();
      for (int i = tid; i < kNvTileM * kNvRankChunk; i += kThreads) {
        const int row = i / kNvRankChunk, r = i % kNvRankChunk;
        ls[row * kLdsStride + r] = p.lact[(m0 + row) * p.Rpad + rc + r];
        us[row * kLdsStride + r] = p.proj_up[(n0 + row) * p.Rpad + rc + r];
      }
      __syncthreads();
#pragma unroll 4
      for (int r = 0; r < kNvRankChunk; ++r) {
        const float up0 = us[nl0 * kLdsStride + r], up1 = us[(nl0 + 8) * kLdsStride + r];
#pragma unroll
        for (int c8 = 0; c8 < 16; ++c8)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float l = ls[(8 * c8 + ml0 + e) * kLdsStride + r];
            u[4 * c8 + e] = __fmaf_rn(l, up0, u[4 * c8 + e]);
            u[4 * c8 + 2 + e] = __fmaf_rn(l, up1, u[4 * c8 + 2 + e]);
          }
      }
    }
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = __fadd_rn(d[i], u[i]);
  }
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int c8 = i >> 2, hh = (i >> 1) & 1, e = i & 1;
    const int64_t n = n0 + nl0 + 8 * hh, m = m0 + 8 * c8 + ml0 + e;
    if (n < p.N && m < p.M) p.y[m * p.N + n] = to_half<BF16>(d[i]);
  }
}

}  // namespace

void launch_nvfp4_gemm(const Nvfp4GemmParams& p, cudaStream_t stream) {
  if (p.M <= 0 || p.N <= 0) return;
  const dim3 grid(unsigned(nv_round_up(p.N, kNvTileN) / kNvTileN), unsigned(nv_round_up(p.M, kNvTileM) / kNvTileM));
  if (p.dtype == HalfType::BF16) {
    check(cudaFuncSetAttribute(nvfp4_gemm_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes),
          "cudaFuncSetAttribute(nvfp4_gemm)");
    nvfp4_gemm_kernel<true><<<grid, kThreads, kSmemBytes, stream>>>(p);
  } else {
    check(cudaFuncSetAttribute(nvfp4_gemm_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes),
          "cudaFuncSetAttribute(nvfp4_gemm)");
    nvfp4_gemm_kernel<false><<<grid, kThreads, kSmemBytes, stream>>>(p);
  }
  check_launch("nvfp4_gemm_kernel");
}

}  // namespace svdquant::cuda
