// Parallel loops over independent matrices (or samples): OpenMP across items, one BLAS thread
// per item, exceptions captured per item and rethrown after the region, cancellation between items.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace htsr {

/// Thrown when a batch stopped early because its cancel flag was raised (e.g. Ctrl-C).
struct Cancelled : std::runtime_error {
    Cancelled() : std::runtime_error("cancelled") {}
};

/// Number of worker threads for `threads` (0 = OpenMP's default, i.e. all cores or
/// OMP_NUM_THREADS), capped by that default (more threads than cores only slow down), by the
/// number of items and by 64 (OpenBLAS's buffer limit).
int resolve_threads(int threads, int64_t items);

/// Calls task(i) for every i < n, items with larger `cost` first (load balance), on
/// resolve_threads(threads, n) OpenMP threads with OpenBLAS pinned to one thread. When that is
/// one thread (one item, or threads = 1) no OpenMP team is made, and with `spare_to_blas` the
/// items run one after the other with resolve_threads(threads, all) BLAS threads instead
/// (at most the processors: OpenBLAS threads beyond them only busy-wait).
/// Items not yet started when *cancel becomes true are skipped and Cancelled is thrown.
/// An exception from item i is rethrown (same category) as "<label> i: <message>";
/// the lowest failing index wins, so the error does not depend on scheduling.
void parallel_for(int64_t n, const std::vector<double>& cost, int threads, const std::atomic<bool>* cancel,
                  const std::function<void(int64_t)>& task, const char* label, bool spare_to_blas = false);

}  // namespace htsr
