#include "htsr/shuffle.hpp"

#include <stdexcept>
#include <type_traits>
#include <utility>

#include "htsr/batch.hpp"
#include "htsr/rng.hpp"
#include "matrix_io.hpp"

namespace htsr {

namespace {

/// Fisher-Yates: a[i] <-> a[uniform(0..i)] for i = count-1 .. 1 (a uniform permutation).
template <class T>
void fisher_yates(T* a, int64_t count, uint64_t seed) {
    rng::Xoshiro256 gen(seed);
    for (int64_t i = count - 1; i > 0; --i) std::swap(a[i], a[gen.below(uint64_t(i) + 1)]);
}

template <class T>
Spectrum shuffled(const MatrixView& w, const SpectrumOptions& options, uint64_t seed) {
    const int64_t count = w.rows * w.cols;
    std::vector<T> buffer(static_cast<size_t>(count));
    detail::copy_block(w, 0, w.rows, 0, w.cols, buffer.data());  // row-major, ld = cols
    fisher_yates(buffer.data(), count, seed);
    MatrixView v;
    v.data = buffer.data();
    v.rows = w.rows;
    v.cols = w.cols;
    v.ld = w.cols;
    v.dtype = std::is_same_v<T, float> ? DType::F32 : DType::F64;
    return spectrum(v, options);
}

}  // namespace

std::vector<int64_t> shuffle_permutation(int64_t count, uint64_t seed) {
    std::vector<int64_t> index(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) index[size_t(i)] = i;
    fisher_yates(index.data(), count, seed);
    return index;
}

Spectrum shuffled_spectrum(const MatrixView& w, const SpectrumOptions& options, uint64_t seed) {
    validate(w);
    if (options.method == Method::Randomized)
        throw std::invalid_argument("shuffled spectra need an exact method (gram or svd)");
    return options.precision == Precision::Float32 ? shuffled<float>(w, options, seed)
                                                   : shuffled<double>(w, options, seed);
}

std::vector<Spectrum> shuffled_spectrum_batch(const std::vector<MatrixView>& ws, const SpectrumOptions& options,
                                              const std::vector<uint64_t>& seeds, int threads,
                                              const std::atomic<bool>* cancel) {
    if (seeds.size() != ws.size()) throw std::invalid_argument("one seed per matrix expected");
    std::vector<double> cost(ws.size());
    for (size_t i = 0; i < ws.size(); ++i) cost[i] = double(ws[i].N()) * double(ws[i].M()) * double(ws[i].M());
    std::vector<Spectrum> out(ws.size());
    parallel_for(int64_t(ws.size()), cost, threads, cancel,
                 [&](int64_t i) { out[i] = shuffled_spectrum(ws[i], options, seeds[i]); }, "matrix");
    return out;
}

}  // namespace htsr
