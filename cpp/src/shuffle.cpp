#include "htsr/shuffle.hpp"

#include <algorithm>
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

constexpr int64_t kBucketElements = int64_t(1) << 15;  // a bucket fits in L2
constexpr uint64_t kMaxBuckets = 4096;

/// A uniform random permutation of src[0..count) into dst (Rao-Sandelius): every element goes
/// to an independent uniform bucket (one sequential pass, B write streams), then each bucket,
/// small enough for the cache, is Fisher-Yates shuffled with its own stream.  Uniform because
/// the bucket sizes are multinomial and the order inside each bucket is uniform.  6x faster
/// than one Fisher-Yates over a matrix far larger than the cache (random memory access).
/// Small inputs (one bucket) are a plain Fisher-Yates of a copy.
template <class T>
void shuffle_into(const T* src, T* dst, int64_t count, uint64_t seed) {
    const uint64_t buckets = std::min<uint64_t>(kMaxBuckets, uint64_t(std::max<int64_t>(1, count / kBucketElements)));
    if (buckets == 1) {
        std::copy(src, src + count, dst);
        fisher_yates(dst, count, seed);
        return;
    }
    std::vector<uint16_t> which(static_cast<size_t>(count));
    std::vector<int64_t> start(buckets + 1, 0);
    rng::Xoshiro256 gen(seed);
    for (int64_t i = 0; i < count; ++i) {
        const uint16_t b = uint16_t(gen.below(buckets));
        which[size_t(i)] = b;
        ++start[b + 1];
    }
    for (uint64_t b = 0; b < buckets; ++b) start[b + 1] += start[b];
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < count; ++i) dst[next[which[size_t(i)]]++] = src[i];
    for (uint64_t b = 0; b < buckets; ++b)
        fisher_yates(dst + start[b], start[b + 1] - start[b], rng::stream_seed(seed, b));
}

template <class T>
Spectrum shuffled(const MatrixView& w, const SpectrumOptions& options, uint64_t seed) {
    const int64_t count = w.rows * w.cols;
    std::vector<T> buffer(static_cast<size_t>(count));
    {
        std::vector<T> source(static_cast<size_t>(count));
        detail::copy_block(w, 0, w.rows, 0, w.cols, source.data());  // row-major, ld = cols
        shuffle_into(source.data(), buffer.data(), count, seed);
    }
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
    std::vector<int64_t> identity(static_cast<size_t>(count)), index(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) identity[size_t(i)] = i;
    shuffle_into(identity.data(), index.data(), count, seed);
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
