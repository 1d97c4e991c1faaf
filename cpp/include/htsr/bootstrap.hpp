// Clauset-Shalizi-Newman (SIAM Review 51:661, 2009, section 4.1; plpva.m) semi-parametric
// bootstrap goodness-of-fit p-value of a continuous power-law fit.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "htsr/powerlaw.hpp"

namespace htsr {

struct BootstrapResult {
    FitResult fit;            ///< the fit of the observed data (options as given)
    double p = std::numeric_limits<double>::quiet_NaN();  ///< #{D_b >= D} / #valid replicates
    int64_t reps = 0;         ///< replicates requested
    int64_t valid = 0;        ///< replicates whose refit succeeded
    std::vector<double> Ds;   ///< D of every replicate (NaN where the refit failed)
};

/// Observed fit with `options`, then `reps` synthetic data sets of the same size n: each point
/// is, with probability n_tail/n, Pareto(alpha, xmin) (x = xmin (1-u)^(-1/(alpha-1))), else a
/// uniform draw (with replacement) from the observed points below xmin; each is refitted with
/// the same options (xmin scan included) and its D kept. p = #{D_b >= D_obs} / #valid (plpva's >=).
/// Replicate b uses its own xoshiro256** stream seeded by (seed, b), so the p-value and the
/// Ds are identical for any `threads` (OpenMP over replicates; 0 = all cores).
/// fixed_xmin: refit alpha only at the observed xmin (O(n) per replicate; CSN's cheaper variant).
BootstrapResult bootstrap_power_law(const double* x, int64_t n, const FitOptions& options, int64_t reps, uint64_t seed,
                                    bool fixed_xmin, int threads, const std::atomic<bool>* cancel = nullptr);

}  // namespace htsr
