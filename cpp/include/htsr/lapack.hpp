// Typed wrappers over the BLAS/LAPACK routines htsr uses, taken from the PyPI package
// scipy-openblas32 (every exported symbol carries the prefix `scipy_`). One overload per
// precision so the kernels can be written once as templates.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

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

// The two stages of LAPACK's ?syevd_2stage (jobz = 'N'), called directly so that htsr picks
// the band width: Fortran symbols of scipy-openblas32 (not in its lapack.h), trailing
// arguments the lengths of the character arguments (gfortran ABI).
extern "C" {
void scipy_ssytrd_sy2sb_(const char* uplo, const int* n, const int* kd, float* a, const int* lda, float* ab,
                         const int* ldab, float* tau, float* work, const int* lwork, int* info, std::size_t);
void scipy_dsytrd_sy2sb_(const char* uplo, const int* n, const int* kd, double* a, const int* lda, double* ab,
                         const int* ldab, double* tau, double* work, const int* lwork, int* info, std::size_t);
void scipy_ssytrd_sb2st_(const char* stage1, const char* vect, const char* uplo, const int* n, const int* kd,
                         float* ab, const int* ldab, float* d, float* e, float* hous, const int* lhous, float* work,
                         const int* lwork, int* info, std::size_t, std::size_t, std::size_t);
void scipy_dsytrd_sb2st_(const char* stage1, const char* vect, const char* uplo, const int* n, const int* kd,
                         double* ab, const int* ldab, double* d, double* e, double* hous, const int* lhous, double* work,
                         const int* lwork, int* info, std::size_t, std::size_t, std::size_t);
void scipy_ssterf_(const int* n, float* d, float* e, int* info);
void scipy_dsterf_(const int* n, double* d, double* e, int* info);
}

namespace detail {
inline void sy2sb(int n, int kd, float* a, int lda, float* ab, int ldab, float* tau, float* work, int lwork, int* info) {
    scipy_ssytrd_sy2sb_("L", &n, &kd, a, &lda, ab, &ldab, tau, work, &lwork, info, 1);
}
inline void sy2sb(int n, int kd, double* a, int lda, double* ab, int ldab, double* tau, double* work, int lwork, int* info) {
    scipy_dsytrd_sy2sb_("L", &n, &kd, a, &lda, ab, &ldab, tau, work, &lwork, info, 1);
}
inline void sb2st(int n, int kd, float* ab, int ldab, float* d, float* e, float* hous, int lhous, float* work, int lwork, int* info) {
    scipy_ssytrd_sb2st_("Y", "N", "L", &n, &kd, ab, &ldab, d, e, hous, &lhous, work, &lwork, info, 1, 1, 1);
}
inline void sb2st(int n, int kd, double* ab, int ldab, double* d, double* e, double* hous, int lhous, double* work, int lwork, int* info) {
    scipy_dsytrd_sb2st_("Y", "N", "L", &n, &kd, ab, &ldab, d, e, hous, &lhous, work, &lwork, info, 1, 1, 1);
}
inline void sterf(int n, float* d, float* e, int* info) { scipy_ssterf_(&n, d, e, info); }
inline void sterf(int n, double* d, double* e, int* info) { scipy_dsterf_(&n, d, e, info); }
}  // namespace detail

/// Band width of the first stage. LAPACK's ilaenv2stage picks 32; 64 is faster from n ~ 3000
/// with scipy-openblas32 0.3.34 on one thread (n = 4096, values only, AMD Zen 5: float32
/// 1.12 s vs 1.20 s, float64 1.92 vs 2.06 s with AVX-512 kernels, 2.54 vs 2.74 s with AVX2;
/// the first stage's SYMM packing shrinks and the bulge chasing grows with it; n = 2048: even).
inline int two_stage_band(int n) { return n >= 3072 ? 64 : 32; }

/// Eigenvalues only, ascending, of the symmetric matrix whose lower triangle is in `a`
/// (destroyed): ?sytrd_sy2sb (dense -> band kd), ?sytrd_sb2st (band -> tridiagonal),
/// ?sterf (tridiagonal QR, values only) - what ?syevd_2stage(jobz = 'N') does, minus the
/// LAPACKE NaN scan (callers check the Gram's diagonal: |x_ij| <= sqrt(x_ii x_jj) for a Gram).
template <class T>
int syevd_two_stage(int n, T* a, int lda, T* w) {
    const int kd = std::min(two_stage_band(n), std::max(n - 1, 1)), ldab = kd + 1;
    int info = 0, lwork1 = -1, lhous = -1, lwork2 = -1;
    T query1 = 0, query_hous = 0, query2 = 0;
    std::vector<T> ab(std::size_t(ldab) * n), tau(std::max(n - kd, 1)), e(std::max(n - 1, 1));
    detail::sy2sb(n, kd, a, lda, ab.data(), ldab, tau.data(), &query1, lwork1, &info);
    if (info) return info;
    detail::sb2st(n, kd, ab.data(), ldab, w, e.data(), &query_hous, lhous, &query2, lwork2, &info);
    if (info) return info;
    lwork1 = std::max(1, int(query1));
    lhous = std::max(1, int(query_hous));
    lwork2 = std::max(1, int(query2));
    std::vector<T> work(std::max(lwork1, lwork2)), hous(lhous);
    detail::sy2sb(n, kd, a, lda, ab.data(), ldab, tau.data(), work.data(), lwork1, &info);
    if (info) return info;
    detail::sb2st(n, kd, ab.data(), ldab, w, e.data(), hous.data(), lhous, work.data(), lwork2, &info);
    if (info) return info;
    detail::sterf(n, w, e.data(), &info);
    return info;
}

// Eigenvalues only (ascending) of a symmetric matrix whose lower triangle is stored in `a`.
// Large n: two-stage tridiagonal reduction, 1.5x faster than one-stage ?syevd in OpenBLAS at
// 4096 (shared/reference/spectral_methods.md §2.3). Small n: one-stage, whose lower overhead
// wins below n ~ 1280 (float32) / ~ 900 (float64) with scipy-openblas32 0.3.34 (measured by
// benchmarks/bench_eigenvalues.py: n = 768 float32, one-stage 15.9 ms vs two-stage 22.9 ms).
constexpr int kTwoStageMinNFloat = 1280, kTwoStageMinNDouble = 896;
inline int syevd(int n, float* a, int lda, float* w) {
    return n < kTwoStageMinNFloat ? scipy_LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'N', 'L', n, a, lda, w)
                                  : syevd_two_stage(n, a, lda, w);
}
inline int syevd(int n, double* a, int lda, double* w) {
    return n < kTwoStageMinNDouble ? scipy_LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'L', n, a, lda, w)
                                   : syevd_two_stage(n, a, lda, w);
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
