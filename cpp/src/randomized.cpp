#include "htsr/randomized.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include <Eigen/Core>

#include "htsr/lapack.hpp"
#include "matrix_io.hpp"

namespace htsr {

namespace {

void check(int info, const char* what) {
    if (info != 0) throw std::runtime_error(std::string(what) + " failed (info " + std::to_string(info) + ")");
}

template <class T>
Spectrum randomized_spectrum_t(const MatrixView& w, const SpectrumOptions& o) {
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
    const int64_t M = w.M();
    const double trace = detail::sum_of_squares(w);

    // B = W^T as a column-major p x q matrix (the row-major input read in place, or a
    // converted dense copy). Its singular values are those of W.
    Matrix copy;
    const T* b = static_cast<const T*>(w.data);
    int64_t ldb = w.ld;
    if (!detail::stored_as<T>(w)) {
        copy.resize(w.cols, w.rows);
        detail::copy_block(w, 0, w.rows, 0, w.cols, copy.data());
        b = copy.data();
        ldb = w.cols;
    }
    const int p = int(w.cols), q = int(w.rows);
    const int l = int(std::min<int64_t>(o.k + std::max<int64_t>(o.oversample, 0), M));

    std::mt19937_64 rng(o.seed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    Matrix omega = Matrix::NullaryExpr(q, l, [&] { return T(gauss(rng)); });
    Matrix y(p, l), z(q, l), c(l, q);
    Eigen::Matrix<T, Eigen::Dynamic, 1> tau(l), s(l);

    lapack::gemm(false, false, p, l, q, b, ldb, omega.data(), q, y.data(), p);          // Y = B Omega
    for (int it = 0; it < o.power_iters; ++it) {
        check(lapack::orthonormalize(p, l, y.data(), p, tau.data()), "?geqrf/?orgqr");
        lapack::gemm(true, false, q, l, p, b, ldb, y.data(), p, z.data(), q);           // Z = B^T Q
        check(lapack::orthonormalize(q, l, z.data(), q, tau.data()), "?geqrf/?orgqr");
        lapack::gemm(false, false, p, l, q, b, ldb, z.data(), q, y.data(), p);          // Y = B Z
    }
    check(lapack::orthonormalize(p, l, y.data(), p, tau.data()), "?geqrf/?orgqr");      // Q
    lapack::gemm(true, false, l, q, p, y.data(), p, b, ldb, c.data(), l);               // C = Q^T B (l x q)
    check(lapack::gesdd(l, q, c.data(), l, s.data()), "?gesdd");

    Spectrum out;
    out.N = w.N();
    out.M = M;
    out.complete = false;
    const double scale = o.normalize ? 1.0 / double(out.N) : 1.0;
    out.eigenvalues.resize(o.k);
    for (int64_t i = 0; i < o.k; ++i) out.eigenvalues[o.k - 1 - i] = double(s[i]) * double(s[i]) * scale;
    out.trace = trace * scale;
    return out;
}

}  // namespace

Spectrum randomized_spectrum(const MatrixView& w, const SpectrumOptions& o) {
    validate(w);
    if (o.k <= 0 || o.k > w.M())
        throw std::invalid_argument("randomized method needs 1 <= k <= M = " + std::to_string(w.M()) + " (got k = " +
                                    std::to_string(o.k) + ")");
    if (o.power_iters < 0) throw std::invalid_argument("power_iters must be >= 0");
    return o.precision == Precision::Float64 ? randomized_spectrum_t<double>(w, o) : randomized_spectrum_t<float>(w, o);
}

}  // namespace htsr
