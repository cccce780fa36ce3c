// Times quantize_linear on synthetic layers of FLUX.1 shapes (hidden 3072, MLP 12288) and compares
// the randomized SVD with LAPACK's full SVD by the layer's relative output error against the
// 16-bit layer, and measures the data-free smoothing rule. Usage:
//   quantize_bench [--lapack] [--quick]
//   --lapack     also run the LAPACK sgesdd path (slow at these sizes)
//   --quick      only the 3072 x 3072 layer
//   --data-free  compare data-free smoothing rules (no activation statistics) instead
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "svdquant/cpu_reference.hpp"
#include "svdquant/quantize.hpp"

using namespace svdquant;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Decaying spectrum (sigma_i = 4/(1+i), i < 64) + noise, a few large columns.
std::vector<float> synthetic_weight(int64_t N, int64_t K, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto normal = [&] {
    const double u1 = (double(rng() >> 11) + 0.5) * 0x1.0p-53, u2 = (double(rng() >> 11) + 0.5) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  };
  const int64_t r = 64;
  std::vector<float> u(size_t(N * r)), v(size_t(r * K)), W(size_t(N * K));
  for (int64_t i = 0; i < N * r; ++i) u[size_t(i)] = float(normal() / std::sqrt(double(N)) * 4.0 / (1.0 + double(i % r)));
  for (auto& e : v) e = float(normal() / std::sqrt(double(K)));
  for (int64_t n = 0; n < N; ++n) {
    float* row = W.data() + n * K;
    for (int64_t k = 0; k < K; ++k) row[k] = float(0.16 * normal() / std::sqrt(double(K)));
    for (int64_t i = 0; i < r; ++i) {
      const float a = u[size_t(n * r + i)];
      const float* vi = v.data() + i * K;
      for (int64_t k = 0; k < K; ++k) row[k] += a * vi[k];
    }
    for (int64_t k = 5; k < K; k += 97) row[k] *= 6.0f;
  }
  for (auto& w : W) w = round_half(HalfKind::BF16, w);
  return W;
}

}  // namespace

int main(int argc, char** argv) {
  bool lapack = false, quick = false, data_free = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--lapack")) lapack = true;
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--data-free")) data_free = true;
    else {
      std::fprintf(stderr, "usage: quantize_bench [--lapack] [--quick]\n");
      return 2;
    }
  }
  struct Shape { const char* name; int64_t N, K; };
  std::vector<Shape> shapes = {{"attn 3072x3072", 3072, 3072}};
  if (!quick) {
    shapes.push_back({"mlp fc1 12288x3072", 12288, 3072});
    shapes.push_back({"mlp fc2 3072x12288", 3072, 12288});
  }
  const int64_t M = 256;
  std::printf("%-22s %-12s %8s %10s %10s\n", "layer", "svd", "seconds", "err", "rtn_err");
  for (const Shape& s : shapes) {
    const std::vector<float> W = synthetic_weight(s.N, s.K, 1);
    std::vector<float> absmax(size_t(s.K), 1.0f);
    for (int64_t k = 11; k < s.K; k += 211) absmax[size_t(k)] = 60.0f;  // outlier input channels
    const std::vector<float> X = synthetic_inputs(M, s.K, absmax, false, HalfKind::BF16, 7);
    std::vector<double> y16(size_t(M * s.N));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < s.N; ++n) {
        double acc = 0.0;
        for (int64_t k = 0; k < s.K; ++k) acc += double(X[size_t(m * s.K + k)]) * double(W[size_t(n * s.K + k)]);
        y16[size_t(m * s.N + n)] = acc;
      }
    auto err = [&](const LayerWeights& w) {
      Tensor x = Tensor::zeros(DType::BF16, {M, s.K});
      for (int64_t i = 0; i < M * s.K; ++i) x.data_as<uint16_t>()[i] = f32_to_bf16(X[size_t(i)]);
      const std::vector<float> y = to_f32_vector(ref::forward(x, w, ForwardOptions{}));
      double num = 0, den = 0;
      for (size_t i = 0; i < y.size(); ++i) num += (y[i] - y16[i]) * (y[i] - y16[i]), den += y16[i] * y16[i];
      return std::sqrt(num / den);
    };
    QuantizeOptions rtn;
    rtn.rank = 0;
    rtn.alpha = 0;
    const double e_rtn = err(quantize_linear(W, s.N, s.K, {}, {}, rtn));
    if (data_free) {
      // Candidate rules when the activation statistics are unknown: lambda = 1, or a weight-only
      // rule lambda_k = span_x^a / span_w^(1-a) with a uniform span_x (flattens weight columns).
      QuantizeOptions opt;
      opt.rank = 32;
      std::printf("%-22s lambda=1                 err %.5f (rtn %.5f)\n", s.name, err(quantize_linear(W, s.N, s.K, {}, {}, opt)), e_rtn);
      for (float a : {0.25f, 0.5f}) {
        opt.alpha = a;
        const std::vector<float> uniform(size_t(s.K), 1.0f);
        std::printf("%-22s weight-only alpha=%.2f  err %.5f\n", s.name, double(a),
                    err(quantize_linear(W, s.N, s.K, {}, uniform, opt)));
      }
      continue;
    }
    for (int pass = 0; pass < (lapack ? 2 : 1); ++pass) {
      QuantizeOptions opt;
      opt.rank = 32;
      opt.svd = pass == 0 ? QuantizeOptions::Svd::RANDOMIZED : QuantizeOptions::Svd::LAPACK;
      const auto t0 = std::chrono::steady_clock::now();
      const LayerWeights w = quantize_linear(W, s.N, s.K, {}, absmax, opt);
      const double t = seconds_since(t0);
      std::printf("%-22s %-12s %8.2f %10.5f %10.5f\n", s.name, pass == 0 ? "randomized" : "lapack", t, err(w), e_rtn);
      std::fflush(stdout);
    }
  }
  return 0;
}
