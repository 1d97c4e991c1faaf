// Continuous power-law fit of a tail (Clauset, Shalizi & Newman, SIAM Review 51:661, 2009):
// for every candidate xmin the closed-form MLE alpha = 1 + n / sum ln(x_i / xmin) and the KS
// distance D between the fitted CDF F(x) = 1 - (x/xmin)^(1-alpha) and the empirical one; the
// candidate with the smallest D wins (the earliest on exact ties).
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace htsr {

/// Which points enter the KS statistic, and which xmin are candidates.
enum class KSMode {
    /// Clauset's plfit.m: candidates = the distinct values but the largest, tail = all x >= xmin;
    /// D = max over every tail point x_(k) (ties included) of |F(x_(k)) - k/n|; D = 1 when
    /// alpha <= 1. WeightWatcher 0.7.7's WWFit is the same on tie-free data; with ties it also
    /// takes every sorted position inside a run of equal values as a candidate (every_position).
    AllPoints,
    /// The `powerlaw` package 2.0.0: candidates = the distinct values except the two largest;
    /// D over the distinct tail values u with S(u) = #(tail < u)/n; alpha <= 1 is invalid.
    Distinct,
};

KSMode parse_ks(const std::string& name);  // "all_points", "distinct"

struct FitOptions {
    KSMode ks = KSMode::AllPoints;
    double xmin = std::numeric_limits<double>::quiet_NaN();  ///< fixed xmin (no scan) when set
    double xmin_lo = -std::numeric_limits<double>::infinity();  ///< candidate range, inclusive
    double xmin_hi = std::numeric_limits<double>::infinity();
    double xmax = std::numeric_limits<double>::quiet_NaN();  ///< drop x > xmax; Distinct: truncated CDF in D
    int64_t min_tail = 2;                                    ///< skip candidates with fewer tail points
    double floor = std::numeric_limits<double>::quiet_NaN();  ///< drop x <= floor first (WeightWatcher: 1e-5)
    bool small_n = false;     ///< WeightWatcher 0.7.7 path for n < 20: alpha = 1 + (n-1)/sum, tails < 8 skipped
    bool every_position = false;  ///< AllPoints: WWFit's candidates, every sorted position but the last (ties too)
    bool candidates = false;  ///< keep per-candidate arrays (forces the full scan)
    bool prune = true;        ///< early abandoning + branch and bound (exact); false: every KS point of every candidate, in order
    int threads = 1;          ///< OpenMP threads across candidates (0 = all)
};

struct FitResult {
    double alpha = std::numeric_limits<double>::quiet_NaN();
    double xmin = std::numeric_limits<double>::quiet_NaN();
    double xmax = std::numeric_limits<double>::quiet_NaN();  ///< largest value fitted
    double D = std::numeric_limits<double>::quiet_NaN();
    double sigma = std::numeric_limits<double>::quiet_NaN();  ///< (alpha - 1) / sqrt(n_tail)
    int64_t n_tail = 0;  ///< points in [xmin, xmax]
    int64_t n = 0;       ///< points fitted (after floor and xmax)
    std::string status = "failed";  ///< "success" or "failed"
    std::string message;
    std::vector<double> xmins, alphas, Ds, sigmas;  ///< per candidate, with options.candidates
    int64_t evaluations = 0;  ///< KS points evaluated (each one exp): the scan's machine-independent work
};

/// Fits x[0..n) (any order). Throws std::invalid_argument for fewer than 2 values, NaN/Inf,
/// or non-positive values when no floor is given. Returns status "failed" (with a message)
/// when the options leave nothing to fit. When *cancel becomes true the scan stops between
/// candidates and Cancelled (batch.hpp) is thrown.
///
/// The KS maximum of a candidate is found by branch and bound over ranges of tail points
/// (F and the ECDF both rise along the sorted tail, so max(F(hi) - S(lo), S(hi) - F(lo))
/// bounds a range), stopping as soon as a point exceeds the best D so far: the result is the
/// same double as the plain scan's (prune = false), for any thread count.
FitResult fit_power_law(const double* x, int64_t n, const FitOptions& options,
                        const std::atomic<bool>* cancel = nullptr);

/// Many independent fits, OpenMP across fits (each single-threaded); errors name the sample.
std::vector<FitResult> fit_power_law_batch(const std::vector<std::pair<const double*, int64_t>>& samples,
                                           const FitOptions& options, int threads,
                                           const std::atomic<bool>* cancel = nullptr);

}  // namespace htsr
