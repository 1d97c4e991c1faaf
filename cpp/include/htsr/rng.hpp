// Counter-based seeding and a small, fast, portable generator, so that every random stream
// (one per shuffled matrix, one per bootstrap replicate) is fixed by (seed, stream id) alone
// and results never depend on the thread count or on the standard library's distributions.
#pragma once
#include <cstdint>

namespace htsr::rng {

/// SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective 64-bit mix.
inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/// The seed of stream `stream` under the user seed `seed`.
inline uint64_t stream_seed(uint64_t seed, uint64_t stream) { return splitmix64(splitmix64(seed) ^ splitmix64(~stream)); }

/// xoshiro256** 1.0 (Blackman & Vigna 2018), state filled by SplitMix64 from one 64-bit seed.
class Xoshiro256 {
  public:
    explicit Xoshiro256(uint64_t seed) {
        uint64_t z = seed;
        for (auto& w : s_) {
            w = splitmix64(z);
            z += 0x9E3779B97F4A7C15ULL;
        }
    }
    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
        s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
        s_[2] ^= t; s_[3] = rotl(s_[3], 45);
        return result;
    }
    /// Uniform double in [0, 1) with 53 random bits.
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }
    /// Uniform integer in [0, bound) without bias (Lemire 2019, multiply-shift with rejection).
    uint64_t below(uint64_t bound) {
        __uint128_t m = (__uint128_t)next() * bound;
        uint64_t low = uint64_t(m);
        if (low < bound) {
            const uint64_t threshold = (0 - bound) % bound;
            while (low < threshold) {
                m = (__uint128_t)next() * bound;
                low = uint64_t(m);
            }
        }
        return uint64_t(m >> 64);
    }

  private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

}  // namespace htsr::rng
