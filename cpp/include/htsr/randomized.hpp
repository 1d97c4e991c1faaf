// Top-k eigenvalues of X = W^T W by a randomized range finder (Halko, Martinsson & Tropp,
// "Finding structure with randomness", SIAM Review 53(2), 2011, Algorithm 4.4 with QR
// re-orthonormalisation after every application of W or W^T).
#pragma once
#include "htsr/spectrum.hpp"

namespace htsr {

/// Y = W Omega (Omega: M x l Gaussian, l = k + min(p, M - k), seeded mt19937_64), then q times
/// Q = qr(Y), Z = qr(W^T Q), Y = W Z; finally C = Q^T W = U S V^T (thin SVD). Returns the top k
/// of S^2 ascending with `complete = false`; `trace` is the exact ||W||_F^2.
/// Error bound (`errors`, one pass of W more): S^2 are the Rayleigh-Ritz values theta_i of
/// A = W W^T on range(Q) (Cauchy interlacing: theta_i <= lambda_i), Ritz vectors x_i = Q U e_i,
/// residual r_i = ||A x_i - theta_i x_i|| = s_i ||W v_i - s_i x_i||. errors_i = the Kato-Temple
/// bound r_i^2 / (theta_i - theta_{i+1} - errors_{i+1}) when that gap is open and theta_i + r_i <
/// theta_{i-1}, else r_i (Parlett, The Symmetric Eigenvalue Problem, Thm 10.6.1 / 4.5.1), plus
/// 8 eps_T sqrt(theta_1 theta_i) for rounding. It assumes the sketch missed no eigenvalue
/// entirely (probability ~0 for a Gaussian start): then lambda_i - theta_i <= errors_i.
/// Huge or tiny matrices are rescaled by a power of two first (exact), so float32 never overflows.
/// adaptive: k (default max(16, M/32)) doubles until the tail fitted (options.fit) on the k
/// values lies inside the top values with errors_i <= rtol * lambda_i, n_tail * (1 + margin) <= k,
/// k >= 64, and the previous k gave the same fit (n_tail, xmin); the candidates below the
/// trusted values then lost the KS scan to it even with their approximate values. Once
/// l > M/6, or when the sketches so far plus the next would exceed twice the flops of the exact
/// route (N M^2 + 4 M^3; a round is (2q + 3) 2 N M l), the exact Gram route runs instead. A
/// heuristic: the fit cannot see candidates below the k values, so a tail that starts far
/// below them is missed if the top values hold a stable local one (MiniLM's position
/// embeddings, n_tail 284 of 384, show the same 10-point tail at k = 32 and 64; a 2048^2
/// matrix of 32 spikes on a Marchenko-Pastur bulk fits the spikes at every k while the exact
/// fit's tail is 731 values deep in the bulk: accepted with |dalpha| = 0.019).
/// Throws std::invalid_argument for k outside [1, M] (adaptive: [0, M]), oversample < 0,
/// power_iters < 0.
Spectrum randomized_spectrum(const MatrixView& w, const SpectrumOptions& options);

}  // namespace htsr
