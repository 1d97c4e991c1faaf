// Entry points of the CUDA backend: device detection, the GPU batch, and the same orchestration
// on CPU kernels (for tests on machines without a GPU).
#include "htsr/cuda.hpp"

#include <stdexcept>

#include "cpu_kernels.hpp"
#include "orchestrate.hpp"
#ifdef HTSR_HAVE_CUDA
#include "cuda_kernels.hpp"
#endif

namespace htsr {

bool cuda_available() {
#ifdef HTSR_HAVE_CUDA
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
    return false;
#endif
}

namespace {
void check_gram(const std::vector<MatrixView>& ws, const SpectrumOptions& o) {
    if (o.method != Method::Gram) throw std::invalid_argument("the CUDA backend computes method 'gram' only");
    for (size_t i = 0; i < ws.size(); ++i) {
        try {
            validate(ws[i]);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("matrix " + std::to_string(i) + ": " + e.what());
        }
    }
}
}  // namespace

std::vector<Spectrum> cuda_spectrum_batch(const std::vector<MatrixView>& ws, const SpectrumOptions& o) {
    check_gram(ws, o);
#ifdef HTSR_HAVE_CUDA
    if (o.precision == Precision::Float64) {
        cuda_detail::CudaKernels<double> k;
        return cuda_detail::orchestrate<double>(ws, o.normalize, k, nullptr);
    }
    cuda_detail::CudaKernels<float> k;
    return cuda_detail::orchestrate<float>(ws, o.normalize, k, nullptr);
#else
    throw std::runtime_error("htsr was built without the CUDA backend (HTSR_CUDA)");
#endif
}

std::vector<Spectrum> orchestrate_on_cpu(const std::vector<MatrixView>& ws, const SpectrumOptions& o,
                                         std::vector<std::string>* solvers) {
    check_gram(ws, o);
    constexpr int64_t budget = int64_t(1) << 28;  // bytes of Grams per chunk
    if (o.precision == Precision::Float64) {
        cuda_detail::CpuKernels<double> k(budget);
        return cuda_detail::orchestrate<double>(ws, o.normalize, k, solvers);
    }
    cuda_detail::CpuKernels<float> k(budget);
    return cuda_detail::orchestrate<float>(ws, o.normalize, k, solvers);
}

}  // namespace htsr
