#include "layer_eval.hpp"

#include <cmath>
#include <limits>

#include "dense.hpp"
#include "parallel.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/layout_canonical.hpp"

namespace svdquant::quant {
namespace {

float code_value(int8_t c, Precision p) { return p == Precision::INT4 ? float(c) : e2m1_to_f32(uint8_t(c)); }

}  // namespace

std::vector<float> simulate_layer(const LayerWeights& w, const std::vector<float>& X, int64_t M) {
  const LayerDesc& d = w.desc;
  const HalfKind T = d.dtype;
  const int64_t N = d.N, K = d.K, R = d.R, G = group_size(d.precision), groups = K / G;
  Tensor xt = Tensor::zeros(T == HalfKind::BF16 ? DType::BF16 : DType::F16, {M, K});
  uint16_t* xb = xt.data_as<uint16_t>();
  for (int64_t i = 0; i < M * K; ++i) xb[i] = f32_to_half(T, X[size_t(i)]);

  // Dequantized activations (NUMERICS.md §3 codes and scales).
  const ref::QuantizedActivations qa = ref::quantize_activations(xt, w, Activations::CHECKPOINT);
  const std::vector<float> sa = to_f32_vector(qa.scales);  // [M, groups]
  const int8_t* ac = qa.codes.data_as<int8_t>();
  std::vector<float> xd(size_t(M * K));
  parallel_for(M, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t k = 0; k < K; ++k) {
        const float s = sa[size_t(m * groups + k / G)];
        xd[size_t(m * K + k)] = std::isnan(s) ? s : code_value(ac[m * K + k], d.precision) * s;
      }
  });
  // Dequantized weights.
  const Tensor codes = unpack_codes(w.qweight, d.precision);
  const int8_t* wc = codes.data_as<int8_t>();
  const std::vector<float> sw = to_f32_vector(w.wscales);  // [groups, N]
  std::vector<float> wd(size_t(N * K));
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < K; ++k)
        wd[size_t(n * K + k)] = code_value(wc[n * K + k], d.precision) * sw[size_t((k / G) * N + n)];
  });
  std::vector<float> y(size_t(M * N));
  gemm(false, true, M, N, K, xd.data(), K, wd.data(), K, y.data(), N);
  // Low-rank branch on the raw input.
  const std::vector<float> pd = to_f32_vector(w.proj_down), pu = to_f32_vector(w.proj_up);
  std::vector<float> l(size_t(M * R)), u(size_t(M * N), 0.0f);
  if (R > 0) {
    gemm(false, false, M, R, K, X.data(), K, pd.data(), R, l.data(), R);
    gemm(false, true, M, N, R, l.data(), R, pu.data(), R, u.data(), N);
  }
  const float alpha = w.alpha();
  const std::vector<float> bias = w.bias.data() ? to_f32_vector(w.bias) : std::vector<float>(size_t(N), 0.0f);
  const std::vector<float> wcs = w.wcscales.data() ? to_f32_vector(w.wcscales) : std::vector<float>(size_t(N), 1.0f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const size_t i = size_t(m * N + n);
      const float v = (y[i] * alpha) * wcs[size_t(n)] + bias[size_t(n)];
      y[i] = round_half(T, v + u[i]);
    }
  return y;
}

std::vector<double> reference_output(const std::vector<float>& W, int64_t N, int64_t K,
                                     const std::vector<float>& bias, const std::vector<float>& X, int64_t M) {
  const std::vector<double> wd(W.begin(), W.end()), xd(X.begin(), X.end());
  std::vector<double> y(size_t(M * N));
  gemm(false, true, M, N, K, xd.data(), K, wd.data(), K, y.data(), N);
  if (!bias.empty())
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[size_t(m * N + n)] += bias[size_t(n)];
  return y;
}

double relative_error(const std::vector<float>& Y, const std::vector<double>& Yref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < Y.size(); ++i) {
    const double e = double(Y[i]) - Yref[i];
    num += e * e;
    den += Yref[i] * Yref[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

}  // namespace svdquant::quant
