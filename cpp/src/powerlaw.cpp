#include "htsr/powerlaw.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "htsr/batch.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace htsr {

KSMode parse_ks(const std::string& name) {
    if (name == "all_points") return KSMode::AllPoints;
    if (name == "distinct") return KSMode::Distinct;
    throw std::invalid_argument("unknown ks convention '" + name + "' (expected all_points or distinct)");
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kSmallN = 20, kSmallNMinTail = 8;  // WeightWatcher 0.7.7 WW_powerlaw constants

/// The sorted data and everything the scan precomputes from it.
struct Sample {
    std::vector<double> x, lx;           ///< ascending values and their logs
    std::vector<long double> suffix;     ///< suffix[k] = sum_{j >= k} lx[j] (long double: 1e-19 relative)
    std::vector<int64_t> distinct;       ///< position of the first occurrence of each distinct value (never empty)
    bool small_n = false;                ///< WeightWatcher's small-n estimator is in force
    int64_t size() const { return int64_t(x.size()); }
};

Sample prepare(const double* values, int64_t n, const FitOptions& o) {
    if (n < 2) throw std::invalid_argument("need at least 2 values to fit a power law, got " + std::to_string(n));
    const bool has_floor = !std::isnan(o.floor), has_xmax = !std::isnan(o.xmax);
    if (has_floor && !(o.floor >= 0)) throw std::invalid_argument("floor must be >= 0");
    if (has_xmax && !(o.xmax > 0)) throw std::invalid_argument("xmax must be > 0");
    Sample s;
    s.x.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
        const double v = values[i];
        if (!std::isfinite(v)) throw std::invalid_argument("data contain NaN or Inf (index " + std::to_string(i) + ")");
        if (!has_floor && v <= 0)
            throw std::invalid_argument("data contain non-positive values (index " + std::to_string(i) +
                                        "); pass floor= to drop values at or below a threshold");
        if ((has_floor && v <= o.floor) || (has_xmax && v > o.xmax)) continue;
        s.x.push_back(v);
    }
    if (!std::is_sorted(s.x.begin(), s.x.end())) std::sort(s.x.begin(), s.x.end());
    const int64_t m = s.size();
    s.lx.resize(m);
    for (int64_t i = 0; i < m; ++i) s.lx[i] = std::log(s.x[i]);
    s.suffix.assign(m + 1, 0.0L);
    for (int64_t i = m - 1; i >= 0; --i) s.suffix[i] = s.suffix[i + 1] + (long double)s.lx[i];
    for (int64_t i = 0; i < m; ++i)
            if (i == 0 || s.x[i] != s.x[i - 1]) s.distinct.push_back(i);
    s.small_n = o.small_n && o.ks == KSMode::AllPoints && m < kSmallN;
    return s;
}

/// The KS distance of one candidate, evaluated with early abandoning.
class Distance {
  public:
    Distance(const Sample& s, const FitOptions& o)
        : s_(s), distinct_(o.ks == KSMode::Distinct), truncated_(distinct_ && !std::isnan(o.xmax)), plain_(!o.prune),
          log_xmax_(truncated_ ? std::log(o.xmax) : 0.0) {}

    /// alpha = 1 + n / sum_{tail} ln(x / xmin) for the tail x[k..) and xmin = exp(lxk)
    /// (CSN eq. 3.1); WeightWatcher's small-n path uses n - 1 (bias correction).
    /// Returns NaN for a candidate the small-n path skips.
    double alpha(int64_t k, double lxk) const {
        const int64_t m = s_.size() - k;
        long double denom = s_.suffix[k] - (long double)m * (long double)lxk;
        if (s_.x.back() == s_.x[k] && lxk == s_.lx[k]) denom = 0;  // all tail values equal
        if (s_.small_n) {
            if (m < kSmallNMinTail || denom <= 1e-12L) return std::numeric_limits<double>::quiet_NaN();
            return double(1.0L + (long double)(m - 1) / denom);
        }
        return denom == 0 ? kInf : double(1.0L + (long double)m / denom);
    }

