// synthetic_inputs (include/svdquant/quantize.hpp): evaluation inputs without calibration samples.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "svdquant/float_formats.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant {
namespace {

struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform_open() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }
  double normal() {
    return std::sqrt(-2.0 * std::log(uniform_open())) * std::cos(2.0 * std::numbers::pi * uniform_open());
  }
};

}  // namespace

std::vector<float> synthetic_inputs(int64_t M, int64_t K, const std::vector<float>& act_absmax, bool act_unsigned,
                                    HalfKind dtype, uint64_t seed) {
  SplitMix64 rng{seed};
  std::vector<double> scale(size_t(K), 1.0);
  if (!act_absmax.empty()) {
    for (int64_t k = 0; k < K; ++k) scale[size_t(k)] = double(act_absmax[size_t(k)]) / 4.0;
  } else {
    const int64_t outliers = std::max<int64_t>(1, K / 100);
    for (int64_t i = 0; i < outliers; ++i) scale[size_t(rng.next() % uint64_t(K))] = 20.0;
  }
  std::vector<float> X(size_t(M * K));
  for (int64_t i = 0; i < M * K; ++i) {
    double x = rng.normal() * scale[size_t(i % K)];
    if (act_unsigned) x = 0.5 * x * (1.0 + std::erf(x / std::numbers::sqrt2));
    X[size_t(i)] = round_half(dtype, float(x));
  }
  return X;
}

}  // namespace svdquant
