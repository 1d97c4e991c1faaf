"""Writes the checked-in seed corpora (tests/fuzz/corpus/<target>/): small valid inputs, each
built from its format's specification, so the fuzzer starts from every branch a good file takes.

    python tests/fuzz/make_seeds.py
"""
import io
import json
import os
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from targets import safetensors_bytes  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
rng = np.random.default_rng(0)
f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731


def npy_bytes(a, fortran=False):
    b = io.BytesIO()
    np.lib.format.write_array(b, np.asfortranarray(a) if fortran else a, version=(1, 0) if not fortran else (2, 0))
    return b.getvalue()


def npz_bytes(members: dict, compression):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression) as z:
        for k, v in members.items():
            z.writestr(k + ".npy", npy_bytes(*v) if isinstance(v, tuple) else npy_bytes(v))
    return b.getvalue()


def gguf_bytes(qtype):
    import tempfile
    import gguf
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.gguf")
        w = gguf.GGUFWriter(p, "llama")
        w.add_uint32("llama.attention.head_count", 2)
        W = f32(8, 32)
        if qtype == "F32":
            w.add_tensor("blk.0.attn_q.weight", W)
        else:
            w.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(W, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor("blk.0.ffn_up.weight", f32(4, 8).astype(np.float16))
        w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
        return open(p, "rb").read()


def onnx_bytes(raw: bool):
    from onnx import TensorProto, helper, numpy_helper
    W = f32(6, 4)
    init = [numpy_helper.from_array(W, "fc.weight") if raw else
            helper.make_tensor("fc.weight", TensorProto.FLOAT, W.shape, W.flatten().tolist()),
            numpy_helper.from_array(f32(4, 3).astype(np.float16), "proj.weight")]
    node = helper.make_node("MatMul", ["x", "fc.weight"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


SEEDS = {
    "gguf": {"f32": gguf_bytes("F32"), "q8_0": gguf_bytes("Q8_0")},
    "onnx": {"raw": onnx_bytes(True), "typed": onnx_bytes(False)},
    "safetensors": {
        "f32": safetensors_bytes({"layer.weight": f32(6, 4)}),
        "mixed": safetensors_bytes({"a.weight": f32(5, 3), "b.weight": f32(4, 4).astype(np.float16),
                                    "c.weight": f32(3, 8).view(np.uint16)[:, ::2].copy(),
                                    "conv.weight": f32(4, 2, 3, 3), "bias": f32(4)},
                                   metadata={"format": "pt"}),
        "empty": safetensors_bytes({}),
    },
    "index": {
        "good": json.dumps({"metadata": {"total_size": 156}, "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}).encode(),
    },
    "npz": {
        "stored": npz_bytes({"fc.weight": f32(6, 4), "conv.weight": f32(3, 2, 2, 2)}, zipfile.ZIP_STORED),
        "deflated": npz_bytes({"fc.weight": f32(6, 4), "f64": f32(5, 3).astype(np.float64)}, zipfile.ZIP_DEFLATED),
        "fortran": npz_bytes({"w": (f32(7, 5), True)}, zipfile.ZIP_STORED),
    },
    "npy": {"c": npy_bytes(f32(6, 4)), "fortran": npy_bytes(f32(6, 4), fortran=True),
            "f16": npy_bytes(f32(5, 5).astype(np.float16))},
    "config": {
        "llama": json.dumps({"model_type": "llama", "hidden_size": 16, "num_attention_heads": 4,
                             "num_key_value_heads": 2, "head_dim": 4, "intermediate_size": 12}).encode(),
        "phi3": json.dumps({"model_type": "phi3", "hidden_size": 16, "num_attention_heads": 2,
                            "num_key_value_heads": 2, "intermediate_size": 12,
                            "quantization_config": {"weight_block_size": [128, 128]}}).encode(),
        "nested": json.dumps({"model_type": "gpt2", "text_config": {"n_head": 4, "n_embd": 16},
                              "num_local_experts": 2}).encode(),
    },
}

if __name__ == "__main__":
    for target, seeds in SEEDS.items():
        d = os.path.join(HERE, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as fh:
                fh.write(data)
    print("seeds written to", HERE)
