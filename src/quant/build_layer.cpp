// build_layer (build_layer.hpp): canonical tensors from W, lambda and a low-rank factorization.
#include "build_layer.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "dense.hpp"
#include "parallel.hpp"
#include "residual_quant.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"

namespace svdquant {
namespace quant {
namespace {

DType half_dtype(HalfKind t) { return t == HalfKind::BF16 ? DType::BF16 : DType::F16; }

std::string shape_of(int64_t N, int64_t K) { return "[" + std::to_string(N) + ", " + std::to_string(K) + "]"; }

}  // namespace

void check_quantize_arguments(const std::vector<float>& W, int64_t N, int64_t K, const std::vector<float>& bias,
                              const std::vector<float>& act_absmax, const QuantizeOptions& opt) {
  if (N < 1 || K < 1)
    throw FormatError("quantize_linear: weight shape " + shape_of(N, K) + " is not a non-empty 2-D matrix");
  if (int64_t(W.size()) != N * K)
    throw FormatError("quantize_linear: weight has " + std::to_string(W.size()) + " values, shape " +
                      shape_of(N, K) + " needs " + std::to_string(N * K));
  const int64_t G = group_size(opt.precision);
  if (K % G != 0)
    throw UnsupportedError("quantize_linear: weight " + shape_of(N, K) + ": K = " + std::to_string(K) +
                           " is not a multiple of the " + std::string(to_string(opt.precision)) +
                           " group size " + std::to_string(G) + " (keep this layer in 16 bits)");
  if (!bias.empty() && int64_t(bias.size()) != N)
    throw FormatError("quantize_linear: bias has " + std::to_string(bias.size()) + " values, expected N = " +
                      std::to_string(N));
  if (!act_absmax.empty() && int64_t(act_absmax.size()) != K)
    throw FormatError("quantize_linear: act_absmax has " + std::to_string(act_absmax.size()) +
                      " values, expected K = " + std::to_string(K));
  if (opt.rank < 0 || opt.rank > std::min(N, K))
    throw ConfigError("quantize_linear: rank " + std::to_string(opt.rank) + " is outside [0, min(N, K) = " +
                      std::to_string(std::min(N, K)) + "] for weight " + shape_of(N, K));
  if (!(opt.alpha >= 0.0f && opt.alpha <= 1.0f))
    throw ConfigError("quantize_linear: alpha " + std::to_string(opt.alpha) + " is outside [0, 1]");
  if (opt.act_unsigned && opt.precision != Precision::INT4)
    throw ConfigError("quantize_linear: act_unsigned is defined for int4 only (NUMERICS.md §2)");
  for (int64_t i = 0; i < N * K; ++i)
    if (!std::isfinite(W[size_t(i)]))
      throw FormatError("quantize_linear: weight value at [" + std::to_string(i / K) + ", " + std::to_string(i % K) +
                        "] is not finite");
  for (size_t i = 0; i < bias.size(); ++i)
    if (!std::isfinite(bias[i])) throw FormatError("quantize_linear: bias value " + std::to_string(i) + " is not finite");
}

std::vector<float> smoothed_weight(const float* W, int64_t N, int64_t K, const std::vector<float>& lambda) {
  std::vector<float> w(size_t(N * K));
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < K; ++k) w[size_t(n * K + k)] = W[n * K + k] * lambda[size_t(k)];
  });
  return w;
}

BuiltLayer build_layer(const float* W, int64_t N, int64_t K, const std::vector<float>& bias,
                       const std::vector<float>& lambda, const LowRank& lr, const QuantizeOptions& opt) {
  const HalfKind T = opt.dtype;
  const int64_t R = lr.rank;
  LayerWeights lw;
  lw.smooth = Tensor::zeros(half_dtype(T), {K});
  lw.proj_down = Tensor::zeros(half_dtype(T), {K, R});
  lw.proj_up = Tensor::zeros(half_dtype(T), {N, R});
  uint16_t* sm = lw.smooth.data_as<uint16_t>();
  uint16_t* pd = lw.proj_down.data_as<uint16_t>();
  uint16_t* pu = lw.proj_up.data_as<uint16_t>();
  for (int64_t k = 0; k < K; ++k) sm[k] = f32_to_half(T, lambda[size_t(k)]);

  // The stored low-rank tensors, and their values widened back (float64) for the residual.
  std::vector<double> pd_val(size_t(K * R)), pu_val(size_t(N * R));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t r = 0; r < R; ++r) {
      const uint16_t b = f64_to_half(T, lr.down[size_t(r * K + k)] / double(lambda[size_t(k)]));
      pd[k * R + r] = b;
      pd_val[size_t(k * R + r)] = half_to_f32(T, b);
    }
  for (int64_t i = 0; i < N * R; ++i) {
    const uint16_t b = f64_to_half(T, lr.up[size_t(i)]);
    pu[i] = b;
    pu_val[size_t(i)] = half_to_f32(T, b);
  }

  // Residual in the smoothed space, R = (W - pu pd^T) diag(lambda), in float64 blocks of rows.
  std::vector<float> resid(size_t(N * K));
  constexpr int64_t kRows = 256;
  std::vector<double> lowrank_block(size_t(std::min(N, kRows) * K));
  for (int64_t n0 = 0; n0 < N; n0 += kRows) {
    const int64_t rows = std::min(kRows, N - n0);
    gemm(false, true, rows, K, R, pu_val.data() + n0 * R, R, pd_val.data(), R, lowrank_block.data(), K);
    parallel_for(rows, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t k = 0; k < K; ++k) {
          const int64_t n = n0 + i;
          resid[size_t(n * K + k)] =
              float((double(W[n * K + k]) - lowrank_block[size_t(i * K + k)]) * double(lambda[size_t(k)]));
        }
    });
  }
  QuantizedResidual q = quantize_residual(resid.data(), N, K, opt.precision, T);
  lw.qweight = q.qweight;
  lw.wscales = q.wscales;
  lw.wtscale = q.wtscale;

  // NUMERICS.md §2/§4.3: the 4-bit path sees x + 0.171875 while the low-rank branch sees the raw x,
  // so the shift's contribution is the 4-bit path's response to a constant input.
  if (!bias.empty() || opt.act_unsigned) {
    lw.bias = Tensor::zeros(half_dtype(T), {N});
    uint16_t* b = lw.bias.data_as<uint16_t>();
    parallel_for(N, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        double v = bias.empty() ? 0.0 : double(bias[size_t(n)]);
        if (opt.act_unsigned) {
          double s = 0.0;
          for (int64_t k = 0; k < K; ++k) s += double(q.dequant[size_t(n * K + k)]) / double(lambda[size_t(k)]);
          v -= double(kGeluShift) * s;
        }
        b[n] = f64_to_half(T, v);
      }
    });
  }
  lw.validate(opt.precision, opt.act_unsigned);
  return BuiltLayer{std::move(lw), std::move(q.dequant)};
}

}  // namespace quant
}  // namespace svdquant
