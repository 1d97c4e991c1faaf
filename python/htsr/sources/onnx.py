"""ONNX models (``.onnx``, with or without external data), read with the ``onnx`` package.

The graph is loaded with ``onnx.load(load_external_data=False)`` (initializers stored inside the
``.onnx`` file come with it); external initializers are memory-mapped from their data files,
each location checked to resolve inside the model's folder and its ``offset + length`` against
the file.  Weight matrices are found through the graph (main graph and subgraphs):

==================  ============  =====================================================
node                weight input  layout / dequantization
==================  ============  =====================================================
MatMul              B (1)         ``[in, out]`` (transposed against PyTorch: same spectrum)
Gemm                B (1)         ``[out, in]`` with ``transB=1``, else ``[in, out]``
Conv                W (1)         ``[out, in/g, *k]`` (conv1d / conv2d)
Gather              data (0)      ``[vocab, d]`` embedding
DequantizeLinear    x (0)         ``(x - zero_point) * scale``, per tensor, per ``axis`` or in
                                  ``block_size`` blocks along ``axis``; feeding one of the above
MatMulInteger       B (1)         ``(B - B_zero_point) * s``, ``s`` the initializer multiplied
                                  by ``A``'s ``DynamicQuantizeLinear`` scale in a ``Mul``
QLinearMatMul       b (3)         ``(b - b_zero_point (5)) * b_scale (4)``
MatMulNBits         B (1)         com.microsoft, ``bits=4``: ``B`` uint8 ``[N, K/bs, bs/2]`` (low
                                  nibble first), ``scales`` ``[N, K/bs]``, packed 4-bit
                                  ``zero_points`` (default 8): ``[N, K]`` = ``[out, in]``
==================  ============  =====================================================

Dequantization is exact in float32 (the formulas of the ONNX / ONNX Runtime operator specs);
``stored_dtype`` is ``qint8`` / ``quint8`` / ``qint4`` / ``quint4`` for quantized weights.
Names: the initializer's name when it is a module path (``embeddings.word_embeddings.weight``),
else the module path in the node's ``pkg.torch.onnx.name_scopes`` metadata (torch dynamo export),
else the node name's path (TorchScript export: ``/encoder/layer.0/attention/self/query/MatMul`` ->
``encoder.layer.0.attention.self.query``), else the initializer name.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import math
import os

import numpy as np

from .base import Entry, Format
from .dtypes import convert
from .files import checkpoint_root, inside, require_size
from .naming import natural_key

# ONNX TensorProto data type -> (our dtype name, numpy dtype of the stored bits)
_TYPES = {1: ("float32", "<f4"), 10: ("float16", "<f2"), 11: ("float64", "<f8"),
          16: ("bfloat16", "<u2"), 17: ("float8_e4m3fn", "u1"), 18: ("float8_e4m3fnuz", "u1"),
          19: ("float8_e5m2", "u1"), 20: ("float8_e5m2fnuz", "u1"), 2: ("uint8", "u1"),
          3: ("int8", "i1"), 4: ("uint16", "<u2"), 5: ("int16", "<i2"), 6: ("int32", "<i4"),
          7: ("int64", "<i8"), 12: ("uint32", "<u4"), 13: ("uint64", "<u8"),
          21: ("uint4", "u1"), 22: ("int4", "u1")}
_QNAME = {"int8": "qint8", "uint8": "quint8", "int4": "qint4", "uint4": "quint4"}
_GENERATED = ("onnx::", "val_", "_val_")


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("reading .onnx models needs the onnx package "
                          "(pip install 'htsr[onnx]')") from None
    return onnx


class _Model:
    """Initializers (lazily read arrays) and nodes of an ONNX model, subgraphs included."""

    def __init__(self, path: str):
        onnx = _import_onnx()
        self.path = path
        try:
            self.proto = onnx.load(path, load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends
            raise ValueError(f"{path}: not a valid ONNX model: {exc}") from None
        self.folder = os.path.dirname(os.path.abspath(path))
        self.root = checkpoint_root(self.folder)
        self.inits, self.nodes = {}, []
        self._walk(self.proto.graph)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def _walk(self, g):
        for t in g.initializer:
            self.inits.setdefault(t.name, t)
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits.setdefault(n.output[0], n.attribute[0].t)
            else:
                self.nodes.append(n)
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    self._walk(sub)

    def shape(self, name) -> tuple:
        return tuple(int(d) for d in self.inits[name].dims)

    def dtype(self, name) -> str:
        t = self.inits[name]
        if t.data_type not in _TYPES:
            raise ValueError(f"{self.path}: initializer {name!r}: ONNX data type {t.data_type} is "
                             "not supported")
        return _TYPES[t.data_type][0]

    def array(self, name) -> np.ndarray:
        """Stored values of initializer ``name`` (memory-mapped when external; 4-bit types
        unpacked to one value per byte, sign-extended for int4)."""
        t = self.inits[name]
        dname, npdt = _TYPES[t.data_type] if t.data_type in _TYPES else (None, None)
        what = f"{self.path}: initializer {name!r}"
        if dname is None:
            raise ValueError(f"{what}: ONNX data type {t.data_type} is not supported")
        shape = self.shape(name)
        n = math.prod(shape)
        nbytes = (n + 1) // 2 if dname in ("uint4", "int4") else n * np.dtype(npdt).itemsize
        if t.data_location == 1:  # EXTERNAL
            a = self._external(t, nbytes, what)
        elif t.HasField("raw_data"):
            if len(t.raw_data) != nbytes:
                raise ValueError(f"{what}: raw_data holds {len(t.raw_data)} bytes, {shape} "
                                 f"{dname} needs {nbytes}")
            a = np.frombuffer(t.raw_data, dtype=np.uint8)
        else:
            from onnx import numpy_helper

            return np.asarray(numpy_helper.to_array(t)).reshape(shape)
        if dname in ("uint4", "int4"):
            u = np.empty(2 * a.size, np.uint8)
            u[0::2], u[1::2] = a & 15, a >> 4
            u = u[:n]
            return (u.astype(np.int8) << 4 >> 4 if dname == "int4" else u).reshape(shape)
        return a.view(np.dtype(npdt)).reshape(shape)

    def _external(self, t, nbytes: int, what: str) -> np.ndarray:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location")
        if not loc:
            raise ValueError(f"{what}: external data without a location")
        f = inside(os.path.join(self.folder, loc), self.root,
                   f"{what}: external data file {loc!r}")
        if not os.path.isfile(f):
            raise ValueError(f"{what}: external data file {f} does not exist")
        try:
            off, length = int(info.get("offset", 0)), int(info.get("length", nbytes))
        except ValueError:
            raise ValueError(f"{what}: invalid external data offset/length") from None
        if length != nbytes or off < 0:
            raise ValueError(f"{what}: external data length {length} != {nbytes} bytes needed")
        require_size(f, off + nbytes, f"initializer {t.name!r} of {self.path}")
        return np.memmap(f, dtype=np.uint8, mode="r", offset=off, shape=(nbytes,))

    def attr(self, node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return a.i if a.type == 2 else a.f if a.type == 1 else a.s if a.type == 3 else a
        return default


def _module_name(m: _Model, node, init: str) -> str:
    if not init.startswith(_GENERATED) and "." in init:
        return init[: -len(".weight")] if init.endswith(".weight") else init
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
                if scopes:
                    return str(scopes[-1])
            except (ValueError, SyntaxError):
                pass
    parts = [c for c in node.name.split("/") if c]
    if len(parts) > 1:
        return ".".join(parts[:-1])
    return init


# ---------------------------------------------------------------------------------------------
# dequantization (float32, exact)
# ---------------------------------------------------------------------------------------------
def _broadcast(v: np.ndarray, shape, axis: int, block: int) -> np.ndarray:
    """Per-tensor / per-axis / blocked (``block`` along ``axis``) parameter -> ``shape``."""
    v = np.asarray(v)
    if v.size == 1:
        return v.reshape(())
    axis %= len(shape)
    if block:
        v = np.repeat(v, block, axis=axis)
        v = np.take(v, np.arange(shape[axis]), axis=axis)
        return v
    return v.reshape([-1 if i == axis else 1 for i in range(len(shape))])


def _dq(q: np.ndarray, scale: np.ndarray, zp, axis: int, block: int) -> np.ndarray:
    """``(q - zp) * scale`` in float32, parameters broadcast along ``axis``."""
    s = _broadcast(scale, q.shape, axis, block).astype(np.float32)
    x = q.astype(np.float32)
    if zp is not None:
        x -= _broadcast(zp, q.shape, axis, block).astype(np.float32)
    return x * s


def _nbits(m: _Model, node) -> np.ndarray:
    """com.microsoft MatMulNBits (bits=4) -> float32 ``[N, K]``."""
    K, N = m.attr(node, "K"), m.attr(node, "N")
    bits, bs = m.attr(node, "bits", 4), m.attr(node, "block_size")
    if bits != 4 or not K or not N or not bs:
        raise ValueError(f"{m.path}: node {node.name!r}: MatMulNBits with bits={bits} is not "
                         "supported (4 only)")
    B = m.array(node.input[1])
    nb = B.shape[1]
    codes = np.empty((N, nb, bs), np.uint8)
    codes[..., 0::2], codes[..., 1::2] = B & 15, B >> 4
    scales = m.array(node.input[2]).reshape(N, nb).astype(np.float32)
    if len(node.input) > 3 and node.input[3]:
        zp = m.array(node.input[3])
        if zp.dtype == np.uint8 and zp.size == N * ((nb + 1) // 2):
            z = np.empty((N, 2 * ((nb + 1) // 2)), np.uint8)
            z[:, 0::2], z[:, 1::2] = zp.reshape(N, -1) & 15, zp.reshape(N, -1) >> 4
            zp = z[:, :nb]
        zp = zp.reshape(N, nb).astype(np.float32)
    else:
        zp = np.float32(8)
    W = (codes.astype(np.float32) - np.asarray(zp)[..., None]) * scales[..., None]
    return W.reshape(N, nb * bs)[:, :K]


def _integer_scale(m: _Model, node) -> str | None:
    """The weight-scale initializer of a MatMulInteger: multiplied in a ``Mul`` by the scale of
    the ``DynamicQuantizeLinear`` that quantizes input A (onnxruntime's quantize_dynamic)."""
    dq = m.producer.get(node.input[0])
    if dq is None or dq.op_type != "DynamicQuantizeLinear":
        return None
    for mul in m.consumers.get(dq.output[1], []):
        if mul.op_type == "Mul":
            other = [i for i in mul.input if i != dq.output[1]]
            if other and other[0] in m.inits:
                return other[0]
    return None


# ---------------------------------------------------------------------------------------------
# weights found through the graph
# ---------------------------------------------------------------------------------------------
_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0}


