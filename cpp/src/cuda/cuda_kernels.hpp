// cuBLAS / cuSOLVER kernels of the CUDA backend (compiled only with HTSR_HAVE_CUDA):
// ?syrk forms the Grams of a chunk in one device buffer, ?syevd (values only) solves one
// matrix, ?syevjBatched (values only) solves a chunk of small ones in one call.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "orchestrate.hpp"

namespace htsr::cuda_detail {

inline void check_cuda(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
inline void check_cublas(cublasStatus_t s, const char* what) {
    if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + " failed (cuBLAS status " + std::to_string(int(s)) + ")");
}
inline void check_cusolver(cusolverStatus_t s, const char* what) {
    if (s != CUSOLVER_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + " failed (cuSOLVER status " + std::to_string(int(s)) + ")");
}

/// Device memory owned by one object.
template <class T>
struct DeviceBuffer {
    T* ptr = nullptr;
    size_t size = 0;
    void resize(size_t n) {
        if (n <= size) return;
        if (ptr) cudaFree(ptr);
        ptr = nullptr;
        size = 0;
        check_cuda(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)), "cudaMalloc");
        size = n;
    }
    ~DeviceBuffer() { if (ptr) cudaFree(ptr); }
};

// Typed overloads.
inline cublasStatus_t syrk(cublasHandle_t h, int n, int k, const float* a, int lda, float* c, int ldc) {
    const float one = 1, zero = 0;
    return cublasSsyrk(h, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, a, lda, &zero, c, ldc);
}
inline cublasStatus_t syrk(cublasHandle_t h, int n, int k, const double* a, int lda, double* c, int ldc) {
    const double one = 1, zero = 0;
    return cublasDsyrk(h, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, a, lda, &zero, c, ldc);
}
inline cusolverStatus_t syevd_size(cusolverDnHandle_t h, int n, const float* a, const float* w, int* lwork) {
    return cusolverDnSsyevd_bufferSize(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lwork);
}
inline cusolverStatus_t syevd_size(cusolverDnHandle_t h, int n, const double* a, const double* w, int* lwork) {
    return cusolverDnDsyevd_bufferSize(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lwork);
}
inline cusolverStatus_t syevd(cusolverDnHandle_t h, int n, float* a, float* w, float* work, int lwork, int* info) {
    return cusolverDnSsyevd(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, work, lwork, info);
}
inline cusolverStatus_t syevd(cusolverDnHandle_t h, int n, double* a, double* w, double* work, int lwork, int* info) {
    return cusolverDnDsyevd(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, work, lwork, info);
}
inline cusolverStatus_t syevj_batched_size(cusolverDnHandle_t h, int n, const float* a, const float* w, int* lwork,
                                           syevjInfo_t p, int batch) {
    return cusolverDnSsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lwork, p, batch);
}
inline cusolverStatus_t syevj_batched_size(cusolverDnHandle_t h, int n, const double* a, const double* w, int* lwork,
                                           syevjInfo_t p, int batch) {
    return cusolverDnDsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lwork, p, batch);
}
inline cusolverStatus_t syevj_batched(cusolverDnHandle_t h, int n, float* a, float* w, float* work, int lwork, int* info,
                                      syevjInfo_t p, int batch) {
    return cusolverDnSsyevjBatched(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, work, lwork, info, p, batch);
}
inline cusolverStatus_t syevj_batched(cusolverDnHandle_t h, int n, double* a, double* w, double* work, int lwork, int* info,
                                      syevjInfo_t p, int batch) {
    return cusolverDnDsyevjBatched(h, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, work, lwork, info, p, batch);
}

/// The GPU kernels for orchestrate<T>: matrices are converted to T on the host (exactly) and
/// copied; a chunk's Grams and operands take at most a quarter of the free device memory.
template <class T>
class CudaKernels {
  public:
    CudaKernels() {
        check_cublas(cublasCreate(&blas_), "cublasCreate");
        check_cusolver(cusolverDnCreate(&solver_), "cusolverDnCreate");
    }
    ~CudaKernels() {
        cusolverDnDestroy(solver_);
        cublasDestroy(blas_);
    }
    CudaKernels(const CudaKernels&) = delete;
    CudaKernels& operator=(const CudaKernels&) = delete;

    int64_t max_batch(int64_t n, int64_t depth) const {
        size_t free_bytes = 0, total = 0;
        check_cuda(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
        const int64_t per = (n * n + n) * int64_t(sizeof(T));
        return (int64_t(free_bytes / 4) - n * depth * int64_t(sizeof(T))) / per;
    }
    void begin(int64_t n, int64_t count) {
        n_ = n;
        count_ = count;
        grams_.resize(size_t(n * n * count));
    }
    void gram(const MatrixView& w, int64_t slot) {
        const int64_t depth = w.N();
        host_.resize(size_t(n_ * depth));
        gram_operand(w, host_.data());
        operand_.resize(host_.size());
        check_cuda(cudaMemcpy(operand_.ptr, host_.data(), host_.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
        check_cublas(syrk(blas_, int(n_), int(depth), operand_.ptr, int(n_), grams_.ptr + slot * n_ * n_, int(n_)), "cublas?syrk");
    }
    void eig(int64_t slot, T* values) {
        values_.resize(size_t(n_));
        int lwork = 0;
        check_cusolver(syevd_size(solver_, int(n_), grams_.ptr, values_.ptr, &lwork), "cusolverDn?syevd_bufferSize");
        work_.resize(size_t(lwork));
        info_.resize(1);
        check_cusolver(syevd(solver_, int(n_), grams_.ptr + slot * n_ * n_, values_.ptr, work_.ptr, lwork, info_.ptr),
                       "cusolverDn?syevd");
        fetch(values, size_t(n_), 1, "?syevd");
    }
    void eig_batched(std::vector<T>& values) {
        values_.resize(size_t(n_ * count_));
        syevjInfo_t params = nullptr;
        check_cusolver(cusolverDnCreateSyevjInfo(&params), "cusolverDnCreateSyevjInfo");
        int lwork = 0;
        cusolverStatus_t s = syevj_batched_size(solver_, int(n_), grams_.ptr, values_.ptr, &lwork, params, int(count_));
        if (s == CUSOLVER_STATUS_SUCCESS) {
            work_.resize(size_t(lwork));
            info_.resize(size_t(count_));
            s = syevj_batched(solver_, int(n_), grams_.ptr, values_.ptr, work_.ptr, lwork, info_.ptr, params, int(count_));
        }
        cusolverDnDestroySyevjInfo(params);
        check_cusolver(s, "cusolverDn?syevjBatched");
        fetch(values.data(), size_t(n_ * count_), size_t(count_), "?syevjBatched");
    }

  private:
    void fetch(T* values, size_t n_values, size_t n_info, const char* what) {
        check_cuda(cudaMemcpy(values, values_.ptr, n_values * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
        std::vector<int> info(n_info);
        check_cuda(cudaMemcpy(info.data(), info_.ptr, n_info * sizeof(int), cudaMemcpyDeviceToHost), "cudaMemcpy");
        for (size_t i = 0; i < n_info; ++i)
            if (info[i] != 0)
                throw std::runtime_error(std::string(what) + " failed or did not converge (info " + std::to_string(info[i]) + ")");
    }
    cublasHandle_t blas_ = nullptr;
    cusolverDnHandle_t solver_ = nullptr;
    int64_t n_ = 0, count_ = 0;
    std::vector<T> host_;
    DeviceBuffer<T> grams_, operand_, values_, work_;
    DeviceBuffer<int> info_;
};

}  // namespace htsr::cuda_detail
