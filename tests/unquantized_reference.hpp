// The layer with unquantized activations (float64): what both activation modes of NUMERICS.md
// (§3 4-bit, §5 fp8) approximate; their errors against it measure activation quantization.
#pragma once
#include <vector>

#include "svdquant/checkpoint.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/layout_canonical.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant::test {

// The layer with unquantized activations: the quantized weights applied to xs itself (float64).
// Both activation modes approximate this; their errors against it measure activation quantization.
inline Tensor unquantized_activation_output(const Tensor& x, const LayerWeights& w) {
  const auto& d = w.desc;
  const int64_t M = x.size(0), G = group_size(d.precision);
  std::vector<float> xs = ref::shift_and_smooth(x, w);
  std::vector<float> l = ref::lowrank_down(x, w);
  Tensor codes = unpack_codes(w.qweight, d.precision);
  Tensor exact = Tensor::zeros(DType::F64, {M, d.N});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < d.N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < d.K; ++k) {
        const int8_t c = codes.data_as<int8_t>()[n * d.K + k];
        const double wv = d.precision == Precision::INT4 ? double(c) : double(e2m1_to_f32(uint8_t(c)));
        acc += double(xs[size_t(m * d.K + k)]) * wv * element_as_double(w.wscales, (k / G) * d.N + n);
      }
      double y = acc * w.alpha() * element_as_double(w.wcscales, n) + element_as_double(w.bias, n);
      for (int64_t r = 0; r < d.R; ++r) y += double(l[size_t(m * d.R + r)]) * element_as_double(w.proj_up, n * d.R + r);
      exact.data_as<double>()[m * d.N + n] = y;
    }
  return exact;
}

}  // namespace svdquant::test
