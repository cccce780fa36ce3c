// Host-side repacking of canonical tensors into the cuda-sm90 layouts (sm90_layout.hpp). Used by
// prepare and by the tests of the kernels.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/checkpoint.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant::cuda {

// qweight int8 [N, K/2] (canonical: low nibble = even k) -> weight fragments [Nt][G][4096].
std::vector<uint8_t> pack_weight_fragments(const Tensor& qweight, int64_t N, int64_t K);
// proj_down [K, R] T -> mma B fragments for the activation kernel (act_quant.cu), Rpad ranks:
// [G][2][Rpad / 8][32 lanes][4 words], in the kernel's permuted k order.
std::vector<uint32_t> pack_proj_down(const Tensor& proj_down, int64_t K, int64_t R, int64_t Rpad);
// smooth [K] T -> [K] (hi, lo) float32 reciprocal pairs of the smoothing division (smooth_div.hpp).
std::vector<float> pack_smooth_reciprocal(const Tensor& smooth, int64_t K);

// A contiguous host copy when the tensor is a strided view; otherwise the tensor itself.
Tensor contiguous_host(const Tensor& t);
// A [rows, cols] T tensor widened to float32 in [rows_pad, cols_pad] (zero padding): proj_up for
// the GEMM epilogues, proj_down for the nvfp4 low-rank kernel.
std::vector<float> widen_padded(const Tensor& t, HalfKind dtype, int64_t rows, int64_t cols, int64_t rows_pad,
                                int64_t cols_pad);
// The epilogue's per-column vectors as float32, padded to Npad: wcscales (ones when absent) and
// bias (zeros when absent).
struct EpilogueVectors {
  std::vector<float> wcscales, bias;
};
EpilogueVectors epilogue_vectors(const LayerWeights& w, int64_t Npad);

}  // namespace svdquant::cuda
