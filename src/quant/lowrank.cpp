#include "lowrank.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "dense.hpp"

namespace svdquant::quant {
namespace {

// splitmix64: a tiny, portable generator (std::normal_distribution is implementation-defined).
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform_open() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)
};

std::vector<float> gaussian_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  SplitMix64 rng{seed};
  std::vector<float> m(size_t(rows * cols));
  for (size_t i = 0; i < m.size(); i += 2) {  // Box-Muller, two normals per draw
    const double r = std::sqrt(-2.0 * std::log(rng.uniform_open()));
    const double t = 2.0 * std::numbers::pi * rng.uniform_open();
    m[i] = float(r * std::cos(t));
    if (i + 1 < m.size()) m[i + 1] = float(r * std::sin(t));
  }
  return m;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }
std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

LowRank randomized(const float* A, int64_t N, int64_t K, int64_t rank, const SvdOptions& opt) {
  const int64_t P = std::min<int64_t>(rank + std::max(opt.oversampling, 0), std::min(N, K));
  // Range of A: Y = A * Omega [N, P].
  std::vector<float> omega = gaussian_matrix(K, P, opt.seed);
  std::vector<float> y(size_t(N * P)), z(size_t(K * P));
  gemm(false, false, N, P, K, A, K, omega.data(), P, y.data(), P);
  std::vector<double> q = to_double(y);
  orthonormalize_columns(q, N, P);
  for (int it = 0; it < opt.power_iterations; ++it) {
    std::vector<float> qf = to_float(q);
    gemm(true, false, K, P, N, A, K, qf.data(), P, z.data(), P);  // Z = A^T Q
    std::vector<double> zq = to_double(z);
    orthonormalize_columns(zq, K, P);
    std::vector<float> zf = to_float(zq);
    gemm(false, false, N, P, K, A, K, zf.data(), P, y.data(), P);  // Y = A Z
    q = to_double(y);
    orthonormalize_columns(q, N, P);
  }
  // A ~= Q Q^T A = Q Z^T with Z = A^T Q [K, P]; SVD Z = Vz S Uz^T gives A ~= (Q Uz) S Vz^T.
  std::vector<float> qf = to_float(q);
  gemm(true, false, K, P, N, A, K, qf.data(), P, z.data(), P);
  std::vector<double> vz, s, uzt;
  svd_thin(to_double(z), K, P, vz, s, uzt);  // vz [K, P], uzt [P, P]
  std::vector<double> u(size_t(N * P));
  gemm(false, true, N, P, P, q.data(), P, uzt.data(), P, u.data(), P);  // Q Uz
  LowRank out{N, K, rank, std::vector<double>(size_t(N * rank)), std::vector<double>(size_t(rank * K)),
              std::vector<double>(s.begin(), s.begin() + rank)};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < rank; ++j) out.up[size_t(n * rank + j)] = u[size_t(n * P + j)] * s[size_t(j)];
  for (int64_t j = 0; j < rank; ++j)
    for (int64_t k = 0; k < K; ++k) out.down[size_t(j * K + k)] = vz[size_t(k * P + j)];
  return out;
}

LowRank full_lapack(const float* A, int64_t N, int64_t K, int64_t rank) {
  std::vector<float> a(A, A + N * K), u, s, vt;
  svd_thin(a, N, K, u, s, vt);
  const int64_t p = std::min(N, K);
  LowRank out{N, K, rank, std::vector<double>(size_t(N * rank)), std::vector<double>(size_t(rank * K)),
              std::vector<double>(s.begin(), s.begin() + rank)};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < rank; ++j) out.up[size_t(n * rank + j)] = double(u[size_t(n * p + j)]) * s[size_t(j)];
  for (int64_t j = 0; j < rank; ++j)
    for (int64_t k = 0; k < K; ++k) out.down[size_t(j * K + k)] = vt[size_t(j * K + k)];
  return out;
}

}  // namespace

SvdOptions svd_options(const QuantizeOptions& opt) {
  SvdOptions s;
  s.method = opt.svd == QuantizeOptions::Svd::LAPACK ? SvdMethod::LAPACK : SvdMethod::RANDOMIZED;
  s.power_iterations = opt.power_iterations;
  return s;
}

LowRank truncated_svd(const float* A, int64_t N, int64_t K, int64_t rank, const SvdOptions& opt) {
  rank = std::clamp<int64_t>(rank, 0, std::min(N, K));
  if (rank == 0) return LowRank{N, K, 0, {}, {}, {}};
  return opt.method == SvdMethod::LAPACK ? full_lapack(A, N, K, rank) : randomized(A, N, K, rank, opt);
}

}  // namespace svdquant::quant
