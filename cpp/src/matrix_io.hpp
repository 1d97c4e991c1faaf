// Internal helpers shared by the spectrum kernels: converting blocks of a MatrixView to a
// dense buffer of the working precision, and the squared Frobenius norm (which doubles as
// the NaN/Inf check of the input).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "htsr/spectrum.hpp"

namespace htsr::detail {

/// Rows [r0, r1) x columns [c0, c1) of `w`, converted to T, written row-major with
/// leading dimension (c1 - c0) into dst.
template <class T>
void copy_block(const MatrixView& w, int64_t r0, int64_t r1, int64_t c0, int64_t c1, T* dst) {
    const int64_t width = c1 - c0;
    for (int64_t r = r0; r < r1; ++r) {
        T* out = dst + (r - r0) * width;
        const int64_t base = r * w.ld + c0;
        switch (w.dtype) {
            case DType::F32: {
                const float* in = static_cast<const float*>(w.data) + base;
                if constexpr (std::is_same_v<T, float>) std::memcpy(out, in, width * sizeof(float));
                else for (int64_t c = 0; c < width; ++c) out[c] = T(in[c]);
                break;
            }
            case DType::F64: {
                const double* in = static_cast<const double*>(w.data) + base;
                if constexpr (std::is_same_v<T, double>) std::memcpy(out, in, width * sizeof(double));
                else for (int64_t c = 0; c < width; ++c) out[c] = T(in[c]);
                break;
            }
            case DType::BF16: {
                const uint16_t* in = static_cast<const uint16_t*>(w.data) + base;
                for (int64_t c = 0; c < width; ++c) out[c] = T(bf16_to_float(in[c]));
                break;
            }
            case DType::F16: {
                const uint16_t* in = static_cast<const uint16_t*>(w.data) + base;
                for (int64_t c = 0; c < width; ++c) out[c] = T(f16_to_float(in[c]));
                break;
            }
        }
    }
}

/// True when the stored type is T itself, so BLAS can read the input without a copy.
template <class T>
bool stored_as(const MatrixView& w) {
    return (std::is_same_v<T, float> && w.dtype == DType::F32) || (std::is_same_v<T, double> && w.dtype == DType::F64);
}

/// sum_ij w_ij^2 accumulated in double (four partial sums per row).
/// Throws std::invalid_argument when W holds NaN or Inf.
double sum_of_squares(const MatrixView& w);

}  // namespace htsr::detail
