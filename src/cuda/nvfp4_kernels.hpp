// Launchers of the nvfp4 kernels of the cuda-sm90 backend (nvfp4_act.cu, nvfp4_gemm.cu).
//
// Layouts (all built by Nvfp4Layer / its workspace; Kpad = round_up(K, 64), Mpad = round_up(M,
// 128), Npad = round_up(N, 256), Rpad = round_up(R, 32)):
//   act      the dequantized activations q·s (NUMERICS.md §3) as fp16 (e2m1 × e4m3 has at most 6
//            significant bits and lies in [2^-10, 2688]: exact in fp16), in [Mpad/128][Kpad/64]
//            tiles of 128 rows x 64 columns (16 KB each, contiguous, one bulk copy per GEMM stage),
//            each in wgmma's K-major no-swizzle core-matrix order (nv_act_index). Columns >= K are
//            zero (the workspace is cleared when it is allocated; the kernel never writes them).
//   lact     [Mpad][Rpad] float32 low-rank activations (§4.3), columns >= R zero.
//   wpack    the weights for the GEMM's register operand (pack_nvfp4_weights, nvfp4_pack.hpp;
//            "The packed weights" below): per 64-row block and K step of 64, the e2m1 codes in
//            wgmma A-fragment order and the group scales as fp16 (s_w · 2^7).
//   proj_up [Npad][Rpad] float32, wcscales/bias [Npad] float32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90_kernels.hpp"

