// quantize_linear (include/svdquant/quantize.hpp): smoothing, rank-r SVD, 4-bit residual.
#include "svdquant/quantize.hpp"

#include "build_layer.hpp"
#include "lowrank.hpp"
#include "smoothing.hpp"

namespace svdquant {

LayerWeights quantize_linear(const std::vector<float>& W, int64_t N, int64_t K, const std::vector<float>& bias,
                             const std::vector<float>& act_absmax, const QuantizeOptions& opt) {
  quant::check_quantize_arguments(W, N, K, bias, act_absmax, opt);
  const std::vector<float> span_w = quant::weight_span(W.data(), N, K);
  std::vector<float> span_x = act_absmax;
  if (opt.act_unsigned)  // the 4-bit path quantizes x + 0.171875 (NUMERICS.md §2)
    for (float& s : span_x) s += kGeluShift;
  const std::vector<float> lambda = quant::smoothing_factors(span_w, span_x, opt.alpha, opt.dtype);
  const std::vector<float> w_hat = quant::smoothed_weight(W.data(), N, K, lambda);
  const quant::LowRank lr = quant::truncated_svd(w_hat.data(), N, K, opt.rank, quant::svd_options(opt));
  return quant::build_layer(W.data(), N, K, bias, lambda, lr, opt).weights;
}

}  // namespace svdquant
