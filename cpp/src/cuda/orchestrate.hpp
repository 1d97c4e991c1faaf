// The CUDA backend's orchestration, generic over its kernels (CudaKernels on a GPU, CpuKernels
// in tests): matrices grouped by shape, each group in chunks that fit the kernels' memory
// budget; per chunk the Grams are formed into one buffer, then the eigenvalues come from the
// batched solver (n <= kBatchedMaxN and more than one matrix) or one ?syevd per matrix.
#pragma once
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../matrix_io.hpp"
#include "htsr/spectrum.hpp"

namespace htsr::cuda_detail {

/// syevjBatched is the fast choice up to n = 32 (PyTorch PR #53040; spectral_methods.md §4).
constexpr int64_t kBatchedMaxN = 32;

/// Kernels<T> provides: int64_t max_batch(int64_t n, int64_t depth); void begin(int64_t n,
/// int64_t count); void gram(const MatrixView&, int64_t slot); void eig_batched(std::vector<T>&
/// values); void eig(int64_t slot, T* values). `values` hold n per matrix, ascending.
template <class T, class Kernels>
std::vector<Spectrum> orchestrate(const std::vector<MatrixView>& ws, bool normalize, Kernels& k,
                                  std::vector<std::string>* solvers) {
    std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> groups;
    for (size_t i = 0; i < ws.size(); ++i) groups[{ws[i].rows, ws[i].cols}].push_back(i);
    std::vector<Spectrum> out(ws.size());
    if (solvers) solvers->assign(ws.size(), "");
    for (const auto& [shape, members] : groups) {
        const int64_t n = std::min(shape.first, shape.second), depth = std::max(shape.first, shape.second);
        const int64_t chunk = std::max<int64_t>(1, k.max_batch(n, depth));
        for (size_t c0 = 0; c0 < members.size(); c0 += size_t(chunk)) {
            const size_t c1 = std::min(members.size(), c0 + size_t(chunk));
            const int64_t count = int64_t(c1 - c0);
            k.begin(n, count);
            for (size_t j = c0; j < c1; ++j) k.gram(ws[members[j]], int64_t(j - c0));
            std::vector<T> values(size_t(n * count));
            const bool batched = n <= kBatchedMaxN && count > 1;
            if (batched) k.eig_batched(values);
            else for (int64_t j = 0; j < count; ++j) k.eig(j, values.data() + j * n);
            for (size_t j = c0; j < c1; ++j) {
                const MatrixView& w = ws[members[j]];
                Spectrum& s = out[members[j]];
                s.N = w.N();
                s.M = w.M();
                const double scale = normalize ? 1.0 / double(s.N) : 1.0;
                const T* v = values.data() + int64_t(j - c0) * n;
                s.eigenvalues.resize(size_t(n));
                for (int64_t i = 0; i < n; ++i) {
                    if (!std::isfinite(double(v[i]))) throw std::overflow_error("eigenvalues overflow; use precision='float64'");
                    s.eigenvalues[size_t(i)] = std::max(double(v[i]), 0.0) * scale;
                }
                std::sort(s.eigenvalues.begin(), s.eigenvalues.end());
                s.trace = detail::sum_of_squares(w) * scale;
                if (solvers) (*solvers)[members[j]] = batched ? "syevjBatched" : "syevd";
            }
        }
    }
    return out;
}

/// Column-major `a` (n x depth, lda n) whose A A^T is the Gram of w (T, exact conversion).
template <class T>
void gram_operand(const MatrixView& w, T* a) {
    // Row-major rows x cols = column-major cols x rows. Tall W: that is W^T (n x depth).
    // Wide W: column-major cols x rows = depth x n; transpose into n x depth.
    if (w.rows >= w.cols) {
        detail::copy_block(w, 0, w.rows, 0, w.cols, a);
    } else {
        std::vector<T> tmp(size_t(w.rows * w.cols));
        detail::copy_block(w, 0, w.rows, 0, w.cols, tmp.data());  // row-major n x depth
        for (int64_t r = 0; r < w.rows; ++r)
            for (int64_t c = 0; c < w.cols; ++c) a[r + c * w.rows] = tmp[size_t(r * w.cols + c)];
    }
}

}  // namespace htsr::cuda_detail
