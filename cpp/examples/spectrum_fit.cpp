// The htsr C++ API without Python: eigenvalues of X = W^T W for one matrix and a batch, and the
// power-law fit of the tail. Builds a deterministic heavy-tailed 600 x 200 float32 matrix (the
// same one tests/test_cpp_api.py builds with numpy), checks a few invariants and prints the
// results. Exit status 0 when every check holds.
//
//   cmake -S . -B build-cpp -DHTSR_PYTHON=OFF -DHTSR_EXAMPLES=ON && cmake --build build-cpp
//   ./build-cpp/spectrum_fit        (or: ctest --test-dir build-cpp)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

#include "htsr/lapack.hpp"
#include "htsr/powerlaw.hpp"
#include "htsr/spectrum.hpp"

int main() {
    const int64_t rows = 600, cols = 200;
    std::vector<float> w(rows * cols);
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            const double u = double((i * 7919 + j * 104729) % 1009) / 1009.0 - 0.5;
            const double v = double((i * 31 + j * 17) % 101) / 101.0 - 0.5;
            w[i * cols + j] = float(v / (std::fabs(u) + 0.01));  // ratio of uniforms: heavy tails
        }
    const htsr::MatrixView view{w.data(), rows, cols, cols, htsr::DType::F32};

    htsr::lapack::BlasThreads one_thread(1);
    htsr::SpectrumOptions options;
    options.precision = htsr::Precision::Float64;
    const htsr::Spectrum s = htsr::spectrum(view, options);

    htsr::FitOptions fit_options;
    fit_options.floor = 0.0;  // drop exact zeros, if any
    const htsr::FitResult fit = htsr::fit_power_law(s.eigenvalues.data(), int64_t(s.eigenvalues.size()), fit_options);

    const std::vector<htsr::Spectrum> batch = htsr::spectrum_batch({view, view}, options, 2);

    int failures = 0;
    auto check = [&](bool ok, const char* what) {
        if (!ok) { std::printf("FAILED: %s\n", what); ++failures; }
    };
    const double sum = std::accumulate(s.eigenvalues.begin(), s.eigenvalues.end(), 0.0);
    check(s.N == rows && s.M == cols && int64_t(s.eigenvalues.size()) == cols, "M eigenvalues of a 600 x 200 matrix");
    check(std::is_sorted(s.eigenvalues.begin(), s.eigenvalues.end()), "ascending eigenvalues");
    check(std::fabs(sum - s.trace) <= 1e-10 * s.trace, "sum of eigenvalues == ||W||_F^2");
    check(fit.status == "success" && fit.alpha > 1.0, "a successful fit");
    check(batch[0].eigenvalues == s.eigenvalues && batch[1].eigenvalues == s.eigenvalues, "batch == single");

    std::printf("lambda_max %.17g\nalpha %.17g\nxmin %.17g\nD %.17g\nn_tail %lld\n", s.eigenvalues.back(), fit.alpha,
                fit.xmin, fit.D, (long long)fit.n_tail);
    std::printf(failures ? "checks failed\n" : "ok\n");
    return failures ? 1 : 0;
}
