// CPU stand-ins of the CUDA kernels (OpenBLAS ?syrk, LAPACK ?syevd also for the batched solver),
// so the CUDA backend's orchestration runs and is tested on machines without a GPU.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

#include "htsr/lapack.hpp"
#include "orchestrate.hpp"

namespace htsr::cuda_detail {

template <class T>
class CpuKernels {
  public:
    explicit CpuKernels(int64_t budget_bytes) : budget_(budget_bytes) {}
    int64_t max_batch(int64_t n, int64_t) const { return budget_ / std::max<int64_t>(1, n * n * int64_t(sizeof(T))); }
    void begin(int64_t n, int64_t count) {
        n_ = n;
        count_ = count;
        grams_.assign(size_t(n * n * count), T(0));
    }
    void gram(const MatrixView& w, int64_t slot) {
        const int64_t depth = w.N();
        std::vector<T> a(size_t(n_ * depth));
        gram_operand(w, a.data());
        lapack::syrk(false, int(n_), int(depth), T(1), a.data(), n_, T(0), grams_.data() + slot * n_ * n_, int(n_));
    }
    void eig(int64_t slot, T* values) {
        const int info = lapack::syevd(int(n_), grams_.data() + slot * n_ * n_, int(n_), values);
        if (info != 0) throw std::runtime_error("?syevd failed (info " + std::to_string(info) + ")");
    }
    void eig_batched(std::vector<T>& values) {
        for (int64_t j = 0; j < count_; ++j) eig(j, values.data() + j * n_);
    }

  private:
    int64_t budget_, n_ = 0, count_ = 0;
    std::vector<T> grams_;
};

}  // namespace htsr::cuda_detail
