#include "residual_quant.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "parallel.hpp"
#include "svdquant/error.hpp"
#include "svdquant/layout_canonical.hpp"

namespace svdquant::quant {
namespace {

DType half_dtype(HalfKind t) { return t == HalfKind::BF16 ? DType::BF16 : DType::F16; }

std::string where(int64_t n, int64_t g) {
  return "output channel " + std::to_string(n) + ", group " + std::to_string(g);
}

}  // namespace

QuantizedResidual quantize_residual(const float* R, int64_t N, int64_t K, Precision precision, HalfKind dtype) {
  const int64_t G = group_size(precision), groups = K / G;
  Tensor codes = Tensor::zeros(DType::I8, {N, K});
  int8_t* code = codes.data_as<int8_t>();
  QuantizedResidual out;
  out.dequant.assign(size_t(N * K), 0.0f);

  if (precision == Precision::INT4) {
    out.wscales = Tensor::zeros(half_dtype(dtype), {groups, N});
    uint16_t* ws = out.wscales.data_as<uint16_t>();
    parallel_for(N, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t g = 0; g < groups; ++g) {
          const float* r = R + n * K + g * G;
          float amax = 0.0f;
          for (int64_t i = 0; i < G; ++i) {
            if (!std::isfinite(r[i])) throw UnsupportedError("quantizer: residual weight is not finite at " + where(n, g));
            amax = std::max(amax, std::fabs(r[i]));
          }
          const uint16_t sbits = f32_to_half(dtype, amax / 7.0f);
          const float s = half_to_f32(dtype, sbits);
          if (!std::isfinite(s))
            throw UnsupportedError("quantizer: int4 weight scale " + std::to_string(amax / 7.0f) +
                                   " overflows the layer dtype at " + where(n, g));
          ws[g * N + n] = sbits;
          if (s == 0.0f) continue;
          for (int64_t i = 0; i < G; ++i) {
            const float q = std::clamp(std::nearbyint(r[i] / s), -8.0f, 7.0f);
            code[n * K + g * G + i] = int8_t(q);
            out.dequant[size_t(n * K + g * G + i)] = q * s;
          }
        }
      }
    });
  } else {
    float amax = 0.0f;
    for (int64_t i = 0; i < N * K; ++i) {
      if (!std::isfinite(R[i]))
        throw UnsupportedError("quantizer: residual weight is not finite at output channel " + std::to_string(i / K) +
                               ", input channel " + std::to_string(i % K));
      amax = std::max(amax, std::fabs(R[i]));
    }
    float alpha = amax > 0.0f ? round_half(dtype, float(double(amax) / (6.0 * 448.0))) : 1.0f;
    if (!(alpha > 0.0f) || !std::isfinite(alpha))
      throw UnsupportedError("quantizer: nvfp4 per-tensor scale " + std::to_string(double(amax) / 2688.0) +
                             " is not representable in the layer dtype");
    out.wtscale = Tensor::zeros(half_dtype(dtype), {1});
    out.wtscale.data_as<uint16_t>()[0] = f32_to_half(dtype, alpha);
    out.wscales = Tensor::zeros(DType::F8_E4M3, {groups, N});
    uint8_t* ws = out.wscales.data_as<uint8_t>();
    parallel_for(N, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t g = 0; g < groups; ++g) {
          const float* r = R + n * K + g * G;
          float gmax = 0.0f;
          for (int64_t i = 0; i < G; ++i) gmax = std::max(gmax, std::fabs(r[i]));
          const uint8_t sbits = f32_to_e4m3(std::min(gmax / (6.0f * alpha), 448.0f));
          ws[g * N + n] = sbits;
          const float s = e4m3_to_f32(sbits);
          if (s == 0.0f) continue;
          const float step = alpha * s;
          for (int64_t i = 0; i < G; ++i) {
            const uint8_t c = f32_to_e2m1(r[i] / step);
            code[n * K + g * G + i] = int8_t(c);
            out.dequant[size_t(n * K + g * G + i)] = float(double(e2m1_to_f32(c)) * double(s) * double(alpha));
          }
        }
      }
    });
  }
  out.qweight = pack_codes(codes, precision);
  return out;
}

}  // namespace svdquant::quant
