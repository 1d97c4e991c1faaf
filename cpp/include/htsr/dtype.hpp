// Element types htsr reads, and their exact conversion to float32/float64.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace htsr {

/// Storage type of an input matrix. BF16 and F16 arrive as raw 16-bit patterns.
enum class DType { F32, F64, BF16, F16 };

DType parse_dtype(const std::string& name);   // "float32", "float64", "bfloat16", "float16"
std::size_t dtype_size(DType t);

/// bfloat16 -> float32: the bf16 bits are the top half of the float32 bits (exact).
inline float bf16_to_float(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

/// IEEE binary16 -> float32, exact for every pattern (subnormals, infinities, NaN payloads).
inline float f16_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {  // subnormal half: normalise into a float32 normal
        int e = -1;
        do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
        u = sign | (uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

/// Element (r, c) of a row-major matrix with row stride `ld` (elements), converted to T.
template <class T>
inline T load_element(const void* data, DType t, int64_t ld, int64_t r, int64_t c) {
    const int64_t i = r * ld + c;
    switch (t) {
        case DType::F32: return T(static_cast<const float*>(data)[i]);
        case DType::F64: return T(static_cast<const double*>(data)[i]);
        case DType::BF16: return T(bf16_to_float(static_cast<const uint16_t*>(data)[i]));
        case DType::F16: return T(f16_to_float(static_cast<const uint16_t*>(data)[i]));
    }
    return T(0);
}

}  // namespace htsr
