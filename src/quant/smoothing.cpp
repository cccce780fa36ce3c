#include "smoothing.hpp"

#include <algorithm>
#include <cmath>

#include "parallel.hpp"

namespace svdquant::quant {

std::vector<float> weight_span(const float* W, int64_t N, int64_t K) {
  // Parallel over columns: every column's max is computed by one thread, in row order.
  std::vector<float> span(size_t(K), 0.0f);
  parallel_for(K, [&](int64_t k0, int64_t k1) {
    for (int64_t n = 0; n < N; ++n) {
      const float* row = W + n * K;
      for (int64_t k = k0; k < k1; ++k) span[size_t(k)] = std::max(span[size_t(k)], std::fabs(row[k]));
    }
  });
  return span;
}

std::vector<float> smoothing_factors(const std::vector<float>& span_w, const std::vector<float>& span_x,
                                     float alpha, HalfKind dtype) {
  const size_t K = span_w.size();
  std::vector<float> lambda(K, 1.0f);
  if (span_x.empty() || alpha == 0.0f) return lambda;  // data-free rule / no smoothing
  const double a = alpha;
  for (size_t k = 0; k < K; ++k) {
    const double sx = span_x[k], sw = span_w[k];
    if (!(sx > 0.0) || !(sw > 0.0) || !std::isfinite(sx) || !std::isfinite(sw)) continue;
    double l = std::pow(sx, a) / std::pow(sw, 1.0 - a);
    l = std::clamp(l, 0x1.0p-12, 0x1.0p12);
    lambda[k] = round_half(dtype, float(l));
  }
  return lambda;
}

}  // namespace svdquant::quant
