// Synthetic linear layers for the quantizer tests: a weight with a decaying singular spectrum plus
// noise and a few large input columns, and inputs with a few outlier channels (docs/QUANTIZER.md).
#pragma once
#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <vector>

#include "svdquant/float_formats.hpp"

namespace svdquant::testing {

class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : rng_(seed) {}
  double operator()() {  // Box-Muller on mt19937_64 (std::normal_distribution is not portable)
    const double u1 = (double(rng_() >> 11) + 0.5) * 0x1.0p-53, u2 = (double(rng_() >> 11) + 0.5) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  std::mt19937_64 rng_;
};

struct SyntheticLayer {
  int64_t N = 0, K = 0, M = 0;
  std::vector<float> W, bias;  // [N, K], [N]
  std::vector<float> X;        // [M, K], values of T
  std::vector<float> absmax;   // [K], of X
};

// rank-64 decaying spectrum (sigma_i ~ 1/(1+i)) + white noise, weight columns in `outlier_cols`
// scaled up, inputs N(0,1) with `outlier_channels` channels scaled by `outlier_scale`.
// gelu: inputs are GELU outputs (>= -0.17) for act_unsigned layers.
inline SyntheticLayer make_layer(int64_t N, int64_t K, int64_t M, HalfKind T, uint64_t seed,
                                 int outlier_channels = 4, float outlier_scale = 40.0f, bool gelu = false) {
  SyntheticLayer L;
  L.N = N, L.K = K, L.M = M;
  Gaussian g(seed);
  const int64_t r = 64;
  std::vector<double> u(size_t(N * r)), v(size_t(r * K));
  for (auto& e : u) e = g() / std::sqrt(double(N));
  for (auto& e : v) e = g() / std::sqrt(double(K));
  L.W.assign(size_t(N * K), 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      double s = 0.0;
      for (int64_t i = 0; i < r; ++i) s += u[size_t(n * r + i)] * v[size_t(i * K + k)] * (4.0 / (1.0 + double(i)));
      s += 0.02 * g() / std::sqrt(double(K)) * 8.0;
      if (k % 97 == 5) s *= 6.0;  // a few large weight columns
      L.W[size_t(n * K + k)] = round_half(T, float(s));
    }
  L.bias.resize(size_t(N));
  for (auto& b : L.bias) b = round_half(T, float(0.1 * g()));
  std::vector<float> scale(size_t(K), 1.0f);
  for (int i = 0; i < outlier_channels; ++i) scale[size_t((i * 7919 + 13) % K)] = outlier_scale;
  L.X.resize(size_t(M * K));
  L.absmax.assign(size_t(K), 0.0f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      double x = g() * scale[size_t(k)];
      if (gelu) x = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
      const float xv = round_half(T, float(x));
      L.X[size_t(m * K + k)] = xv;
      L.absmax[size_t(k)] = std::max(L.absmax[size_t(k)], std::fabs(xv));
    }
  return L;
}

}  // namespace svdquant::testing
