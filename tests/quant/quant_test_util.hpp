// Helpers shared by the quantizer tests: tensors from float vectors, the CPU reference forward,
// and a float64 recomputation of a layer from its stored tensors (NUMERICS.md §2-§4.3).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "svdquant/checkpoint.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/layout_canonical.hpp"

namespace svdquant::testing {

inline Tensor half_tensor(const std::vector<float>& v, Shape shape, HalfKind T) {
  Tensor t = Tensor::zeros(T == HalfKind::BF16 ? DType::BF16 : DType::F16, std::move(shape));
  uint16_t* p = t.data_as<uint16_t>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = f32_to_half(T, v[i]);
  return t;
}

inline std::vector<float> cpu_forward(const LayerWeights& w, const std::vector<float>& X, int64_t M) {
  return to_f32_vector(ref::forward(half_tensor(X, {M, w.desc.K}, w.desc.dtype), w, ForwardOptions{}));
}

// The layer in float64 from the stored tensors: activation codes and scales of NUMERICS.md §3 (the
// reference's quantize_activations), then every product and sum in float64, no final rounding.
inline std::vector<double> float64_recompute(const LayerWeights& w, const std::vector<float>& X, int64_t M) {
  const LayerDesc& d = w.desc;
  const int64_t N = d.N, K = d.K, R = d.R, G = group_size(d.precision);
  const auto val = [&](int8_t c) { return d.precision == Precision::INT4 ? double(c) : double(e2m1_to_f32(uint8_t(c))); };
  const Tensor x = half_tensor(X, {M, K}, d.dtype);
  const ref::QuantizedActivations qa = ref::quantize_activations(x, w, Activations::CHECKPOINT);
  const std::vector<double> sa = to_f64_vector(qa.scales), sw = to_f64_vector(w.wscales);
  const std::vector<double> pd = to_f64_vector(w.proj_down), pu = to_f64_vector(w.proj_up);
  const std::vector<double> bias = w.bias.data() ? to_f64_vector(w.bias) : std::vector<double>(size_t(N), 0.0);
  const Tensor codes = unpack_codes(w.qweight, d.precision);
  const int8_t* wc = codes.data_as<int8_t>();
  const int8_t* ac = qa.codes.data_as<int8_t>();
  const double alpha = w.alpha();
  std::vector<double> y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m) {
    std::vector<double> l(size_t(R), 0.0);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t k = 0; k < K; ++k) l[size_t(r)] += double(X[size_t(m * K + k)]) * pd[size_t(k * R + r)];
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k)
        acc += val(ac[m * K + k]) * sa[size_t(m * (K / G) + k / G)] * val(wc[n * K + k]) * sw[size_t((k / G) * N + n)];
      double u = 0.0;
      for (int64_t r = 0; r < R; ++r) u += l[size_t(r)] * pu[size_t(n * R + r)];
      y[size_t(m * N + n)] = acc * alpha + bias[size_t(n)] + u;
    }
  }
  return y;
}

inline double rel_error(const std::vector<float>& y, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += (double(y[i]) - ref[i]) * (double(y[i]) - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

// X W^T + b in float64: the 16-bit layer.
inline std::vector<double> dense_output(const std::vector<float>& W, const std::vector<float>& bias,
                                        const std::vector<float>& X, int64_t M, int64_t N, int64_t K) {
  std::vector<double> y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias.empty() ? 0.0 : double(bias[size_t(n)]);
      for (int64_t k = 0; k < K; ++k) s += double(X[size_t(m * K + k)]) * double(W[size_t(n * K + k)]);
      y[size_t(m * N + n)] = s;
    }
  return y;
}

inline bool same_bytes(const Tensor& a, const Tensor& b) {
  if (!a.data() || !b.data()) return !a.data() && !b.data();
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

}  // namespace svdquant::testing
