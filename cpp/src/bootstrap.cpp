#include "htsr/bootstrap.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "htsr/batch.hpp"
#include "htsr/rng.hpp"

namespace htsr {

BootstrapResult bootstrap_power_law(const double* x, int64_t n, const FitOptions& options, int64_t reps, uint64_t seed,
                                    bool fixed_xmin, int threads, const std::atomic<bool>* cancel) {
    if (reps < 1) throw std::invalid_argument("reps must be >= 1");
    FitOptions one = options;
    one.threads = 1;
    one.candidates = false;
    BootstrapResult out;
    out.reps = reps;
    out.fit = fit_power_law(x, n, one);
    out.Ds.assign(size_t(reps), std::numeric_limits<double>::quiet_NaN());
    if (out.fit.status != "success" || !(out.fit.alpha > 1)) return out;

    // The points the observed fit used (floor and xmax applied), ascending.
    std::vector<double> data;
    data.reserve(size_t(n));
    const bool has_floor = !std::isnan(options.floor), has_xmax = !std::isnan(options.xmax);
    for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        if ((has_floor && v <= options.floor) || (has_xmax && v > options.xmax)) continue;
        data.push_back(v);
    }
    std::sort(data.begin(), data.end());
    const double xmin = out.fit.xmin, alpha = out.fit.alpha, D = out.fit.D;
    const int64_t m = int64_t(data.size());
    const int64_t below = int64_t(std::lower_bound(data.begin(), data.end(), xmin) - data.begin());
    const double p_tail = double(m - below) / double(m), inv = -1.0 / (alpha - 1.0);
    FitOptions refit = one;
    if (fixed_xmin) refit.xmin = xmin;

    parallel_for(
        reps, {}, threads, cancel,
        [&](int64_t b) {
            rng::Xoshiro256 gen(rng::stream_seed(seed, uint64_t(b)));
            std::vector<double> sample(static_cast<size_t>(m));
            for (int64_t i = 0; i < m; ++i) {
                const double u = gen.uniform();
                if (u < p_tail || below == 0)
                    sample[size_t(i)] = xmin * std::pow(1.0 - gen.uniform(), inv);
                else
                    sample[size_t(i)] = data[size_t(gen.below(uint64_t(below)))];
            }
            try {
                const FitResult r = fit_power_law(sample.data(), m, refit);
                if (r.status == "success") out.Ds[size_t(b)] = r.D;
            } catch (const std::invalid_argument&) {
                // a degenerate replicate (e.g. all points equal): counted as invalid
            }
        },
        "replicate");
    int64_t exceed = 0;
    for (double d : out.Ds) {
        if (std::isnan(d)) continue;
        ++out.valid;
        if (d >= D) ++exceed;
    }
    out.p = out.valid ? double(exceed) / double(out.valid) : std::numeric_limits<double>::quiet_NaN();
    return out;
}

}  // namespace htsr