def _weights(m: _Model):
    """``_weight`` of every node, each weight once."""
    seen = set()
    for n in m.nodes:
        got = _weight(m, n)
        if got is None or got[0] in seen:
            continue
        seen.add(got[0])
        yield got


def _weight(m: _Model, n):
    """``(key, name, shape, dtype, getter, layer type, transposed)`` of the weight node ``n``
    uses, or None.  ``[in, out]`` weights are marked transposed (presented ``[out, in]``)."""
    op = n.op_type
    if op in _WEIGHT_INPUT and len(n.input) > _WEIGHT_INPUT[op]:
        w = n.input[_WEIGHT_INPUT[op]]
        ltype = {"MatMul": "dense", "Gemm": "dense", "Gather": "embedding"}.get(op)
        tr = op == "MatMul" or (op == "Gemm" and not m.attr(n, "transB", 0))
        dq = m.producer.get(w)  # QDQ: DequantizeLinear(x_init, scale, zero_point) -> weight
        if w in m.inits:
            dtype = m.dtype(w)
            x, get = w, functools.partial(m.array, w)
            if "float" not in dtype:  # integer tables (token ids, shapes), not weights
                return None
        elif (dq is not None and dq.op_type == "DequantizeLinear"
              and all(i in m.inits for i in dq.input if i)):
            x = dq.input[0]
            zp = dq.input[2] if len(dq.input) > 2 and dq.input[2] else None
            dtype = _QNAME.get(m.dtype(x))
            get = functools.partial(_get_dq, m, x, dq.input[1], zp, m.attr(dq, "axis", 1),
                                    m.attr(dq, "block_size", 0))
        else:
            return None
        nd = len(m.shape(x))
        if nd not in ((3, 4) if op == "Conv" else (2,)):
            return None
        ltype = ltype or ("conv2d" if nd == 4 else "conv1d")
        return x, _module_name(m, n, x), m.shape(x), dtype, get, ltype, tr
    if op == "MatMulInteger" and len(n.input) > 1 and _consts(m, n.input[1:4:2]):
        b, s = n.input[1], _integer_scale(m, n)
        if s is None:
            raise ValueError(f"{m.path}: node {n.name!r}: MatMulInteger weight {b!r} without a "
                             "recognisable scale (expected DynamicQuantizeLinear -> Mul)")
        zp = n.input[3] if len(n.input) > 3 and n.input[3] else None
        return b, _module_name(m, n, b), m.shape(b), _QNAME.get(m.dtype(b)), \
            functools.partial(_get_dq, m, b, s, zp, 1, 0), "dense", True
    if op == "QLinearMatMul" and len(n.input) > 5 and _consts(m, n.input[3:6]):
        b = n.input[3]
        return b, _module_name(m, n, b), m.shape(b), _QNAME.get(m.dtype(b)), \
            functools.partial(_get_dq, m, b, n.input[4], n.input[5], 1, 0), "dense", True
    if op == "MatMulNBits" and len(n.input) > 2 and _consts(m, n.input[1:4]):
        K, N = m.attr(n, "K"), m.attr(n, "N")
        return n.input[1], _module_name(m, n, n.input[1]), (N, K), "quint4", \
            functools.partial(_nbits, m, n), "dense", False
    return None


