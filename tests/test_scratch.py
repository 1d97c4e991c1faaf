"""Scratch reuse (cpp/include/htsr/scratch.hpp): a thread that analyses matrix after matrix keeps
its freed Gram / conversion buffers. Reused memory holds the previous matrix's data (or NaNs of
a failed one), so every spectrum must be bit for bit the one computed in fresh memory, and the
memory must be given back when reuse is turned off."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import htsr
from htsr import _core

# float32 Gram of M = 1024 is 4 MiB: the smallest "large" block that is kept
SHAPES = [(1500, 1200), (1100, 1024), (1300, 1100), (1024, 1536)]


def _matrices():
    rng = np.random.default_rng(7)
    return [(rng.standard_t(3, size=s) / np.sqrt(s[1])).astype(np.float32) for s in SHAPES]


def _bf16(W):
    return (W.view(np.uint32) >> 16).astype(np.uint16)


CASES = [
    pytest.param(dict(precision="float32"), False, id="f32"),
    pytest.param(dict(precision="float64"), False, id="f64-blocks"),
    pytest.param(dict(precision="float32", dtype="bfloat16"), True, id="bf16-whole-copy"),
    pytest.param(dict(precision="float64", dtype="bfloat16"), True, id="bf16-f64-blocks"),
]


@pytest.fixture
def reuse_off():
    yield
    _core.set_scratch_reuse(False)


@pytest.mark.parametrize("kw, as_bf16", CASES)
def test_reused_buffers_give_the_fresh_spectra_bit_for_bit(kw, as_bf16, reuse_off):
    mats = [_bf16(W) if as_bf16 else W for W in _matrices()]
    _core.set_scratch_reuse(False)
    fresh = [htsr.spectrum(W, **kw).eigenvalues for W in mats]
    _core.set_scratch_reuse(True)
    # larger, smaller, larger again: every request either reuses a held block or outgrows them
    for W, ref in zip(mats + mats[::-1], fresh + fresh[::-1]):
        got = htsr.spectrum(W, **kw).eigenvalues
        assert np.array_equal(got, ref)
    assert _core.scratch_bytes() > 0


def test_a_failed_matrix_leaves_no_trace_in_reused_memory(reuse_off):
    W = _matrices()[0]
    ref = htsr.spectrum(W).eigenvalues
    _core.set_scratch_reuse(True)
    bad = W.copy()
    bad[3, 5] = np.nan          # its Gram (row/column 5 all NaN) goes back to the thread's blocks
    with pytest.raises(ValueError, match="NaN"):
        htsr.spectrum(bad)
    assert _core.scratch_bytes() >= 1200 * 1200 * 4
    assert np.array_equal(htsr.spectrum(W).eigenvalues, ref)


def test_held_memory_is_bounded_per_thread_and_freed_when_turned_off(reuse_off):
    small, large = np.ones((1100, 1024), np.float32), np.ones((1600, 1600), np.float32)
    assert _core.scratch_bytes() == 0                  # off by default: nothing held
    htsr.spectrum(large)
    assert _core.scratch_bytes() == 0
    _core.set_scratch_reuse(True)
    htsr.spectrum(small, dtype="float32")
    held_small = _core.scratch_bytes()
    assert 1024 * 1024 * 4 <= held_small <= 2 * (1024 * 1024 * 4 + (2 << 20))  # <= 2 blocks of its size
    htsr.spectrum(large)
    held_large = _core.scratch_bytes()
    # the small blocks were dropped, not kept beside the large ones
    assert 1600 * 1600 * 4 <= held_large <= 2 * (1600 * 1600 * 4 + (2 << 20))
    other = []
    t = threading.Thread(target=lambda: other.append(_core.scratch_bytes()))
    t.start()
    t.join()
    assert other == [0]                                 # per thread
    _core.set_scratch_reuse(False)
    assert _core.scratch_bytes() == 0


def test_analyze_hands_back_the_calling_threads_scratch(tmp_path):
    from safetensors.numpy import save_file
    mats = _matrices()
    save_file({f"layer{i}.weight": W for i, W in enumerate(mats)}, str(tmp_path / "model.safetensors"))
    df = htsr.analyze(str(tmp_path / "model.safetensors"), threads=1, precision="float32")
    assert _core.scratch_bytes() == 0
    ref = {f"layer{i}": htsr.spectrum(W).eigenvalues.max() for i, W in enumerate(mats)}
    assert sorted(df["name"]) == sorted(ref)
    for name, lam in zip(df["name"], df["lambda_max"]):
        assert lam == ref[name]