    /// Where to look first and what one evaluation found.
    struct Probe {
        int64_t hint_a = -1, hint_b = -1;  ///< positions of large deviations found for other candidates
        int64_t where = -1;                ///< out: position of the (partial) maximum
        int64_t evaluations = 0;           ///< in/out: KS points evaluated (F computed), accumulated
    };

    /// max over the KS points of |F(x) - S(x)| for the tail starting at position k. Stops as
    /// soon as a partial maximum exceeds `bound` and returns it (a lower bound on D, so the
    /// candidate cannot win). The hint points are tried first. With prune=false every point
    /// is evaluated in order (the reference scan the tests compare with).
    double operator()(int64_t k, double lxk, double alpha, double bound, Probe& p) const {
        if (distinct_) return truncated_ ? run<true, true>(k, lxk, alpha, bound, p) : run<true, false>(k, lxk, alpha, bound, p);
        return run<false, false>(k, lxk, alpha, bound, p);
    }

  private:
    template <bool kDistinct, bool kTruncated>
    double run(int64_t k, double lxk, double alpha, double bound, Probe& p) const {
        const int64_t n = s_.size();
        const double m = double(n - k);
        p.where = k;
        if (std::isinf(alpha)) {  // every tail value equals xmin: F = 0 at each point
            if constexpr (kDistinct) return 0.0;
            p.where = n - 1;
            return double(n - 1 - k) / m;
        }
        const double e = 1.0 - alpha;
        const double norm = kTruncated ? 1.0 - std::exp(e * (log_xmax_ - lxk)) : 1.0;
        auto cdf = [&](int64_t j) {
            ++p.evaluations;
            double F = 1.0 - std::exp(e * (s_.lx[j] - lxk));  // 1 - (x / xmin)^(1 - alpha)
            if constexpr (kTruncated) F /= norm;
            return F;
        };
        auto ecdf = [&](int64_t j) { return double(j - k) / m; };
        auto deviation = [&](int64_t j) { return std::fabs(cdf(j) - ecdf(j)); };
        auto is_point = [&](int64_t j) {
            if (j < k || j >= n) return false;
            if constexpr (kDistinct) return j == 0 || s_.x[j] != s_.x[j - 1];
            return true;
        };
        double best = 0.0;
        int64_t arg = k;
        int64_t t0 = k;
        if constexpr (kDistinct) t0 = std::lower_bound(s_.distinct.begin(), s_.distinct.end(), k) - s_.distinct.begin();
        const int64_t end = kDistinct ? int64_t(s_.distinct.size()) : n;
        auto pos = [&](int64_t t) { return kDistinct ? s_.distinct[t] : t; };
        if (plain_) {
            for (int64_t t = t0; t < end; ++t) {
                const double d = deviation(pos(t));
                if (d > best) { best = d; arg = pos(t); }
            }
            p.where = arg;
            return best;
        }
        for (int64_t h : {p.hint_a, p.hint_b})
            if (is_point(h)) {
                const double d = deviation(h);
                if (d > bound) { p.where = h; return d; }
                if (d > best) { best = d; arg = h; }
            }
        // Branch and bound over the KS points t0..end-1 (positions pos(t)): F and the ECDF both
        // rise with t, so on points lo..hi every deviation is at most
        // max(F(hi) - S(lo), S(hi) - F(lo)) (+ kSlack / norm for the rounding of exp); a range whose
        // bound does not exceed the best deviation found cannot hold a larger one and is
        // skipped. The maximum returned is the same double as a plain scan's. Ranges are split
        // in halves down to kLeaf points, scanned directly; the half nearer the best point so
        // far goes first, so a deviation above `bound` is usually found after a few ranges.
        const double slack = kSlack / norm;
        struct Range { int64_t lo, hi; double Flo, Fhi; };
        Range stack[130];  // depth <= 2 * log2(n)
        int top = 0;
        stack[top++] = {t0, end - 1, cdf(pos(t0)), cdf(pos(end - 1))};
        while (top > 0) {
            const Range r = stack[--top];
            const int64_t jlo = pos(r.lo), jhi = pos(r.hi);
            if (std::max(r.Fhi - ecdf(jlo), ecdf(jhi) - r.Flo) + slack <= best) continue;
            if (r.hi - r.lo < kLeaf) {
                for (int64_t t = r.lo; t <= r.hi; ++t) {
                    const double d = deviation(pos(t));
                    if (d > best) { best = d; arg = pos(t); }
                }
                if (best > bound) break;
                continue;
            }
            const int64_t mid = r.lo + (r.hi - r.lo) / 2;
            const double Fmid = cdf(pos(mid)), Fnext = cdf(pos(mid + 1));
            const Range left{r.lo, mid, r.Flo, Fmid}, right{mid + 1, r.hi, Fnext, r.Fhi};
            if (arg >= pos(mid + 1)) { stack[top++] = left; stack[top++] = right; }
            else { stack[top++] = right; stack[top++] = left; }
        }
        p.where = arg;
        return best;
    }

