#include "dense.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <string>

#include "svdquant/error.hpp"

namespace svdquant::quant {
namespace {

CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

void check_lapack(lapack_int info, const char* routine) {
  if (info != 0)
    throw Error(std::string("quantizer: LAPACK ") + routine + " failed (info = " + std::to_string(info) + ")");
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, tr(trans_a), tr(trans_b), blasint(M), blasint(N), blasint(K), 1.0f, A,
              blasint(lda), B, blasint(ldb), 0.0f, C, blasint(ldc));
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
          const double* B, int64_t ldb, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0);
    return;
  }
  cblas_dgemm(CblasRowMajor, tr(trans_a), tr(trans_b), blasint(M), blasint(N), blasint(K), 1.0, A,
              blasint(lda), B, blasint(ldb), 0.0, C, blasint(ldc));
}

void orthonormalize_columns(std::vector<double>& A, int64_t rows, int64_t cols) {
  if (cols == 0) return;
  std::vector<double> tau(static_cast<size_t>(cols));
  check_lapack(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, lapack_int(rows), lapack_int(cols), A.data(),
                              lapack_int(cols), tau.data()),
               "dgeqrf");
  check_lapack(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, lapack_int(rows), lapack_int(cols), lapack_int(cols),
                              A.data(), lapack_int(cols), tau.data()),
               "dorgqr");
}

void svd_thin(const std::vector<double>& A, int64_t rows, int64_t cols, std::vector<double>& U,
              std::vector<double>& S, std::vector<double>& Vt) {
  const int64_t p = std::min(rows, cols);
  std::vector<double> a = A;  // dgesdd destroys its input
  U.assign(size_t(rows * p), 0.0);
  S.assign(size_t(p), 0.0);
  Vt.assign(size_t(p * cols), 0.0);
  check_lapack(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', lapack_int(rows), lapack_int(cols), a.data(),
                              lapack_int(cols), S.data(), U.data(), lapack_int(p), Vt.data(),
                              lapack_int(cols)),
               "dgesdd");
}

void svd_thin(const std::vector<float>& A, int64_t rows, int64_t cols, std::vector<float>& U,
              std::vector<float>& S, std::vector<float>& Vt) {
  const int64_t p = std::min(rows, cols);
  std::vector<float> a = A;
  U.assign(size_t(rows * p), 0.0f);
  S.assign(size_t(p), 0.0f);
  Vt.assign(size_t(p * cols), 0.0f);
  check_lapack(LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', lapack_int(rows), lapack_int(cols), a.data(),
                              lapack_int(cols), S.data(), U.data(), lapack_int(p), Vt.data(),
                              lapack_int(cols)),
               "sgesdd");
}

}  // namespace svdquant::quant
