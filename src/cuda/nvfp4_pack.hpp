// Load-time packing of a canonical nvfp4 weight (FORMAT.md: e2m1 codes [N, K/2], low nibble =
// even k; e4m3 group scales [K/16, N]) into the nvfp4 GEMM's register-operand layout
// (nvfp4_kernels.hpp, "The packed weights"). Used by Nvfp4Layer and by the tests.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/tensor.hpp"

namespace svdquant::cuda {

// The 32-bit word of one thread's A fragment for one k16 step: the eight e2m1 codes c[e] of
// fragment element e = 2q + h (register q = 0..3, half h) at
//   idx (c & 7): bits 9 - 3q + 16h .. 11 - 3q + 16h,   sign (c & 8): bit 15 - q + 16h,
// so that register q's fp16x2 pattern is ((w << 3q) & 0x0E000E00) | ((w << q) & 0x80008000):
// idx in the lowest two exponent bits and the top mantissa bit, which is the e2m1 value · 2^-14
// for every code (idx 1 = 0.5 becomes the fp16 subnormal 2^-15).
uint32_t nv_pack_word(const uint8_t (&codes)[8]);

// Returns [Npad / 256][Kpad / 64][kNvWStepBytes] bytes (Npad = round_up(N, 256), Kpad =
// round_up(K, 64)); padding rows and columns have code 0 and scale 0.
std::vector<uint8_t> pack_nvfp4_weights(const Tensor& qweight, const Tensor& wscales, int64_t N, int64_t K);

}  // namespace svdquant::cuda
