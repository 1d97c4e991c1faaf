#include "htsr/batch.hpp"

#include <algorithm>
#include <exception>
#include <numeric>

#include "htsr/lapack.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace htsr {

int resolve_threads(int threads, int64_t items) {
#ifdef _OPENMP
    const int cores = omp_get_max_threads();  // OMP_NUM_THREADS, else the cores available
#else
    const int cores = 1;
#endif
    const int t = threads <= 0 ? cores : std::min(threads, cores);
    return int(std::max<int64_t>(1, std::min<int64_t>({int64_t(t), std::max<int64_t>(items, 1), int64_t(64)})));
}

namespace {

/// Processors this process may run on: OpenBLAS threads beyond them only busy-wait (an
/// OMP_NUM_THREADS above the cores must not become oversubscribed BLAS).
int processors() {
#ifdef _OPENMP
    return std::max(1, omp_get_num_procs());
#else
    return 1;
#endif
}

[[noreturn]] void rethrow_with_label(std::exception_ptr error, const std::string& prefix) {
    try {
        std::rethrow_exception(error);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(prefix + e.what());
    } catch (const std::overflow_error& e) {
        throw std::overflow_error(prefix + e.what());
    } catch (const std::bad_alloc&) {
        throw;
    } catch (const std::exception& e) {
        throw std::runtime_error(prefix + e.what());
    }
}

}  // namespace

void parallel_for(int64_t n, const std::vector<double>& cost, int threads, const std::atomic<bool>* cancel,
                  const std::function<void(int64_t)>& task, const char* label, bool spare_to_blas) {
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    if (int64_t(cost.size()) == n)
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cost[a] > cost[b]; });

    std::vector<std::exception_ptr> errors(n);
    std::atomic<bool> stopped{false};
    const int nthreads = resolve_threads(threads, n);
    auto run = [&](int64_t j) {
        if (cancel && cancel->load(std::memory_order_relaxed)) {
            stopped.store(true, std::memory_order_relaxed);
            return;
        }
        const int64_t i = order[j];
        try {
            task(i);
        } catch (...) {
            errors[i] = std::current_exception();
        }
    };
    if (nthreads == 1) {
        // No OpenMP team: the spare threads (if allowed) go to BLAS, whose own pthreads then
        // never run inside an OpenMP region.
        lapack::BlasThreads blas_threads(spare_to_blas ? std::min(resolve_threads(threads, int64_t(1) << 30), processors()) : 1);
        for (int64_t j = 0; j < n; ++j) run(j);
    } else {
        // Several items at a time: exactly one BLAS thread each (OpenBLAS threads inside the
        // team print "Detect OpenMP Loop" and busy-wait on one shared pool: 20x slower, or a livelock).
        lapack::BlasThreads blas_threads(1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
        for (int64_t j = 0; j < n; ++j) run(j);
    }

    if (stopped.load()) throw Cancelled();
    for (int64_t i = 0; i < n; ++i)
        if (errors[i]) rethrow_with_label(errors[i], std::string(label) + " " + std::to_string(i) + ": ");
}

}  // namespace htsr