    static constexpr int64_t kLeaf = 32;
    static constexpr double kSlack = 1e-14;  ///< F and S lie in [0, 1]; exp is within 1 ulp, not always monotone

    const Sample& s_;
    bool distinct_, truncated_, plain_;
    double log_xmax_;
};

/// Best candidate so far, ordered by (D, candidate index): exact ties go to the earliest.
struct Choice {
    double D = kInf;
    int64_t index = std::numeric_limits<int64_t>::max();
    bool better_than(const Choice& o) const { return D < o.D || (D == o.D && index < o.index); }
};

void fill(FitResult& r, const Sample& s, int64_t k, double xmin, double alpha, double D) {
    r.xmin = xmin;
    r.alpha = alpha;
    r.D = D;
    r.n_tail = s.size() - k;
    r.sigma = (alpha - 1.0) / std::sqrt(double(r.n_tail));
    if (std::isfinite(alpha) && alpha > 1.0) {
        r.status = "success";
    } else {
        r.status = "failed";
        r.message = "no candidate xmin gives alpha > 1";
    }
}

FitResult fit_fixed_xmin(const Sample& s, const FitOptions& o, const Distance& distance) {
    FitResult r;
    const int64_t k = std::lower_bound(s.x.begin(), s.x.end(), o.xmin) - s.x.begin();
    if (s.size() - k < std::max<int64_t>(o.min_tail, 1)) {
        r.message = "fewer than min_tail values at or above xmin";
        return r;
    }
    const double lxk = std::log(o.xmin);
    const double alpha = distance.alpha(k, lxk);
    Distance::Probe probe;
    const double D = alpha > 1.0 ? distance(k, lxk, alpha, kInf, probe) : (o.ks == KSMode::AllPoints ? 1.0 : kInf);
    fill(r, s, k, o.xmin, alpha, D);
    r.evaluations = probe.evaluations;
    return r;
}

}  // namespace

