// Dense linear algebra used by the quantizer, on OpenBLAS/LAPACKE. Row-major matrices throughout.
// OpenBLAS splits GEMMs over output blocks, never over the reduction dimension, so the results are
// run-to-run identical (no atomics).
#pragma once
#include <cstdint>
#include <vector>

namespace svdquant::quant {

// C[M, N] = op(A) * op(B); op(X) = X or X^T. lda/ldb/ldc are row strides of the stored matrices.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
          const double* B, int64_t ldb, double* C, int64_t ldc);

// Replaces the columns of A [rows, cols] (rows >= cols) by an orthonormal basis of their span
// (Householder QR, LAPACK dgeqrf + dorgqr).
void orthonormalize_columns(std::vector<double>& A, int64_t rows, int64_t cols);

// Thin SVD A [rows, cols] = U diag(S) Vt, singular values descending. U [rows, p], S [p],
// Vt [p, cols], p = min(rows, cols). LAPACK divide and conquer (dgesdd / sgesdd).
void svd_thin(const std::vector<double>& A, int64_t rows, int64_t cols, std::vector<double>& U,
              std::vector<double>& S, std::vector<double>& Vt);
void svd_thin(const std::vector<float>& A, int64_t rows, int64_t cols, std::vector<float>& U,
              std::vector<float>& S, std::vector<float>& Vt);

}  // namespace svdquant::quant
