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
    int t = threads;
    if (t <= 0) {
#ifdef _OPENMP
        t = omp_get_max_threads();
#else
        t = 1;
#endif
    }
    t = std::min<int64_t>({int64_t(t), std::max<int64_t>(items, 1), int64_t(64)});
    return std::max(t, 1);
}

namespace {

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
                  const std::function<void(int64_t)>& task, const char* label) {
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    if (int64_t(cost.size()) == n)
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cost[a] > cost[b]; });

    std::vector<std::exception_ptr> errors(n);
    std::atomic<bool> stopped{false};
    const int nthreads = resolve_threads(threads, n);
    // One BLAS thread per item; a batch smaller than the thread budget gives BLAS the rest.
    const int budget = resolve_threads(threads, int64_t(1) << 30);
    lapack::BlasThreads blas_threads(nthreads < budget ? budget / std::max(nthreads, 1) : 1);

#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t j = 0; j < n; ++j) {
        if (cancel && cancel->load(std::memory_order_relaxed)) {
            stopped.store(true, std::memory_order_relaxed);
            continue;
        }
        const int64_t i = order[j];
        try {
            task(i);
        } catch (...) {
            errors[i] = std::current_exception();
        }
    }

    if (stopped.load()) throw Cancelled();
    for (int64_t i = 0; i < n; ++i)
        if (errors[i]) rethrow_with_label(errors[i], std::string(label) + " " + std::to_string(i) + ": ");
}

}  // namespace htsr
