#include "htsr/spectrum.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include <Eigen/Core>

#include "htsr/cuda.hpp"
#include "htsr/lapack.hpp"
#include "htsr/randomized.hpp"
#include "htsr/scratch.hpp"
#include "matrix_io.hpp"

namespace htsr {

DType parse_dtype(const std::string& name) {
    if (name == "float32") return DType::F32;
    if (name == "float64") return DType::F64;
    if (name == "bfloat16") return DType::BF16;
    if (name == "float16") return DType::F16;
    throw std::invalid_argument("unknown dtype '" + name + "' (expected float32, float64, bfloat16 or float16)");
}

std::size_t dtype_size(DType t) { return t == DType::F64 ? 8 : t == DType::F32 ? 4 : 2; }

Method parse_method(const std::string& name) {
    if (name == "gram") return Method::Gram;
    if (name == "svd") return Method::SVD;
    if (name == "randomized") return Method::Randomized;
    throw std::invalid_argument("unknown method '" + name + "' (expected gram, svd or randomized)");
}

Precision parse_precision(const std::string& name) {
    if (name == "float32") return Precision::Float32;
    if (name == "float64") return Precision::Float64;
    throw std::invalid_argument("unknown precision '" + name + "' (expected float32 or float64)");
}

void validate(const MatrixView& w) {
    if (w.rows <= 0 || w.cols <= 0)
        throw std::invalid_argument("empty matrix (" + std::to_string(w.rows) + " x " + std::to_string(w.cols) + ")");
    if (!w.data) throw std::invalid_argument("null data pointer");
    if (w.ld < w.cols) throw std::invalid_argument("row stride smaller than the number of columns");
    if (w.M() > 2147483647 / 2 || w.N() > 2147483647)
        throw std::invalid_argument("matrix too large for 32-bit LAPACK indices");
}

namespace detail {

double sum_of_squares(const MatrixView& w) {
    double total = 0;
    for (int64_t r = 0; r < w.rows; ++r) {
        double s[4] = {0, 0, 0, 0};
        int64_t c = 0;
        auto add_row = [&](auto get) {
            for (; c + 4 <= w.cols; c += 4)
                for (int u = 0; u < 4; ++u) { const double v = get(c + u); s[u] += v * v; }
            for (; c < w.cols; ++c) { const double v = get(c); s[0] += v * v; }
        };
        const int64_t base = r * w.ld;
        switch (w.dtype) {
            case DType::F32: { const float* p = static_cast<const float*>(w.data) + base; add_row([p](int64_t i) { return double(p[i]); }); break; }
            case DType::F64: { const double* p = static_cast<const double*>(w.data) + base; add_row([p](int64_t i) { return p[i]; }); break; }
            case DType::BF16: { const uint16_t* p = static_cast<const uint16_t*>(w.data) + base; add_row([p](int64_t i) { return double(bf16_to_float(p[i])); }); break; }
            case DType::F16: { const uint16_t* p = static_cast<const uint16_t*>(w.data) + base; add_row([p](int64_t i) { return double(f16_to_float(p[i])); }); break; }
        }
        const double row = (s[0] + s[1]) + (s[2] + s[3]);
        if (!std::isfinite(row)) {
            for (int64_t c = 0; c < w.cols; ++c)
                if (!std::isfinite(load_element<double>(w.data, w.dtype, w.ld, r, c)))
                    throw std::invalid_argument("matrix contains NaN or Inf (row " + std::to_string(r) + ")");
            throw std::overflow_error("squared entries overflow float64 (row " + std::to_string(r) +
                                      "); rescale the matrix");
        }
        total += row;
    }
    return total;
}

}  // namespace detail

namespace {

/// Final step shared by the exact routes: ascending float64 values, clipped at 0, scaled.
Spectrum finish(const MatrixView& w, std::vector<double> values, double trace, bool normalize) {
    Spectrum out;
    out.N = w.N();
    out.M = w.M();
    const double scale = normalize ? 1.0 / double(out.N) : 1.0;
    for (double& v : values) v = std::max(v, 0.0) * scale;
    std::sort(values.begin(), values.end());
    out.eigenvalues = std::move(values);
    out.trace = trace * scale;
    return out;
}

/// X = W^T W (or W W^T for wide W) by SYRK in precision T, then the values-only eigensolver
/// (lapack::syevd: one-stage below n ~ 1000, else ?sytrd_sy2sb + ?sytrd_sb2st + ?sterf).
/// W is read in place when stored as T; otherwise converted in blocks along the summed
/// dimension and accumulated (beta = 1), so the extra memory is one block, not a copy --
/// except 16-bit W in float32: converted whole and summed by one SYRK, as a float32 W would
/// be, so that its spectrum is bit for bit the one of its exact float32 conversion (blocks
/// sum in another order; float32 has no headroom to hide that).
template <class T>
Spectrum gram_spectrum(const MatrixView& w, bool normalize) {
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
    const bool tall = w.rows >= w.cols;
    const int64_t n = w.M(), depth = w.N();
    detail::ScratchBuffer<T> gram_memory(std::size_t(n) * std::size_t(n));
    Eigen::Map<Matrix> gram(gram_memory.data(), n, n);
    if (detail::stored_as<T>(w)) {
        // Column-major view of row-major W is W^T (cols x rows, lda = ld).
        lapack::syrk(!tall, int(n), int(depth), T(1), static_cast<const T*>(w.data), w.ld, T(0), gram.data(), int(n));
    } else {
        const bool whole = std::is_same_v<T, float> && dtype_size(w.dtype) == 2;
        const int64_t block = whole ? depth : std::min<int64_t>(depth, std::max<int64_t>(256, (int64_t(1) << 22) / n));
        detail::ScratchBuffer<T> buffer_memory(std::size_t(n) * std::size_t(block));
        T* const buffer = buffer_memory.data();
        for (int64_t k0 = 0; k0 < depth; k0 += block) {
            const int64_t kb = std::min(block, depth - k0);
            const T beta = k0 == 0 ? T(0) : T(1);
            if (tall) {  // rows k0..k0+kb: row-major kb x n = column-major n x kb
                detail::copy_block(w, k0, k0 + kb, 0, w.cols, buffer);
                lapack::syrk(false, int(n), int(kb), T(1), buffer, n, beta, gram.data(), int(n));
            } else {     // columns k0..k0+kb: row-major n x kb = column-major kb x n
                detail::copy_block(w, 0, w.rows, k0, k0 + kb, buffer);
                lapack::syrk(true, int(n), int(kb), T(1), buffer, kb, beta, gram.data(), int(n));
            }
        }
    }
    // diag(X)_j = sum_i w_ij^2: NaN/Inf in W or an overflowing Gram shows up here, and its
    // sum is the trace (in precision T), so W is not read a second time.
    if (!gram.diagonal().allFinite()) {
        detail::sum_of_squares(w);  // throws naming the row if W holds NaN/Inf (or its squares overflow)
        throw std::overflow_error(std::is_same_v<T, float>
                                      ? "the float32 Gram matrix overflows (entries above ~1.8e19); use precision='float64'"
                                      : "the float64 Gram matrix overflows; rescale the matrix");
    }
    const double trace = gram.diagonal().template cast<double>().sum();
    Eigen::Matrix<T, Eigen::Dynamic, 1> values(n);
    const int info = lapack::syevd(int(n), gram.data(), int(n), values.data());
    if (info != 0) throw std::runtime_error("?syevd failed (info " + std::to_string(info) + ")");
    if (!values.allFinite())  // lambda_max <= M * max diagonal can overflow when the diagonal does not
        throw std::overflow_error(std::is_same_v<T, float>
                                      ? "eigenvalues overflow float32; use precision='float64'"
                                      : "eigenvalues overflow float64; rescale the matrix");
    return finish(w, std::vector<double>(values.data(), values.data() + n), trace, normalize);
}

/// Singular values of W by values-only ?gesdd in precision T (on a dense copy), squared.
template <class T>
Spectrum svd_spectrum(const MatrixView& w, bool normalize) {
    const double trace = detail::sum_of_squares(w);
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> a(w.cols, w.rows);  // = W^T, column-major
    detail::copy_block(w, 0, w.rows, 0, w.cols, a.data());
    Eigen::Matrix<T, Eigen::Dynamic, 1> s(w.M());
    const int info = lapack::gesdd(int(w.cols), int(w.rows), a.data(), int(w.cols), s.data());
    if (info != 0) throw std::runtime_error("?gesdd failed (info " + std::to_string(info) + ")");
    const Eigen::VectorXd squared = s.template cast<double>().array().square();
    return finish(w, std::vector<double>(squared.data(), squared.data() + squared.size()), trace, normalize);
}

}  // namespace

Spectrum spectrum(const MatrixView& w, const SpectrumOptions& options) {
    validate(w);
    const bool f64 = options.precision == Precision::Float64;
    switch (options.method) {
        case Method::Gram: return f64 ? gram_spectrum<double>(w, options.normalize) : gram_spectrum<float>(w, options.normalize);
        case Method::SVD: return f64 ? svd_spectrum<double>(w, options.normalize) : svd_spectrum<float>(w, options.normalize);
        case Method::Randomized: return randomized_spectrum(w, options);
    }
    throw std::invalid_argument("unknown method");
}

}  // namespace htsr

#include "htsr/batch.hpp"

namespace htsr {

std::vector<Spectrum> spectrum_batch(const std::vector<MatrixView>& ws, const SpectrumOptions& options, int threads,
                                     const std::atomic<bool>* cancel) {
    if (options.method == Method::Gram && cuda_available()) return cuda_spectrum_batch(ws, options);  // GPU visible
    std::vector<double> cost(ws.size());
    for (size_t i = 0; i < ws.size(); ++i) cost[i] = double(ws[i].N()) * double(ws[i].M()) * double(ws[i].M());
    std::vector<Spectrum> out(ws.size());
    // float64: one BLAS thread per matrix always, so results do not depend on the thread count
    // (threaded ?symv/?syr2k in the tridiagonal reduction sum in another order); float32 gives
    // a lone matrix the spare threads (its results then move within float32 rounding).
    const bool spare_to_blas = options.precision == Precision::Float32;
    parallel_for(int64_t(ws.size()), cost, threads, cancel, [&](int64_t i) { out[i] = spectrum(ws[i], options); }, "matrix",
                 spare_to_blas);
    return out;
}

}  // namespace htsr
