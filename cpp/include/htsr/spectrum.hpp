// Eigenvalues of X = W^T W for one weight matrix: exact (Gram + symmetric eigensolver, or SVD)
// and top-k randomized (randomized.hpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "htsr/dtype.hpp"
#include "htsr/powerlaw.hpp"

namespace htsr {

/// A read-only row-major matrix: `rows` x `cols`, row stride `ld` elements, unit column stride.
struct MatrixView {
    const void* data = nullptr;
    int64_t rows = 0, cols = 0, ld = 0;
    DType dtype = DType::F32;

    int64_t N() const { return rows > cols ? rows : cols; }  ///< larger dimension
    int64_t M() const { return rows < cols ? rows : cols; }  ///< smaller dimension
};

enum class Method { Gram, SVD, Randomized };
enum class Precision { Float32, Float64 };

Method parse_method(const std::string& name);        // "gram", "svd", "randomized"
Precision parse_precision(const std::string& name);  // "float32", "float64"

struct SpectrumOptions {
    Method method = Method::Gram;
    Precision precision = Precision::Float32;  ///< arithmetic of the Gram / SVD / sketch
    bool normalize = false;                    ///< divide by N (X = W^T W / N)
    int64_t k = 0;                             ///< randomized: number of top eigenvalues (required; adaptive: the first k, 0 = max(16, M/32))
    int64_t oversample = 10;                   ///< randomized: p >= 0, sketch width l = k + min(p, M - k)
    int power_iters = 4;                       ///< randomized: q power iterations
    uint64_t seed = 0;                         ///< randomized: Gaussian test matrix seed
    bool adaptive = false;                     ///< randomized: raise k until the fitted tail lies inside the trusted values
    double rtol = 1e-4;                        ///< adaptive: a value is trusted when errors_i <= rtol * lambda_i
    double margin = 0.5;                       ///< adaptive: accept when n_tail * (1 + margin) <= trusted values
    FitOptions fit;                            ///< adaptive: the power-law fit that decides n_tail
};

struct Spectrum {
    std::vector<double> eigenvalues;  ///< ascending; all M of them, or the top k (randomized)
    double trace = 0;                 ///< ||W||_F^2 (/N if normalized) = sum of all M eigenvalues: the Gram diagonal summed in double (gram), squares summed in double (svd, randomized)
    int64_t N = 0, M = 0;
    bool complete = true;             ///< false when only the top k were computed
    /// randomized only (empty otherwise): a-posteriori bound per value, same order as
    /// `eigenvalues`: lambda~_i <= lambda_i <= lambda~_i + errors_i (randomized.hpp).
    std::vector<double> errors;
    int64_t k_computed = 0;           ///< randomized: the k of the last sketch (adaptive: after raising it)
};

/// All eigenvalues of X = W^T W over the smaller side (M of them), ascending, float64 out.
///   gram: X formed by SYRK in the requested precision (inputs converted block by block, so a
///         bf16/f16/f64 matrix never needs a second full copy), then values-only two-stage
///         ?sytrd_sy2sb + ?sytrd_sb2st + ?sterf (lapack::syevd; one-stage ?syevd for small n).
///         Negative rounding values (X is PSD) are clipped to 0.
///   svd:  values-only ?gesdd of W, squared (the accuracy reference).
///   randomized: top-k, see randomized.hpp.
/// Throws std::invalid_argument for empty input or NaN/Inf entries, std::overflow_error when a
/// float32 Gram overflows, std::runtime_error when LAPACK fails.
Spectrum spectrum(const MatrixView& w, const SpectrumOptions& options);

void validate(const MatrixView& w);  ///< shape/stride checks (not the values)

}  // namespace htsr

#include <atomic>

namespace htsr {

/// spectrum() for many matrices: OpenMP across matrices (largest first), one BLAS thread
/// each, `threads` = 0 for all cores. Results keep the input order. An error in matrix i is
/// rethrown as "matrix i: ..." after the others finished; *cancel stops between matrices.
std::vector<Spectrum> spectrum_batch(const std::vector<MatrixView>& ws, const SpectrumOptions& options, int threads,
                                     const std::atomic<bool>* cancel = nullptr);

}  // namespace htsr
