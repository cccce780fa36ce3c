// quantize_linear_searched (include/svdquant/quantize.hpp): alpha grid search, refinement and the
// per-layer quality report, all judged by the output error on evaluation inputs
// (docs/QUANTIZER.md "Search and refinement").
#include <algorithm>
#include <cmath>
#include <string>

#include "build_layer.hpp"
#include "layer_eval.hpp"
#include "lowrank.hpp"
#include "smoothing.hpp"
#include "svdquant/error.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant {

QuantizedLayer quantize_linear_searched(const std::vector<float>& W, int64_t N, int64_t K,
                                        const std::vector<float>& bias, const std::vector<float>& act_absmax,
                                        const std::vector<float>& X, int64_t M, const QuantizeOptions& opt,
                                        const SearchOptions& search) {
  quant::check_quantize_arguments(W, N, K, bias, act_absmax, opt);
  if (M < 1 || int64_t(X.size()) != M * K)
    throw FormatError("quantize_linear_searched: evaluation inputs have " + std::to_string(X.size()) +
                      " values, expected M * K with M >= 1 and K = " + std::to_string(K));
  if (search.refine < 0) throw ConfigError("refine: " + std::to_string(search.refine) + " is negative");
  for (float a : search.alpha_grid)
    if (!(a >= 0.0f && a <= 1.0f)) throw ConfigError("alpha grid: " + std::to_string(a) + " is outside [0, 1]");

  const quant::SvdOptions svd = quant::svd_options(opt);
  const std::vector<double> y16 = quant::reference_output(W, N, K, bias, X, M);
  const auto error_of = [&](const LayerWeights& w) { return quant::relative_error(quant::simulate_layer(w, X, M), y16); };
  const std::vector<float> span_w = quant::weight_span(W.data(), N, K);
  std::vector<float> span_x = act_absmax;
  if (opt.act_unsigned)
    for (float& s : span_x) s += kGeluShift;
  const std::vector<float> ones(size_t(K), 1.0f);

  // Alpha grid: 0 (no smoothing) is always a candidate when there are statistics to smooth with.
  std::vector<float> alphas;
  if (act_absmax.empty()) {
    alphas = {0.0f};
  } else if (search.alpha_grid.empty()) {
    alphas = {opt.alpha};
  } else {
    alphas = search.alpha_grid;
    if (std::find(alphas.begin(), alphas.end(), 0.0f) == alphas.end()) alphas.insert(alphas.begin(), 0.0f);
  }

  QuantizedLayer out;
  double best = HUGE_VAL;
  std::vector<float> best_lambda, best_what;
  quant::BuiltLayer best_built;
  for (float a : alphas) {
    std::vector<float> lambda = quant::smoothing_factors(span_w, span_x, a, opt.dtype);
    std::vector<float> what = quant::smoothed_weight(W.data(), N, K, lambda);
    quant::BuiltLayer b = quant::build_layer(W.data(), N, K, bias, lambda,
                                             quant::truncated_svd(what.data(), N, K, opt.rank, svd), opt);
    const double e = error_of(b.weights);
    out.quality.alpha_errors.emplace_back(a, e);
    if (e < best) {
      best = e;
      out.quality.alpha = a;
      best_lambda = std::move(lambda);
      best_what = std::move(what);
      best_built = std::move(b);
    }
  }

  // Refinement: L <- SVD_r(W^ - Q(W^ - L)), starting from the kept layer; the best step is kept,
  // so refinement never makes the output error worse.
  out.quality.refine_errors.push_back(best);
  if (opt.rank > 0 && search.refine > 0) {
    std::vector<float> target(size_t(N * K));
    std::vector<float> prev_residual = best_built.residual_dequant;
    for (int step = 1; step <= search.refine; ++step) {
      for (size_t i = 0; i < target.size(); ++i) target[i] = best_what[i] - prev_residual[i];
      quant::BuiltLayer b = quant::build_layer(W.data(), N, K, bias, best_lambda,
                                               quant::truncated_svd(target.data(), N, K, opt.rank, svd), opt);
      const double e = error_of(b.weights);
      out.quality.refine_errors.push_back(e);
      prev_residual = b.residual_dequant;
      if (e < best) {
        best = e;
        out.quality.refine_kept = step;
        best_built = std::move(b);
      }
    }
  }
  out.quality.svdquant = best;

  if (search.report) {
    QuantizeOptions r0 = opt;
    r0.rank = 0;
    const quant::LowRank none{N, K, 0, {}, {}, {}};
    out.quality.rtn = error_of(quant::build_layer(W.data(), N, K, bias, ones, none, r0).weights);
    // Smoothing only: the kept lambda, or alpha = QuantizeOptions::alpha when the kept layer has none.
    std::vector<float> lambda = best_lambda;
    if (out.quality.alpha == 0.0f) lambda = quant::smoothing_factors(span_w, span_x, opt.alpha, opt.dtype);
    out.quality.smooth_only = error_of(quant::build_layer(W.data(), N, K, bias, lambda, none, r0).weights);
    out.quality.lowrank_only =
        error_of(quant::build_layer(W.data(), N, K, bias, ones, quant::truncated_svd(W.data(), N, K, opt.rank, svd), opt)
                     .weights);
  }
  out.weights = std::move(best_built.weights);
  return out;
}

}  // namespace svdquant
