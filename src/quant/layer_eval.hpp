// Fast evaluation of a quantized layer on sample inputs, for the alpha search, the refinement and
// the quality report (docs/QUANTIZER.md "Quality report"). Activations are quantized exactly as
// NUMERICS.md §2-§3 say (with the CPU reference's own quantize_activations); the 4-bit product is a
// float32 GEMM of the dequantized activations and weights, which equals §4.1 up to the float32
// summation order; the epilogue and low-rank branch follow §4.3; the result is rounded to T.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/checkpoint.hpp"

namespace svdquant::quant {

// X: [M, K] values of T (already rounded). Returns [M, N] values of T as float.
std::vector<float> simulate_layer(const LayerWeights& w, const std::vector<float>& X, int64_t M);

// The 16-bit layer: X W^T + b in float64 (the target of every error). W [N, K], bias [N] or empty.
std::vector<double> reference_output(const std::vector<float>& W, int64_t N, int64_t K,
                                     const std::vector<float>& bias, const std::vector<float>& X, int64_t M);

// ||Y - Yref||_F / ||Yref||_F (0 when both are zero).
double relative_error(const std::vector<float>& Y, const std::vector<double>& Yref);

}  // namespace svdquant::quant
