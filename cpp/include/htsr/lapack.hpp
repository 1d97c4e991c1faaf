// Typed wrappers over the BLAS/LAPACK routines htsr uses, taken from the PyPI package
// scipy-openblas32 (every exported symbol carries the prefix `scipy_`). One overload per
// precision so the kernels can be written once as templates.
#pragma once
#include <cstdint>
#include <mutex>

#include <cblas.h>
#include <lapacke.h>

namespace htsr::lapack {

/// Threads OpenBLAS uses for one call (global setting of the library).
inline int blas_threads() { return scipy_openblas_get_num_threads(); }
inline void set_blas_threads(int n) { scipy_openblas_set_num_threads(n < 1 ? 1 : n); }

/// Sets the OpenBLAS thread count for the lifetime of the guard. The count is one setting of
/// the whole library, so guards alive at the same time (native calls from several threads)
/// share it: one guard alone gets its request; while several are alive BLAS runs one thread
/// per call (each caller already runs its own threads, and no guard may change the count
/// under another's BLAS call, which would oversubscribe the cores and make float32 results
/// depend on timing). The count in force before the first guard is restored after the last.
class BlasThreads {
  public:
    explicit BlasThreads(int n) {
        State& s = state();
        std::lock_guard<std::mutex> lock(s.mutex);
        if (s.active++ == 0) {
            s.saved = blas_threads();
            set_blas_threads(n);
        } else {
            set_blas_threads(1);
        }
    }
    ~BlasThreads() {
        State& s = state();
        std::lock_guard<std::mutex> lock(s.mutex);
        if (--s.active == 0) set_blas_threads(s.saved);
    }
    BlasThreads(const BlasThreads&) = delete;
    BlasThreads& operator=(const BlasThreads&) = delete;

  private:
    struct State {
        std::mutex mutex;
        int active = 0;
        int saved = 1;
    };
    static State& state() {
        static State s;
        return s;
    }
};

// C := alpha * op(A) op(A)^T + beta * C (column-major, lower triangle).
inline void syrk(bool trans, int n, int k, float alpha, const float* a, int64_t lda, float beta, float* c, int ldc) {
    scipy_cblas_ssyrk(CblasColMajor, CblasLower, trans ? CblasTrans : CblasNoTrans, n, k, alpha, a, (int)lda, beta, c, ldc);
}
inline void syrk(bool trans, int n, int k, double alpha, const double* a, int64_t lda, double beta, double* c, int ldc) {
    scipy_cblas_dsyrk(CblasColMajor, CblasLower, trans ? CblasTrans : CblasNoTrans, n, k, alpha, a, (int)lda, beta, c, ldc);
}

// C := op(A) op(B) (column-major).
inline void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int ldc) {
    scipy_cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, (int)lda, b,
                      (int)ldb, 0.0f, c, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, const double* a, int64_t lda, const double* b, int64_t ldb, double* c, int ldc) {
    scipy_cblas_dgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0, a, (int)lda, b,
                      (int)ldb, 0.0, c, ldc);
}

// Eigenvalues only (ascending) of a symmetric matrix whose lower triangle is stored in `a`.
// Large n: two-stage tridiagonal reduction, 1.5x faster than one-stage ?syevd in OpenBLAS at
// 4096 (shared/reference/spectral_methods.md §2.3). Small n: one-stage, whose lower overhead
// wins below n ~ 1280 (float32) / ~ 900 (float64) with scipy-openblas32 0.3.34 (measured by
// benchmarks/bench_eigenvalues.py: n = 768 float32, one-stage 15.9 ms vs two-stage 22.9 ms).
constexpr int kTwoStageMinNFloat = 1280, kTwoStageMinNDouble = 896;
inline int syevd(int n, float* a, int lda, float* w) {
    return n < kTwoStageMinNFloat ? scipy_LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'N', 'L', n, a, lda, w)
                                  : scipy_LAPACKE_ssyevd_2stage(LAPACK_COL_MAJOR, 'N', 'L', n, a, lda, w);
}
inline int syevd(int n, double* a, int lda, double* w) {
    return n < kTwoStageMinNDouble ? scipy_LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'L', n, a, lda, w)
                                   : scipy_LAPACKE_dsyevd_2stage(LAPACK_COL_MAJOR, 'N', 'L', n, a, lda, w);
}

// Eigenvalues (ascending) and orthonormal eigenvectors (overwriting `a`, column j for value j)
// of a symmetric matrix whose lower triangle is stored in `a` (one-stage ?syevd, jobz = 'V').
inline int syevd_vectors(int n, double* a, int lda, double* w) {
    return scipy_LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', n, a, lda, w);
}

// Singular values only (descending) of a column-major m x n matrix (destroyed). Returns info.
inline int gesdd(int m, int n, float* a, int lda, float* s) {
    float dummy = 0;
    return scipy_LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'N', m, n, a, lda, s, &dummy, 1, &dummy, 1);
}
inline int gesdd(int m, int n, double* a, int lda, double* s) {
    double dummy = 0;
    return scipy_LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', m, n, a, lda, s, &dummy, 1, &dummy, 1);
}

// Thin SVD with vectors of a column-major m x n matrix (m <= n, destroyed): s (m, descending),
// u (m x m, ldu), vt (m x n, ldvt). Returns info.
inline int gesdd_vectors(int m, int n, float* a, int lda, float* s, float* u, int ldu, float* vt, int ldvt) {
    return scipy_LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', m, n, a, lda, s, u, ldu, vt, ldvt);
}
inline int gesdd_vectors(int m, int n, double* a, int lda, double* s, double* u, int ldu, double* vt, int ldvt) {
    return scipy_LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', m, n, a, lda, s, u, ldu, vt, ldvt);
}

// Thin QR: overwrite the column-major m x n matrix `a` (m >= n) with the orthonormal factor Q.
inline int orthonormalize(int m, int n, float* a, int lda, float* tau) {
    int info = scipy_LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau);
    return info ? info : scipy_LAPACKE_sorgqr(LAPACK_COL_MAJOR, m, n, n, a, lda, tau);
}
inline int orthonormalize(int m, int n, double* a, int lda, double* tau) {
    int info = scipy_LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau);
    return info ? info : scipy_LAPACKE_dorgqr(LAPACK_COL_MAJOR, m, n, n, a, lda, tau);
}

}  // namespace htsr::lapack
