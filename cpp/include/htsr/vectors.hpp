// Eigenvectors of X = W^T W (over the smaller side) for eigenvector-localization metrics:
// one float64 SYRK and one symmetric eigensolver call (?syevd, jobz = 'V') per matrix.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "htsr/spectrum.hpp"

namespace htsr {

struct Eigensystem {
    std::vector<double> values;   ///< M eigenvalues, ascending (negative rounding clipped to 0)
    std::vector<double> vectors;  ///< M x M column-major: column j is the unit eigenvector of values[j]
    int64_t M = 0, N = 0;
    bool right = true;            ///< true: vectors are right singular vectors of W (rows >= cols), else left
};

/// The eigensystem of the float64 Gram matrix of W over its smaller side.
Eigensystem gram_eigensystem(const MatrixView& w);

/// gram_eigensystem() of many matrices, OpenMP across matrices (one BLAS thread each).
std::vector<Eigensystem> gram_eigensystem_batch(const std::vector<MatrixView>& ws, int threads,
                                                const std::atomic<bool>* cancel = nullptr);

}  // namespace htsr
