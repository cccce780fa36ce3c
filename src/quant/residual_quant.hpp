// 4-bit quantization of the (smoothed) residual weight R [N, K] into canonical tensors
// (docs/QUANTIZER.md "Residual"; the format of docs/FORMAT.md, the numerics of NUMERICS.md §4):
//   int4:  groups of 64 along K, s = T(amax / 7), code = clamp(rne(r / s), -8, 7);
//   nvfp4: groups of 16, per-tensor alpha = T(amax / (6 * 448)),
//          s = e4m3(min(amax_g / (6 * alpha), 448)), code = e2m1_rne(r / (alpha * s)).
// A group whose scale is 0 gets code 0.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/float_formats.hpp"
#include "svdquant/numerics.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant::quant {

struct QuantizedResidual {
  Tensor qweight;              // int8 [N, K/2] (packed canonical codes)
  Tensor wscales;              // [K/G, N] T (int4) or F8_E4M3 (nvfp4)
  Tensor wtscale;              // [1] T for nvfp4, undefined for int4
  std::vector<float> dequant;  // [N, K] code * scale (* alpha): what the 4-bit GEMM multiplies by
};

// Throws UnsupportedError when a scale does not fit T (e.g. fp16 overflow) or R is not finite.
QuantizedResidual quantize_residual(const float* R, int64_t N, int64_t K, Precision precision, HalfKind dtype);

}  // namespace svdquant::quant