FitResult fit_power_law(const double* values, int64_t n, const FitOptions& o, const std::atomic<bool>* cancel) {
    if (o.min_tail < 1) throw std::invalid_argument("min_tail must be >= 1");
    const Sample s = prepare(values, n, o);
    FitResult r;
    r.n = s.size();
    if (s.size() < 2) {
        r.message = "fewer than 2 values left after floor/xmax";
        return r;
    }
    r.xmax = s.x.back();
    const Distance distance(s, o);
    if (!std::isnan(o.xmin)) {
        FitResult fixed = fit_fixed_xmin(s, o, distance);
        fixed.n = r.n;
        fixed.xmax = r.xmax;
        return fixed;
    }

    // Candidate tails (positions in the sorted data) and their alphas.
    std::vector<int64_t> cand;
    if (o.ks == KSMode::AllPoints && o.every_position) {
        for (int64_t k = 0; k + 1 < s.size(); ++k) cand.push_back(k);
    } else if (o.ks == KSMode::AllPoints) {
        cand.assign(s.distinct.begin(), s.distinct.end() - 1);
    } else if (s.distinct.size() > 2) {
        cand.assign(s.distinct.begin(), s.distinct.end() - 2);
    }
    cand.erase(std::remove_if(cand.begin(), cand.end(),
                              [&](int64_t k) {
                                  return s.x[k] < o.xmin_lo || s.x[k] > o.xmin_hi || s.size() - k < o.min_tail;
                              }),
               cand.end());
    const int64_t nc = int64_t(cand.size());
    std::vector<double> alpha(nc);
    for (int64_t c = 0; c < nc; ++c) alpha[c] = distance.alpha(cand[c], s.lx[cand[c]]);
    // A candidate is evaluated when alpha > 1. Otherwise WWFit sets D = 1 (it stays in the
    // argmin); powerlaw marks it invalid (excluded).
    auto evaluated = [&](int64_t c) { return alpha[c] > 1.0; };
    const double invalid_D = o.ks == KSMode::AllPoints ? 1.0 : kInf;

    const bool full = o.candidates || !o.prune;
    std::vector<double> D(full ? nc : 0, invalid_D);
    Choice best;
    std::atomic<double> bound{kInf};
    std::atomic<int64_t> best_where{-1}, evaluations{0};
    std::atomic<bool> stopped{false};
    const int nthreads = resolve_threads(o.threads, nc);

    auto scan = [&](int64_t first, int64_t step) {
#pragma omp parallel num_threads(nthreads)
        {
            Choice local;
            Distance::Probe probe;
#pragma omp for schedule(dynamic, 16) nowait
            for (int64_t c = first; c < nc; c += step) {
                if (cancel && cancel->load(std::memory_order_relaxed)) {
                    stopped.store(true, std::memory_order_relaxed);
                    continue;
                }
                Choice mine{invalid_D, c};
                if (evaluated(c)) {
                    const double b = full ? kInf : bound.load(std::memory_order_relaxed);
                    probe.hint_a = probe.where;
                    probe.hint_b = best_where.load(std::memory_order_relaxed);
                    mine.D = distance(cand[c], s.lx[cand[c]], alpha[c], b, probe);
                    if (mine.D > b) continue;  // cannot be the minimum
                    double cur = bound.load(std::memory_order_relaxed);
                    while (mine.D < cur && !bound.compare_exchange_weak(cur, mine.D, std::memory_order_relaxed)) {}
                    if (mine.D <= cur) best_where.store(probe.where, std::memory_order_relaxed);
                }
                if (full) D[c] = mine.D;
                if (mine.better_than(local)) local = mine;
            }
            evaluations += probe.evaluations;
#pragma omp critical(htsr_powerlaw_best)
            if (local.better_than(best)) best = local;
        }
    };
    if (!full && nc > 128) scan(0, nc / 64);  // coarse pass: a good bound early
    scan(0, 1);
    if (stopped.load()) throw Cancelled();
    r.evaluations = evaluations.load();

    if (o.candidates) {
        r.xmins.resize(nc);
        r.sigmas.resize(nc);
        for (int64_t c = 0; c < nc; ++c) {
            r.xmins[c] = s.x[cand[c]];
            r.sigmas[c] = (alpha[c] - 1.0) / std::sqrt(double(s.size() - cand[c]));
        }
        r.alphas = alpha;
        r.Ds = D;
    }
    if (best.index >= nc || std::isinf(best.D)) {
        r.message = nc == 0 ? "no candidate xmin (check xmin range / min_tail)" : "no candidate xmin gives alpha > 1";
        return r;
    }
    const int64_t k = cand[best.index];
    fill(r, s, k, s.x[k], alpha[best.index], best.D);
    return r;
}

std::vector<FitResult> fit_power_law_batch(const std::vector<std::pair<const double*, int64_t>>& samples,
                                           const FitOptions& options, int threads, const std::atomic<bool>* cancel) {
    FitOptions one = options;
    one.threads = 1;
    std::vector<double> cost(samples.size());
    for (size_t i = 0; i < samples.size(); ++i) cost[i] = double(samples[i].second);
    std::vector<FitResult> out(samples.size());
    parallel_for(int64_t(samples.size()), cost, threads, cancel,
                 [&](int64_t i) { out[i] = fit_power_law(samples[i].first, samples[i].second, one, cancel); }, "sample");
    return out;
}

}  // namespace htsr
