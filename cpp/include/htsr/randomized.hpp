// Top-k eigenvalues of X = W^T W by a randomized range finder (Halko, Martinsson & Tropp,
// "Finding structure with randomness", SIAM Review 53(2), 2011, Algorithm 4.4 with QR
// re-orthonormalisation after every application of W or W^T).
#pragma once
#include "htsr/spectrum.hpp"

namespace htsr {

/// Y = W Omega (Omega: M x l Gaussian, l = min(k + p, M), seeded), then q times
/// Q = qr(Y), Z = qr(W^T Q), Y = W Z; finally the singular values of B = Q^T W, squared.
/// Returns the top k ascending with `complete = false`; `trace` is the exact ||W||_F^2.
/// Accuracy: the k-th value is biased low by ~1e-3..2e-2 relative on heavy-tailed matrices
/// with q = 4, p = k (spectral_methods.md §3.2); the top ten are much better.
Spectrum randomized_spectrum(const MatrixView& w, const SpectrumOptions& options);

}  // namespace htsr
