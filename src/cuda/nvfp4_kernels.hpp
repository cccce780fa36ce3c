// Launchers of the nvfp4 kernels of the cuda-sm90 backend (nvfp4_act.cu, nvfp4_gemm.cu).
//
// Layouts (all built by Nvfp4Layer / its workspace; Kpad = round_up(K, 64), Mpad = round_up(M,
// 128), Npad = round_up(N, 128), Rpad = round_up(R, 32)):
//   act      [Mpad][Kpad] bf16: the dequantized activations q·s (NUMERICS.md §3; e2m1 × e4m3 is
//            exact in bf16), row-major. Columns >= K are zero (the workspace is cleared when it
//            is allocated; the kernel never writes them); rows >= M are never stored from.
//   lact     [Mpad][Rpad] float32 low-rank activations (§4.3), columns >= R zero.
//   wcodes   [Npad][Kpad/2] e2m1 codes, two per byte, low nibble = even k (FORMAT.md's packing,
//            zero-padded).
//   wscales  [Npad][Kpad/16] e4m3 weight group scales (transposed from the canonical [K/16, N],
//            zero-padded: padding contributes 0).
//   proj_down [K][Rpad] float32, proj_up [Npad][Rpad] float32, wcscales/bias [Npad] float32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90_kernels.hpp"

namespace svdquant::cuda {

inline constexpr int kNvGroup = 16;     // nvfp4 group size along K (NUMERICS.md §1)
inline constexpr int kNvTileK = 64;     // K per GEMM pipeline stage (K is padded to it)
inline constexpr int kNvTileM = 128;    // activation rows per GEMM CTA (wgmma N)
inline constexpr int kNvTileN = 128;    // weight rows per GEMM CTA (2 warpgroups x wgmma M 64)
inline constexpr int kNvRankChunk = 32; // the rank is padded to a multiple of this
inline constexpr int kNvMaxRank = 128;

inline int64_t nv_round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
inline int64_t nv_padded_rank(int64_t R) { return R <= 0 ? 0 : nv_round_up(R, kNvRankChunk); }

// NUMERICS.md §2 (no shift: nvfp4 layers are signed) and §3 (nvfp4): one thread per row and
// group of 16. Writes act (and, when non-null, the codes and scales themselves, for the tests).
struct Nvfp4ActParams {
  const uint16_t* x = nullptr;       // [M, K] T
  const uint16_t* smooth = nullptr;  // [K] T
  uint16_t* act = nullptr;           // [Mpad][Kpad] bf16
  uint8_t* codes = nullptr;          // optional [M][K] e2m1 code bytes
  uint8_t* scales = nullptr;         // optional [M][K/16] e4m3
  int64_t M = 0, K = 0, Kpad = 0;
  HalfType dtype = HalfType::BF16;
};
void launch_nvfp4_act(const Nvfp4ActParams& p, cudaStream_t stream);

// NUMERICS.md §4.3, first sum: lact[m][r] = sum_k f32(x[m,k]) · proj_down[k][r] (float32, fma,
// k ascending). Rpad > 0.
struct Nvfp4LowrankParams {
  const uint16_t* x = nullptr;         // [M, K] T
  const float* proj_down = nullptr;    // [K][Rpad]
  float* lact = nullptr;               // [Mpad][Rpad]
  int64_t M = 0, K = 0;
  int Rpad = 0;
  HalfType dtype = HalfType::BF16;
};
void launch_nvfp4_lowrank(const Nvfp4LowrankParams& p, cudaStream_t stream);

// NUMERICS.md §4.1 (a different float32 summation order: bf16 wgmma with float32 accumulation
// over all of K of the exact products (q_a·s_a)·(q_w·s_w)), ×alpha, §4.3 epilogue.
struct Nvfp4GemmParams {
  const uint16_t* act = nullptr;      // [Mpad][Kpad] bf16
  const uint8_t* wcodes = nullptr;    // [Npad][Kpad/2]
  const uint8_t* wscales = nullptr;   // [Npad][Kpad/16]
  const float* lact = nullptr;        // [Mpad][Rpad] (unused when Rpad == 0)
  const float* proj_up = nullptr;     // [Npad][Rpad]
  const float* wcscales = nullptr;    // [Npad]
  const float* bias = nullptr;        // [Npad]
  uint16_t* y = nullptr;              // [M, N] T
  int64_t M = 0, N = 0, Kpad = 0;
  int Rpad = 0;
  float alpha = 1.0f;
  HalfType dtype = HalfType::BF16;
};
void launch_nvfp4_gemm(const Nvfp4GemmParams& p, cudaStream_t stream);

}  // namespace svdquant::cuda
