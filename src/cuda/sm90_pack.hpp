// Host-side repacking of canonical tensors into the cuda-sm90 layouts (sm90_layout.hpp). Used by
// prepare and by the tests of the kernels.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/tensor.hpp"

namespace svdquant::cuda {

// qweight int8 [N, K/2] (canonical: low nibble = even k) -> weight fragments [Nt][G][4096].
std::vector<uint8_t> pack_weight_fragments(const Tensor& qweight, int64_t N, int64_t K);
// proj_down [K, R] T -> mma B fragments for the activation kernel (act_quant.cu), Rpad ranks:
// [G][2][Rpad / 8][32 lanes][4 words], in the kernel's permuted k order.
std::vector<uint32_t> pack_proj_down(const Tensor& proj_down, int64_t K, int64_t R, int64_t Rpad);
// smooth [K] T -> [K] (hi, lo) float32 reciprocal pairs of the smoothing division (smooth_div.hpp).
std::vector<float> pack_smooth_reciprocal(const Tensor& smooth, int64_t K);

}  // namespace svdquant::cuda
