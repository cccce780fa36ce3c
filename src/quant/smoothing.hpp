// SmoothQuant-style smoothing factors (docs/QUANTIZER.md "Smoothing"): the 4-bit path computes
// (x / lambda) . (W diag(lambda))^T, moving quantization difficulty between activations and weights.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/float_formats.hpp"

namespace svdquant::quant {

// Per-input-channel absmax of W [N, K]: span_w[k] = max_n |W[n, k]|.
std::vector<float> weight_span(const float* W, int64_t N, int64_t K);

// lambda_k = span_x[k]^alpha / span_w[k]^(1 - alpha), rounded to T (the value stored as
// smooth_factor and used everywhere else). span_x empty: the data-free rule (lambda = 1).
// alpha = 0 also gives lambda = 1 (no smoothing). Channels whose spans are zero or not finite get
// lambda = 1; lambda is clamped to [2^-12, 2^12] so that T never overflows or flushes it.
std::vector<float> smoothing_factors(const std::vector<float>& span_w, const std::vector<float>& span_x,
                                     float alpha, HalfKind dtype);

}  // namespace svdquant::quant
