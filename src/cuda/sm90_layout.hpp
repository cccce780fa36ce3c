// The cuda-sm90 backend's own layouts (built by `prepare` from the canonical tensors, and by the
// activation kernel at run time). One GEMM tile is kTileM activation rows x kTileN output columns;
// every K step is one quantization group of 64.
//
// Activation codes (written by the activation kernel, read by the GEMM with one bulk copy per
// tile and group): e4m3 bytes of the int4 code values (exact: |q| <= 15), in tiles
//   codes[mt][g][8192], mt = m / 128, g = k / 64,
// each tile in wgmma's K-major 64-byte-swizzle order for a 128 x 64 byte operand (rows of 64
// bytes, 16-byte chunks permuted within a row; v7: the no-swizzle core-matrix order before it
// made the tensor cores' shared-memory reads conflict, docs/perf-notes.md):
//   offset(r, c) = r * 64 + ((c / 16) ^ ((r / 2) % 4)) * 16 + (c % 16)   (r row, c column)
// (With fp8 activations, NUMERICS.md §5, the same tiles hold the e4m3 activations themselves.)
// Activation scales: ascale[mt][g][128] of T (the raw 16-bit pattern), or float32 for the fp32
// accumulation; fp8 activations have one float32 scale per row instead, row_scale[Mpad].
// Low-rank activations: lact[Mpad][Rpad] float32.
//
// Weights (built by prepare): int4 codes kept 4-bit, in the register-fragment order of wgmma's A
// operand (the weight rows are wgmma's M side, so the GEMM computes y^T tiles):
//   wfrag[nt][g][wg][tid][16 bytes], nt = n / 128, wg in {0, 1} (64 rows each), tid in [0, 128)
// 16 bytes = 4 words; word 2h + j (h: k half of 32, j in {0, 1}) holds two 4-value registers,
// low 16 bits register a(2j), high 16 bits register a(2j+1); nibble i of a register is the value at
//   a0: row g8,     k = 32h + 4t + i       a1: row g8 + 8, k = 32h + 4t + i
//   a2: row g8,     k = 32h + 16 + 4t + i  a3: row g8 + 8, k = 32h + 16 + 4t + i
// with row = 64 wg + 16 (tid / 32) + g8, g8 = (tid % 32) / 4, t = tid % 4.
// Expanded weights (built per call by launch_expand_weights or by spare blocks of the activation
// kernel, both with weight_expand.cuh; read by the GEMM as a shared-memory
// operand): wexp[nt][g][8192], the e4m3 values of the same codes, each (nt, g) tile 128 weight
// rows x 64 k in the code tiles' layout (code_tile_offset).
// Weight scales: wscale[nt][g][128] of T. Padding rows (n >= N) have codes 0 and scales 0.
// nt ranges over weight_tiles(N) (below). Each (nt, g, wg) piece is one 64-row block of 2048 bytes,
// the unit a consumer warpgroup of the GEMM reads. For one nt (or mt) consecutive groups are
// adjacent in every array: the GEMM copies two groups at a time.
#pragma once
#include <cstdint>

#include "host_device.hpp"

namespace svdquant::cuda {

inline constexpr int kTileM = 128;        // activation rows per GEMM tile (wgmma N)
inline constexpr int kTileN = 128;        // output columns per GEMM tile (2 warpgroups x wgmma M 64)
inline constexpr int kGroup = 64;         // int4 group size along K (NUMERICS.md §1)
inline constexpr int kCodeTileBytes = kTileM * kGroup;       // 8192
inline constexpr int kWeightTileBytes = kTileN * kGroup / 2;  // 4096
inline constexpr int kMaxRank = 128;      // largest low-rank R the kernels are built for
inline constexpr int kWeightBlock = 64;   // weight rows per consumer warpgroup (wgmma M)

SVDQUANT_HD inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
SVDQUANT_HD inline constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Byte offset of (row r in [0,128), column c in [0,64)) inside one activation code tile.
SVDQUANT_HD inline constexpr int code_tile_offset(int r, int c) {
  return r * 64 + (((c / 16) ^ ((r / 2) % 4)) * 16) + (c % 16);
}

// Weight tiles of 128 rows held for N output columns (padding rows have codes 0 and scales 0;
// the outputs they would give are not stored).
SVDQUANT_HD inline constexpr int64_t weight_tiles(int64_t N) { return ceil_div(N, 128); }

// Low-rank padding: R rounded up to 8 x (a power of two) tiles of 8, the kernels' instantiations
// (8, 16, 32, 64, 128); 0 stays 0.
inline int64_t padded_rank(int64_t R) {
  if (R <= 0) return 0;
  int64_t tiles = 1;
  while (tiles * 8 < R) tiles *= 2;
  return tiles * 8;
}

}  // namespace svdquant::cuda
