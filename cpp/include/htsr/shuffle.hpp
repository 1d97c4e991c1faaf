// Spectra of element-shuffled weight matrices (WeightWatcher's `randomize`): the entries of W
// are permuted uniformly at random (seeded per matrix), which keeps the entry
// distribution and destroys every correlation, and the eigenvalues of X = W_s^T W_s are taken
// with the same kernels as spectrum(). The only copy is the shuffled buffer inside the kernel.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "htsr/spectrum.hpp"

namespace htsr {

/// Spectrum of W with its entries uniformly permuted (Rao-Sandelius: uniform buckets of ~32k
/// entries, then Fisher-Yates inside each, xoshiro256** streams derived from `seed`); the
/// permutation depends on the seed and the number of entries only, not on the dtype.
/// The buffer has the working precision of options.precision; exact methods only.
Spectrum shuffled_spectrum(const MatrixView& w, const SpectrumOptions& options, uint64_t seed);

/// The permutation shuffled_spectrum() applies to the row-major flattened entries of a matrix
/// with `count` entries: shuffled[k] = original[index[k]].
std::vector<int64_t> shuffle_permutation(int64_t count, uint64_t seed);

/// shuffled_spectrum() of ws[i] with seeds[i], OpenMP across matrices (see spectrum_batch):
/// identical results for any thread count.
std::vector<Spectrum> shuffled_spectrum_batch(const std::vector<MatrixView>& ws, const SpectrumOptions& options,
                                              const std::vector<uint64_t>& seeds, int threads,
                                              const std::atomic<bool>* cancel = nullptr);

}  // namespace htsr
