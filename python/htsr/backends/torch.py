"""torch backend of the exact spectra: ``htsr.spectrum(W, device="cuda"|"cpu"|"mps")``.

Numerics (same conventions as the native core, python/htsr/core.py):

* the stored dtype goes to the device as-is (bf16/fp16 stay 16-bit on the wire), then is widened
  on the device, exactly, to the working precision: float32 (``precision="float32"``) or
  float64. The Gram X = A^T A (A: N x M, M the smaller side) is a float32 or float64 matmul,
  so it accumulates in at least float32 and is never stored in bf16 (a bf16 Gram moves the top
  eigenvalues by 1e-3 and alpha by up to 0.08, shared/reference/spectral_methods.md §3.1).
  TF32 is switched off for these matmuls.
* eigenvalues: ``torch.linalg.eigvalsh`` (values only; cuSOLVER syevd on CUDA, LAPACK ?syevd on
  CPU), batched over same-shape matrices; negative rounding values clipped to 0; /N when
  normalize; float64 ascending out. ``trace`` = sum of the Gram diagonal in float64.
  ``method="svd"``: ``torch.linalg.svdvals`` squared. The randomized method is native only.
* MPS has no float64 and no eigvalsh: the Gram is formed on the device, the eigenvalues on the CPU.
* transfers: on CUDA the host tensors are pinned and copied on a side stream one chunk ahead of
  the compute stream (reads overlap device work). Device memory is bounded: a chunk of
  same-shape matrices holds at most ``max_bytes`` (default: 1/4 of the free device memory,
  1 GiB elsewhere) of inputs + Grams; on out-of-memory the chunk runs on the native CPU path
  with a warning.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np

_METHODS = ("gram", "svd")


@dataclasses.dataclass
class TorchSpectrum:
    """Same fields as ``htsr.Spectrum`` (exact routes: complete, no errors)."""
    eigenvalues: np.ndarray
    trace: float
    N: int
    M: int
    complete: bool = True
    errors: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    k_computed: int = 0
    device: str = "cpu"


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed in the test venv
        raise ImportError("device=... needs PyTorch (pip install htsr[torch])") from exc
    return torch


def _device(torch, device: str):
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; expected 'cpu', 'cuda' or 'mps'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: torch sees no CUDA device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: torch sees no MPS device")
    return dev


def _host_tensor(torch, W, dtype, what):
    """W as a 2-D host tensor of its stored dtype (bf16/fp16 bits reinterpreted, not converted)."""
    if isinstance(W, torch.Tensor):
        t = W.detach()
        if t.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            raise ValueError(f"{what}: unsupported dtype {t.dtype}")
    else:
        from ..core import _matrix
        a, stored = _matrix(W, dtype, what)
        with warnings.catch_warnings():  # read-only memory maps: the tensor is never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            if stored in ("bfloat16", "float16"):
                t = torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(getattr(torch, stored))
            else:
                t = torch.from_numpy(a)
    if t.ndim != 2 or t.numel() == 0:
        raise ValueError(f"{what}: expected a non-empty 2-D matrix, got shape {tuple(t.shape)}")
    return t


def _spectra_on_device(torch, stack, dev, method, precision, normalize):
    """Eigenvalues of a (B, rows, cols) host stack on `dev` -> list of TorchSpectrum."""
    B, rows, cols = stack.shape
    N, M = max(rows, cols), min(rows, cols)
    work = torch.float64 if precision == "float64" and dev.type != "mps" else torch.float32
    x = stack.to(dev, non_blocking=True).to(work)          # exact widening on the device
    if not bool(torch.isfinite(x).all()):
        raise ValueError("matrix contains NaN or Inf")
    a = x if rows >= cols else x.transpose(1, 2)            # (B, N, M)
    if method == "svd":
        vals = torch.linalg.svdvals(a).double() ** 2
        trace = (a.double() ** 2).sum(dim=(1, 2))
    else:
        gram = a.transpose(1, 2) @ a                        # (B, M, M), float32/64 accumulation
        if not bool(torch.isfinite(gram).all()):
            raise OverflowError("the float32 Gram matrix overflows; use precision='float64'")
        trace = torch.diagonal(gram, dim1=1, dim2=2).double().sum(dim=1)
        if dev.type == "mps":
            gram = gram.cpu()
        vals = torch.linalg.eigvalsh(gram).double()
    scale = 1.0 / N if normalize else 1.0
    vals = torch.clamp(vals, min=0.0).cpu().numpy() * scale
    trace = trace.cpu().numpy() * scale
    return [TorchSpectrum(np.sort(vals[i]), float(trace[i]), N, M, device=str(dev)) for i in range(B)]


def _chunks(torch, idx, shape, itemsize, work_itemsize, dev, max_bytes):
    rows, cols = shape
    per = rows * cols * (itemsize + work_itemsize) + min(rows, cols) ** 2 * work_itemsize * 2
    if max_bytes is None:
        max_bytes = torch.cuda.mem_get_info(dev)[0] // 4 if dev.type == "cuda" else 1 << 30
    n = max(1, int(max_bytes // max(per, 1)))
    return [idx[i:i + n] for i in range(0, len(idx), n)]


def spectrum_batch(Ws: Sequence, *, method: str = "gram", precision: str = "float32", normalize: bool = False,
                   k=None, dtype: str | None = None, device: str = "cpu", max_bytes: int | None = None) -> list:
    """Exact spectra of many matrices on a torch device (see the module docstring)."""
    torch = _torch()
    if method not in _METHODS:
        raise ValueError(f"device=... supports method {_METHODS} (the randomized method is native only), got {method!r}")
    if k is not None:
        raise ValueError("k applies only to method='randomized'")
    if precision not in ("float32", "float64"):
        raise ValueError(f"unknown precision {precision!r}; expected 'float32' or 'float64'")
    dev = _device(torch, device)
    hosts = [_host_tensor(torch, W, dtype, f"matrix {i}") for i, W in enumerate(Ws)]
    groups: dict = {}
    for i, t in enumerate(hosts):
        groups.setdefault((tuple(t.shape), t.dtype), []).append(i)
    out: list = [None] * len(hosts)
    work_itemsize = 8 if precision == "float64" else 4
    cuda = dev.type == "cuda"
    copy_stream = torch.cuda.Stream(dev) if cuda else None
    jobs = [(key, chunk) for key, idx in groups.items()
            for chunk in _chunks(torch, idx, key[0], hosts[idx[0]].element_size(), work_itemsize, dev, max_bytes)]

    def stage(chunk):
        """Stack (pinned on CUDA) and start the host->device copy on the side stream."""
        stack = torch.stack([hosts[i].contiguous() for i in chunk])
        if not cuda:
            return stack, None
        stack = stack.pin_memory()
        with torch.cuda.stream(copy_stream):
            on_dev = stack.to(dev, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(copy_stream)
        return on_dev, ready

    old_tf32 = torch.backends.cuda.matmul.allow_tf32 if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        staged = stage(jobs[0][1]) if jobs else None
        for j, (_key, chunk) in enumerate(jobs):
            stack, ready = staged
            staged = stage(jobs[j + 1][1]) if j + 1 < len(jobs) else None  # next copy overlaps this compute
            if ready is not None:
                torch.cuda.current_stream(dev).wait_event(ready)
            try:
                res = _spectra_on_device(torch, stack, dev, method, precision, normalize)
            except torch.OutOfMemoryError:
                warnings.warn(f"device {dev}: out of memory for {len(chunk)} matrices of shape {tuple(stack.shape[1:])}; "
                              "computing them on the CPU (native path)", RuntimeWarning, stacklevel=2)
                del stack
                if cuda:
                    torch.cuda.empty_cache()
                from .. import core
                res = core.spectrum_batch([hosts[i] for i in chunk], method=method, precision=precision,
                                          normalize=normalize)
            except ValueError as exc:
                raise ValueError(f"matrix {chunk[0]}..{chunk[-1]}: {exc}") from None
            for i, r in zip(chunk, res):
                out[i] = r
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return out


def spectrum(W, **options) -> TorchSpectrum:
    """Exact spectrum of one matrix on a torch device (see the module docstring)."""
    try:
        return spectrum_batch([W], **options)[0]
    except ValueError as exc:
        raise ValueError(str(exc).replace("matrix 0..0: ", "").replace("matrix 0: ", "W: ")) from None
