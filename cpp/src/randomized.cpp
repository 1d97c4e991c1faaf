#include "htsr/randomized.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>

#include <Eigen/Core>

#include "htsr/lapack.hpp"
#include "htsr/powerlaw.hpp"
#include "matrix_io.hpp"

namespace htsr {

namespace {

void check(int info, const char* what) {
    if (info != 0) throw std::runtime_error(std::string(what) + " failed (info " + std::to_string(info) + ")");
}

/// Power of two s with ||s W||_F in a range where every product of the sketch is finite in T
/// (1 when ||W||_F is already there, so the input is read in place). The values scale by s^2.
template <class T>
double safe_scale(double trace) {
    const int limit = std::is_same_v<T, float> ? 40 : 400;  // |log2 ||W||_F| allowed unscaled
    if (!(trace > 0)) return 1.0;
    const int e = std::ilogb(std::sqrt(trace));
    return std::abs(e) <= limit ? 1.0 : std::ldexp(1.0, -e);
}

/// Top-l Ritz values of A = B B^T (B = W^T or W, p x q col-major) with error bounds, descending,
/// in the units of the (scaled) matrix read. See randomized.hpp for the algorithm and the bound.
template <class T>
void sketch(const T* b, int64_t ldb, int p, int q, int l, int iters, uint64_t seed, std::vector<double>& theta,
            std::vector<double>& err) {
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    Matrix omega = Matrix::NullaryExpr(q, l, [&] { return T(gauss(rng)); });
    Matrix y(p, l), z(q, l), c(l, q);
    Eigen::Matrix<T, Eigen::Dynamic, 1> tau(l), s(l);

    lapack::gemm(false, false, p, l, q, b, ldb, omega.data(), q, y.data(), p);          // Y = B Omega
    for (int it = 0; it < iters; ++it) {
        check(lapack::orthonormalize(p, l, y.data(), p, tau.data()), "?geqrf/?orgqr");
        lapack::gemm(true, false, q, l, p, b, ldb, y.data(), p, z.data(), q);           // Z = B^T Q
        check(lapack::orthonormalize(q, l, z.data(), q, tau.data()), "?geqrf/?orgqr");
        lapack::gemm(false, false, p, l, q, b, ldb, z.data(), q, y.data(), p);          // Y = B Z
    }
    check(lapack::orthonormalize(p, l, y.data(), p, tau.data()), "?geqrf/?orgqr");      // Q
    lapack::gemm(true, false, l, q, p, y.data(), p, b, ldb, c.data(), l);               // C = Q^T B (l x q)
    Matrix u(l, l), vt(l, q);
    check(lapack::gesdd_vectors(l, q, c.data(), l, s.data(), u.data(), l, vt.data(), l), "?gesdd");

    // Ritz vectors of A: x_i = Q U e_i; residual A x_i - theta_i x_i = sigma_i (B v_i - sigma_i x_i).
    Matrix x(p, l), bv(p, l);
    lapack::gemm(false, false, p, l, l, y.data(), p, u.data(), l, x.data(), p);
    lapack::gemm(false, true, p, l, q, b, ldb, vt.data(), l, bv.data(), p);             // B V
    theta.assign(l, 0.0);
    std::vector<double> rho(l);
    for (int i = 0; i < l; ++i) {
        const double sigma = double(s[i]);
        double r2 = 0;
        for (int j = 0; j < p; ++j) {
            const double d = double(bv(j, i)) - sigma * double(x(j, i));
            r2 += d * d;
        }
        theta[i] = sigma * sigma;
        rho[i] = sigma * std::sqrt(r2);
    }
    // Bottom up: Kato-Temple, lambda_i <= theta_i + rho_i^2 / (theta_i - a) when the next
    // eigenvalue lies below a = theta_{i+1} + err_{i+1} and lambda_i below theta_{i-1}
    // (theta_i + rho_i < theta_{i-1}). Top down, for the others (unresolved from their
    // neighbours): lambda_i <= lambda_{i-1} <= theta_{i-1} + err_{i-1}; the top one: rho_1.
    // Plus rounding: 16 ulps of sigma_1 sigma_i in T.
    err.assign(l, 0.0);
    std::vector<char> temple(l, 0);
    for (int i = l - 1; i >= 0; --i) {
        double e = rho[i];
        if (i + 1 < l) {
            const double a = theta[i + 1] + err[i + 1];
            const bool isolated_above = i == 0 || theta[i] + rho[i] < theta[i - 1];
            if (theta[i] > a && isolated_above) {
                e = std::min(e, rho[i] * rho[i] / (theta[i] - a));
                temple[i] = 1;
            }
        }
        err[i] = e;
    }
    for (int i = 1; i < l; ++i)
        if (!temple[i]) err[i] = theta[i - 1] + err[i - 1] - theta[i];
    const double eps = std::numeric_limits<T>::epsilon();
    for (int i = 0; i < l; ++i) err[i] += 16.0 * eps * std::sqrt(theta[0] * theta[i]);
}

/// Top-k values (ascending) with their bounds, l = k + min(p, M - k) sketch columns.
template <class T>
Spectrum top_k(const MatrixView& w, const SpectrumOptions& o, int64_t k, double trace) {
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    const int64_t M = w.M();
    // B = W^T as a column-major cols x rows matrix (the row-major input read in place, or a
    // converted / rescaled dense copy). Its singular values are those of W.
    const double scale = safe_scale<T>(trace);
    Matrix copy;
    const T* b = static_cast<const T*>(w.data);
    int64_t ldb = w.ld;
    if (!detail::stored_as<T>(w) || scale != 1.0) {
        copy.resize(w.cols, w.rows);
        detail::copy_block(w, 0, w.rows, 0, w.cols, copy.data());
        if (scale != 1.0) copy *= T(scale);
        b = copy.data();
        ldb = w.cols;
    }
    const int64_t l = k + std::min(o.oversample, M - k);  // no overflow: 0 <= oversample, k <= M
    std::vector<double> theta, err;
    sketch<T>(b, ldb, int(w.cols), int(w.rows), int(l), o.power_iters, o.seed, theta, err);

    Spectrum out;
    out.N = w.N();
    out.M = M;
    out.complete = false;
    out.k_computed = k;
    const double unit = (o.normalize ? 1.0 / double(out.N) : 1.0) / (scale * scale);
    out.eigenvalues.resize(k);
    out.errors.resize(k);
    for (int64_t i = 0; i < k; ++i) {
        out.eigenvalues[k - 1 - i] = theta[i] * unit;
        out.errors[k - 1 - i] = err[i] * unit;
    }
    out.trace = trace * (o.normalize ? 1.0 / double(out.N) : 1.0);
    return out;
}

Spectrum top_k(const MatrixView& w, const SpectrumOptions& o, int64_t k, double trace) {
    return o.precision == Precision::Float64 ? top_k<double>(w, o, k, trace) : top_k<float>(w, o, k, trace);
}

/// Adaptive k (see randomized.hpp): double k until the tail fitted on the k values lies
/// inside the values whose bound is within rtol, with n_tail * (1 + margin) <= k, k >= 64,
/// and the previous k gave the same fit. The exact route runs instead once l > M/6 or the
/// sketches, the next one included, would cost more than twice the exact route's flops.
constexpr int64_t kAdaptiveMinK = 64;

Spectrum adaptive(const MatrixView& w, const SpectrumOptions& o, double trace) {
    const int64_t M = w.M();
    int64_t k = std::min(M, o.k > 0 ? o.k : std::max<int64_t>(16, M / 32));
    FitOptions fit = o.fit;
    fit.threads = 1;
    fit.candidates = false;
    FitResult previous;
    // flops: exact = N M^2 (syrk) + 4 M^3 (tridiagonalisation, ~3x slower per flop than GEMM);
    // a sketch round = (2q + 3) products of W with l columns, 2 N M l each
    const double N = double(w.N()), Md = double(M);
    const double exact_flops = N * Md * Md + 4.0 * Md * Md * Md;
    double spent = 0;
    for (;;) {
        const int64_t l = k + std::min(o.oversample, M - k);
        const double round_flops = (2.0 * o.power_iters + 3.0) * 2.0 * N * Md * double(l);
        spent += round_flops;
        if (6 * l > M || spent > 2.0 * exact_flops) {
            SpectrumOptions exact = o;
            exact.method = Method::Gram;
            Spectrum s = spectrum(w, exact);
            s.k_computed = M;
            return s;
        }
        Spectrum s = top_k(w, o, k, trace);
        int64_t trusted = 0;  // counted from the top
        while (trusted < k && s.errors[k - 1 - trusted] <= o.rtol * s.eigenvalues[k - 1 - trusted]) ++trusted;
        const FitResult r = fit_power_law(s.eigenvalues.data(), k, fit);
        const bool ok = r.status == "success" && r.n_tail <= trusted && double(r.n_tail) * (1.0 + o.margin) <= double(k);
        const bool repeated = previous.status == "success" && previous.n_tail == r.n_tail &&
                              std::abs(previous.xmin - r.xmin) <= o.rtol * r.xmin;
        if (ok && repeated && k >= kAdaptiveMinK) return s;
        previous = r;
        k = std::min(M, 2 * k);
    }
}

}  // namespace

Spectrum randomized_spectrum(const MatrixView& w, const SpectrumOptions& o) {
    validate(w);
    const int64_t M = w.M();
    if (o.adaptive ? (o.k < 0 || o.k > M) : (o.k <= 0 || o.k > M))
        throw std::invalid_argument("randomized method needs 1 <= k <= M = " + std::to_string(M) + " (got k = " +
                                    std::to_string(o.k) + ")");
    if (o.power_iters < 0 || o.power_iters > 100) throw std::invalid_argument("power_iters must be in [0, 100]");
    if (o.oversample < 0) throw std::invalid_argument("oversample must be >= 0 (got " + std::to_string(o.oversample) + ")");
    if (o.adaptive && !(o.rtol > 0 && o.margin >= 0))
        throw std::invalid_argument("adaptive randomized needs rtol > 0 and margin >= 0");
    const double trace = detail::sum_of_squares(w);  // also rejects NaN/Inf
    return o.adaptive ? adaptive(w, o, trace) : top_k(w, o, o.k, trace);
}

}  // namespace htsr
