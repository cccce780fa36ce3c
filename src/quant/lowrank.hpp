// Rank-r truncated SVD of a weight matrix A [N, K] (row-major float32): A ~= up * down with
// up = U_r diag(S_r) [N, r] and down = V_r^T [r, K], both float64.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/quantize.hpp"

namespace svdquant::quant {

struct LowRank {
  int64_t N = 0, K = 0, rank = 0;
  std::vector<double> up;     // [N, rank]
  std::vector<double> down;   // [rank, K]
  std::vector<double> sigma;  // [rank], descending
};

enum class SvdMethod { RANDOMIZED, LAPACK };

struct SvdOptions {
  SvdMethod method = SvdMethod::RANDOMIZED;
  int power_iterations = 2;  // randomized only
  int oversampling = 16;     // randomized only
  uint64_t seed = 0x5eed5eedULL;
};

// Halko-Martinsson-Tropp randomized range finder with re-orthonormalized power iterations, then an
// exact SVD of the small projected matrix; or a full LAPACK thin SVD (sgesdd) truncated to r.
// Deterministic: the Gaussian test matrix comes from a fixed-seed generator.
// The SVD settings of a QuantizeOptions.
SvdOptions svd_options(const QuantizeOptions& opt);

LowRank truncated_svd(const float* A, int64_t N, int64_t K, int64_t rank, const SvdOptions& opt = {});

}  // namespace svdquant::quant
