#include "htsr/vectors.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "htsr/batch.hpp"
#include "htsr/lapack.hpp"
#include "matrix_io.hpp"

namespace htsr {

Eigensystem gram_eigensystem(const MatrixView& w) {
    validate(w);
    const bool tall = w.rows >= w.cols;
    const int64_t n = w.M(), depth = w.N();
    std::vector<double> a(size_t(w.rows * w.cols));
    detail::copy_block(w, 0, w.rows, 0, w.cols, a.data());  // row-major, ld = cols
    Eigensystem out;
    out.M = n;
    out.N = depth;
    out.right = tall;
    out.vectors.assign(size_t(n * n), 0.0);
    // Column-major view of row-major W is W^T (cols x rows): trans -> W^T W, no trans -> W W^T.
    lapack::syrk(!tall, int(n), int(depth), 1.0, a.data(), w.cols, 0.0, out.vectors.data(), int(n));
    for (int64_t j = 0; j < n; ++j)
        if (!std::isfinite(out.vectors[size_t(j * n + j)]))
            throw std::invalid_argument("matrix contains NaN or Inf, or its float64 Gram overflows");
    out.values.resize(size_t(n));
    const int info = lapack::syevd_vectors(int(n), out.vectors.data(), int(n), out.values.data());
    if (info != 0) throw std::runtime_error("dsyevd failed (info " + std::to_string(info) + ")");
    for (double& v : out.values) v = std::max(v, 0.0);
    return out;
}

std::vector<Eigensystem> gram_eigensystem_batch(const std::vector<MatrixView>& ws, int threads,
                                                const std::atomic<bool>* cancel) {
    std::vector<double> cost(ws.size());
    for (size_t i = 0; i < ws.size(); ++i) cost[i] = double(ws[i].N()) * double(ws[i].M()) * double(ws[i].M());
    std::vector<Eigensystem> out(ws.size());
    parallel_for(int64_t(ws.size()), cost, threads, cancel, [&](int64_t i) { out[i] = gram_eigensystem(ws[i]); },
                 "matrix");
    return out;
}

}  // namespace htsr