namespace svdquant::cuda {

inline constexpr int kNvGroup = 16;     // nvfp4 group size along K (NUMERICS.md §1)
inline constexpr int kNvTileK = 64;     // K per GEMM pipeline stage (K is padded to it)
inline constexpr int kNvTileM = 128;    // activation rows per GEMM CTA (wgmma N)
inline constexpr int kNvTileN = 256;    // weight rows per GEMM CTA (2 warpgroups x 2 wgmma M 64 blocks)
inline constexpr int kNvWBlock = 64;    // weight rows of one wgmma A operand (one packed block)
inline constexpr int kNvRankChunk = 32; // the rank is padded to a multiple of this
inline constexpr int kNvMaxRank = 128;

__host__ __device__ inline int64_t nv_round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Element (m, k) of the act workspace (uint16 index): tile (m / 128, k / 64), core matrix
// (k % 64 / 8, m % 128 / 8) of 8 rows x 16 bytes, row m % 8, element k % 8.
__host__ __device__ inline int64_t nv_act_index(int64_t m, int64_t k, int64_t Kpad) {
  return ((m / kNvTileM) * (Kpad / kNvTileK) + k / kNvTileK) * (kNvTileM * kNvTileK) + (k % kNvTileK / 8) * 1024 +
         (m % kNvTileM / 8) * 64 + (m % 8) * 8 + k % 8;
}
inline int64_t nv_padded_rank(int64_t R) { return R <= 0 ? 0 : nv_round_up(R, kNvRankChunk); }

// The activation side of a layer call in one kernel (nvfp4_act.cu): NUMERICS.md §2 (no shift:
// nvfp4 layers are signed) and §3 (nvfp4) into act, and §4.3's first sum into lact:
// lact[m][r] = sum_k f32(x[m,k]) · f32(proj_down[k][r]) in float32, in another summation order
// (tensor-core MMAs over 16 k, then the steps, k-sets and chunks of the kernel's split, always in
// the same order: bitwise the same result for the same input and M). lact columns R .. Rpad - 1
// are written 0; act columns >= K and rows >= M, lact rows >= M are not written. Optionally the
// codes and scales themselves (the tests). No scratch memory; takes the stream, allocates nothing.
struct Nvfp4ActParams {
  const uint16_t* x = nullptr;         // [M, K] T
  const uint16_t* smooth = nullptr;    // [K] T (the IEEE division of the rare cases)
  const float* smooth_rcp = nullptr;   // [Kpad][2] (pack_nv_smooth_reciprocal, nvfp4_act_pack.hpp)
  const uint32_t* pdfrag = nullptr;    // proj_down as mma B fragments (pack_nv_proj_down); Rpad > 0
  uint16_t* act = nullptr;             // nv_act_index layout, fp16
  float* lact = nullptr;               // [Mpad][Rpad] float32; Rpad > 0
  uint8_t* codes = nullptr;            // optional [M][K] e2m1 code bytes (with scales)
  uint8_t* scales = nullptr;           // optional [M][K/16] e4m3
  int64_t M = 0, K = 0, Kpad = 0;      // K a multiple of 16, Kpad = round_up(K, 64)
  int R = 0, Rpad = 0;                 // Rpad = nv_padded_rank(R) (0: no low-rank branch)
  HalfType dtype = HalfType::BF16;
};
void launch_nvfp4_act(const Nvfp4ActParams& p, cudaStream_t stream);

// The packed weights (Nvfp4Layer builds them, nvfp4_pack.hpp): for each 256-row tile nt and K step
// kt of 64, four 64-row blocks of kNvWBlockBytes, contiguous (one bulk copy per GEMM stage):
//   bytes [0, 2048): the codes of the block's A fragments, 16 bytes per thread t of the consumer
//     warpgroup, one 32-bit word per k16 step j (nv_pack_word: the eight values of wgmma's A
//     fragment in a bit order that turns into fp16 patterns with shifts and masks);
//   bytes [2048, 2560): fp16 (s_w · 2^7) for the block's 64 rows x 4 groups of 16, row-major
//     (8 bytes per row).
inline constexpr int kNvWBlockBytes = 2560;
inline constexpr int kNvWStepBytes = (kNvTileN / kNvWBlock) * kNvWBlockBytes;  // 10240 per tile and K step
// The packed scales are s_w · 2^7 and the fp16 code patterns e2m1 · 2^-14, so the wgmma sums
// carry 2^-7, which the epilogue takes back with alpha · 2^7 (exact: powers of two).
inline constexpr int kNvWScaleShift = 7;

// NUMERICS.md §4.1 in another float32 summation order: fp16 wgmma with float32 accumulation over
// all of K of the exact products (q_a·s_a)·(q_w·s_w), ×alpha, §4.3 epilogue. With splits > 1 the
// K steps of the tiles from full_tiles on are divided among `splits` CTAs per tile
// (k_steps_per_split each); their float32 partial sums (partial: [split tiles][splits][128 x 256]
// float32) are added in split order by the tile's last CTA (tickets: [split tiles] uint32, zero
// between calls). proj_up holds T values (widened): the epilogue takes them as bf16 (hi + lo).
struct Nvfp4GemmParams {
  const uint16_t* act = nullptr;      // nv_act_index layout, fp16
  const uint8_t* wpack = nullptr;     // [Npad / 256][Kpad / 64][kNvWStepBytes]
  const float* lact = nullptr;        // [Mpad][Rpad] (unused when Rpad == 0)
  const float* proj_up = nullptr;     // [Npad][Rpad]
  const float* wcscales = nullptr;    // [Npad]
  const float* bias = nullptr;        // [Npad]
  uint16_t* y = nullptr;              // [M, N] T
  float* partial = nullptr;           // splits > 1 only
  uint32_t* tickets = nullptr;        // splits > 1 only
  int64_t M = 0, N = 0, Kpad = 0;
  int Rpad = 0;
  int splits = 1, k_steps_per_split = 0;  // set by nvfp4_gemm_splits
  int64_t full_tiles = 0;                 // tiles [0, full_tiles) unsplit; the others split
  float alpha = 1.0f;
  HalfType dtype = HalfType::BF16;
};
// The split of the K steps for an M x N x Kpad GEMM on `sms` SMs (splits, steps per split), and
// the partial-sum / ticket bytes it needs.
struct Nvfp4Split {
  int splits = 1, k_steps_per_split = 0;
  int64_t full_tiles = 0;
  size_t partial_bytes = 0, ticket_bytes = 0;
};
Nvfp4Split nvfp4_gemm_splits(int64_t M, int64_t N, int64_t Kpad, int sms);
void launch_nvfp4_gemm(const Nvfp4GemmParams& p, cudaStream_t stream);

}  // namespace svdquant::cuda
