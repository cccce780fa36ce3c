// Assembles one canonical layer from a weight, its smoothing factors and a low-rank factorization
// of the smoothed weight (docs/QUANTIZER.md "Assembly"). Shared by quantize_linear and the
// refinement/alpha search of the model quantizer.
#pragma once
#include <cstdint>
#include <vector>

#include "lowrank.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant::quant {

struct BuiltLayer {
  LayerWeights weights;
  // Dequantized 4-bit residual in the smoothed space [N, K]: Q(W diag(lambda) - L).
  std::vector<float> residual_dequant;
};

// W [N, K]; bias [N] or empty; lambda [K] (values of T, > 0); lr: factorization of W diag(lambda)
// (rank 0 allowed). The stored tensors are
//   smooth = lambda, proj_down[k, r] = T(down[r, k] / lambda_k) (float64), proj_up = T(up),
//   4-bit residual of (W - proj_up proj_down^T) diag(lambda) computed in float64 from the stored
//   (rounded) low-rank tensors, and for act_unsigned the bias b - 0.171875 * sum_k Q(R)[n, k] / lambda_k.
BuiltLayer build_layer(const float* W, int64_t N, int64_t K, const std::vector<float>& bias,
                       const std::vector<float>& lambda, const LowRank& lr, const QuantizeOptions& opt);

// W diag(lambda) as float32 [N, K].
std::vector<float> smoothed_weight(const float* W, int64_t N, int64_t K, const std::vector<float>& lambda);

// Throws (FormatError / ConfigError / UnsupportedError) unless the arguments of quantize_linear are
// consistent: sizes, K a multiple of the group size, rank range, finite weights, act_unsigned int4 only.
void check_quantize_arguments(const std::vector<float>& W, int64_t N, int64_t K, const std::vector<float>& bias,
                              const std::vector<float>& act_absmax, const QuantizeOptions& opt);

}  // namespace svdquant::quant