def _consts(m: _Model, names) -> bool:
    """Every named (non-empty) input is an initializer (a weight, not a computed value)."""
    return all(i in m.inits for i in names if i)


def _get_dq(m: _Model, x, scale, zp, axis, block) -> np.ndarray:
    s = convert(m.array(scale), m.dtype(scale))
    return _dq(m.array(x), s, m.array(zp) if zp else None, axis, block)


@functools.lru_cache(maxsize=4)
def _model(path: str, mtime: float, size: int) -> _Model:
    return _Model(path)


def onnx_entries(files: list[str], index: str | None = None) -> list[Entry]:
    if len(files) > 1:
        names = ", ".join(os.path.basename(f) for f in files)
        raise ValueError(f"{os.path.dirname(files[0]) or '.'}: holds several ONNX models "
                         f"({names}); pass one file")
    out: dict[str, Entry] = {}
    for p in files:
        st = os.stat(p)
        m = _model(os.fspath(p), st.st_mtime, st.st_size)
        with _malformed(p):
            weights = list(_weights(m))
        for init, name, shape, dtype, get, ltype, tr in weights:
            key = f"{name}.weight" if f"{name}.weight" not in out else f"{init}.weight"
            if dtype is None:  # an integer weight without scales: not analysable
                continue
            if tr:
                shape, get = shape[::-1], functools.partial(_transpose, get)
            out[key] = Entry(key, tuple(shape), dtype, "float", p,
                             functools.partial(_guarded, get, p))
    return sorted(out.values(), key=lambda e: natural_key(e.key))


@contextlib.contextmanager
def _malformed(path):
    """Structural surprises of an untrusted graph (a name that is not UTF-8 comes back as bytes,
    a missing input, a wrong attribute type) as a ValueError naming the file."""
    try:
        yield
    except (ValueError, ImportError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: malformed ONNX model: {type(exc).__name__}: {exc}") from None


def _guarded(get, path):
    with _malformed(path):
        return get()


def _transpose(get):
    return get().T


FORMAT = Format("onnx", (".onnx",), onnx_entries, looks_for="*.onnx")
