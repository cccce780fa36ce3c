// Load-time tables of the nvfp4 activation kernel (nvfp4_act.cu), built from the canonical
// tensors: the smoothing reciprocals and proj_down in the kernel's mma B-fragment order. Used by
// Nvfp4Layer, the kernel tests and cuda_bench.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/tensor.hpp"

namespace svdquant::cuda {

// smooth [K] T -> the reciprocal pairs (hi, lo) of the smoothing division (pack_smooth_reciprocal,
// smooth_div.hpp) as [Kpad / 64][8][4] float4 (Kpad = round_up(K, 64)): entry (s, w, t) holds the
// pairs of columns k and k + 1, k = 64 s + 16 t + 2 w, so that the four lanes t of a warp load
// 64 contiguous bytes for their word w. Padding columns get (1, 0) (their x is zero-filled by the
// kernel, so their xs is 0).
std::vector<float> pack_nv_smooth_reciprocal(const Tensor& smooth, int64_t K);

// proj_down [K, R] T -> the A fragments of the kernel's mma.m16n8k16 l^T += proj_down^T x^T, for
// Rpad ranks (zero for k >= K and r >= R): [Kpad / 64][Rpad / 16][4][32 lanes][4 words]. For step
// s, rank tile u, MMA j and lane 4 g + t, with k = 64 s + 16 t + 4 j and r = 16 u + g, the words
// are the T pairs (pd[k][r], pd[k + 1][r]), (pd[k][r + 8], pd[k + 1][r + 8]), (pd[k + 2][r],
// pd[k + 3][r]), (pd[k + 2][r + 8], pd[k + 3][r + 8]) (nvfp4_act.cu has the k order).
std::vector<uint32_t> pack_nv_proj_down(const Tensor& proj_down, int64_t K, int64_t R, int64_t Rpad);

}  // namespace svdquant::cuda
