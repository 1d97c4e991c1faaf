// Native CUDA backend of the exact Gram route (cuBLAS ?syrk for X = W^T W, cuSOLVER ?syevd
// values only, ?syevjBatched for many small same-shape matrices). Built when CMake finds a
// CUDA toolkit with cuBLAS and cuSOLVER (HTSR_CUDA=AUTO|ON); spectrum_batch uses it at run time
// when cuda_available() (a device is visible), else the CPU path.
#pragma once
#include <string>
#include <vector>

#include "htsr/spectrum.hpp"

namespace htsr {

/// True when this build has the CUDA backend and cudaGetDeviceCount() reports a device.
bool cuda_available();

/// Exact Gram spectra on the GPU (method Gram only; float32 or float64 as options.precision).
/// Throws std::runtime_error when the build has no CUDA backend or a CUDA call fails.
std::vector<Spectrum> cuda_spectrum_batch(const std::vector<MatrixView>& ws, const SpectrumOptions& options);

/// The CUDA backend's orchestration (grouping by shape, memory-bounded chunks, Gram, batched
/// or single eigensolver per group, finishing) run with CPU kernels (OpenBLAS ?syrk, LAPACK
/// ?syevd for both solvers). `solvers` receives the solver chosen per matrix ("syevd" or
/// "syevjBatched"). For testing the orchestration on machines without a GPU.
std::vector<Spectrum> orchestrate_on_cpu(const std::vector<MatrixView>& ws, const SpectrumOptions& options,
                                         std::vector<std::string>* solvers);

}  // namespace htsr
