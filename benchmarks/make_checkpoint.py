"""Synthetic sharded safetensors checkpoints in the shapes of real LLMs, streamed to disk.

    python benchmarks/make_checkpoint.py ../ckpt/tinyllama --preset tinyllama
    python benchmarks/make_checkpoint.py ../ckpt/llama7b --preset llama2-7b
    python benchmarks/make_checkpoint.py /tmp/moe --preset mixtral --layers 2
    python benchmarks/make_checkpoint.py /tmp/tiny --preset llama2-7b --hidden 64 \
        --intermediate 176 --layers 2 --vocab 320 --shard-mb 1

Writes ``model-0000i-of-0000n.safetensors`` shards (``--shard-mb`` each at most, as
``transformers`` does), ``model.safetensors.index.json`` (``weight_map`` + ``total_size``) and
``config.json``.  Presets (every size can be overridden, so tests make tiny versions):

* ``tinyllama``: TinyLlama-1.1B (hidden 2048, FFN 5632, 22 layers, GQA 32/4 heads, vocab 32000);
* ``llama2-7b``: Llama-2-7B (4096, 11008, 32 layers, 32 heads, vocab 32000);
* ``mixtral``: Mixtral-8x7B with transformers-v5 3-D expert tensors
  ``mlp.experts.gate_up_proj [E, 2I, H]`` / ``mlp.experts.down_proj [E, H, I]`` and the router
  ``mlp.gate.weight [E, H]`` (default 2 layers);
* ``gpt2``: GPT-2 small with fused ``Conv1D`` weights stored ``(in, out)``
  (``attn.c_attn.weight [H, 3H]``).

Values: iid heavy-tailed (symmetric Pareto with tail index ``--tail``, default 2.5, so the
ESDs have power-law tails; scaled by 1/sqrt(fan-in)), bf16 by truncating the float32 bits (or
``--dtype F32``).  Generation is vectorised: a table of 65536 samples per tensor, indexed by
random 16-bit words, ``--chunk-mb`` at a time, so only one chunk is ever in memory and a 7B
checkpoint is written at disk speed.  Norm weights are 1.0, biases 0.  Deterministic in
``--seed``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np

PRESETS = {
    "tinyllama": dict(arch="llama", hidden=2048, intermediate=5632, layers=22, heads=32,
                      kv_heads=4, vocab=32000, experts=0),
    "llama2-7b": dict(arch="llama", hidden=4096, intermediate=11008, layers=32, heads=32,
                      kv_heads=32, vocab=32000, experts=0),
    "mixtral": dict(arch="mixtral", hidden=4096, intermediate=14336, layers=2, heads=32,
                    kv_heads=8, vocab=32000, experts=8),
    "gpt2": dict(arch="gpt2", hidden=768, intermediate=3072, layers=12, heads=12, kv_heads=12,
                 vocab=50257, experts=0, positions=1024),
}
_ST_DTYPE = {"BF16": 2, "F32": 4}
_TABLE = 1 << 16


def tensors(cfg: dict) -> list[tuple[str, tuple, str]]:
    """(name, shape, kind) in model order; kind 'weight' | 'norm' | 'bias'."""
    H, I, L, V = cfg["hidden"], cfg["intermediate"], cfg["layers"], cfg["vocab"]
    hd = H // cfg["heads"]
    kv = cfg["kv_heads"] * hd
    out = []
    if cfg["arch"] == "gpt2":
        out += [("wte.weight", (V, H), "weight"), ("wpe.weight", (cfg.get("positions", 1024), H), "weight")]
        for i in range(L):
            p = f"h.{i}."
            out += [(p + "ln_1.weight", (H,), "norm"), (p + "ln_1.bias", (H,), "bias"),
                    (p + "attn.c_attn.weight", (H, 3 * H), "weight"), (p + "attn.c_attn.bias", (3 * H,), "bias"),
                    (p + "attn.c_proj.weight", (H, H), "weight"), (p + "attn.c_proj.bias", (H,), "bias"),
                    (p + "ln_2.weight", (H,), "norm"), (p + "ln_2.bias", (H,), "bias"),
                    (p + "mlp.c_fc.weight", (H, I), "weight"), (p + "mlp.c_fc.bias", (I,), "bias"),
                    (p + "mlp.c_proj.weight", (I, H), "weight"), (p + "mlp.c_proj.bias", (H,), "bias")]
        return out + [("ln_f.weight", (H,), "norm"), ("ln_f.bias", (H,), "bias")]
    out.append(("model.embed_tokens.weight", (V, H), "weight"))
    for i in range(L):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (H,), "norm"),
                (p + "self_attn.q_proj.weight", (H, H), "weight"),
                (p + "self_attn.k_proj.weight", (kv, H), "weight"),
                (p + "self_attn.v_proj.weight", (kv, H), "weight"),
                (p + "self_attn.o_proj.weight", (H, H), "weight"),
                (p + "post_attention_layernorm.weight", (H,), "norm")]
        if cfg["arch"] == "mixtral":
            E = cfg["experts"]
            out += [(p + "mlp.gate.weight", (E, H), "weight"),
                    (p + "mlp.experts.gate_up_proj", (E, 2 * I, H), "weight"),
                    (p + "mlp.experts.down_proj", (E, H, I), "weight")]
        else:
            out += [(p + "mlp.gate_proj.weight", (I, H), "weight"),
                    (p + "mlp.up_proj.weight", (I, H), "weight"),
                    (p + "mlp.down_proj.weight", (H, I), "weight")]
    return out + [("model.norm.weight", (H,), "norm"), ("lm_head.weight", (V, H), "weight")]


def hf_config(cfg: dict) -> dict:
    """A ``config.json`` that the real model of this shape would carry."""
    if cfg["arch"] == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": cfg["hidden"],
                "n_inner": cfg["intermediate"], "n_layer": cfg["layers"], "n_head": cfg["heads"],
                "vocab_size": cfg["vocab"], "n_positions": cfg.get("positions", 1024)}
    c = {"model_type": cfg["arch"], "hidden_size": cfg["hidden"],
         "intermediate_size": cfg["intermediate"], "num_hidden_layers": cfg["layers"],
         "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"],
         "head_dim": cfg["hidden"] // cfg["heads"], "vocab_size": cfg["vocab"],
         "torch_dtype": "bfloat16", "architectures": ["LlamaForCausalLM"]}
    if cfg["arch"] == "mixtral":
        c.update(num_local_experts=cfg["experts"], num_experts_per_tok=2,
                 architectures=["MixtralForCausalLM"])
    return c


def _table(rng: np.random.Generator, tail: float, scale: float, dtype: str) -> np.ndarray:
    """65536 symmetric-Pareto samples (|x| = U^(-1/tail) - 1, P(|x| > t) = (1+t)^-tail) x scale,
    as stored bits: uint16 bf16 (float32 bits truncated) or float32."""
    u = rng.random(_TABLE, dtype=np.float64)
    x = (np.power(1.0 - u, -1.0 / tail) - 1.0) * np.where(rng.random(_TABLE) < 0.5, -1.0, 1.0)
    x = (x * scale).astype(np.float32)
    return (x.view(np.uint32) >> 16).astype(np.uint16) if dtype == "BF16" else x


def _const(value: float, n: int, dtype: str) -> np.ndarray:
    x = np.full(n, value, np.float32)
    return (x.view(np.uint32) >> 16).astype(np.uint16) if dtype == "BF16" else x


def _shards(specs, itemsize: int, shard_bytes: int) -> list[list]:
    shards, cur, size = [], [], 0
    for name, shape, kind in specs:
        nb = math.prod(shape) * itemsize
        if cur and size + nb > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape, kind))
        size += nb
    if cur:
        shards.append(cur)
    return shards


def _write_shard(path, specs, dtype, rng, tail, chunk_elems, log):
    itemsize = _ST_DTYPE[dtype]
    header, off = {}, 0
    for name, shape, _k in specs:
        nb = math.prod(shape) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, kind in specs:
            n = math.prod(shape)
            if kind != "weight":
                f.write(_const(1.0 if kind == "norm" else 0.0, n, dtype).tobytes())
                continue
            table = _table(rng, tail, 1.0 / math.sqrt(shape[-1]), dtype)
            for start in range(0, n, chunk_elems):
                m = min(chunk_elems, n - start)
                idx = np.frombuffer(rng.bytes(2 * m), dtype=np.uint16)
                f.write(table[idx].tobytes())
            log(name, shape)
    return off


def make_checkpoint(folder, preset: str = "tinyllama", *, dtype: str = "BF16", shard_mb: float = 4800,
                    seed: int = 0, tail: float = 2.5, chunk_mb: float = 64, verbose: bool = False,
                    **sizes) -> dict:
    """Write the checkpoint into ``folder`` (created); returns {'files', 'bytes', 'tensors', 'config'}.

    ``sizes`` override the preset: hidden, intermediate, layers, heads, kv_heads, vocab, experts,
    positions."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if dtype not in _ST_DTYPE:
        raise ValueError(f"dtype must be one of {sorted(_ST_DTYPE)}, got {dtype!r}")
    cfg = dict(PRESETS[preset])
    unknown = set(sizes) - set(cfg) - {"positions"}
    if unknown:
        raise TypeError(f"unknown size(s) {sorted(unknown)}")
    cfg.update({k: int(v) for k, v in sizes.items() if v is not None})
    if cfg["hidden"] % cfg["heads"]:
        raise ValueError("hidden must be a multiple of heads")
    os.makedirs(folder, exist_ok=True)
    specs = tensors(cfg)
    itemsize = _ST_DTYPE[dtype]
    shards = _shards(specs, itemsize, int(shard_mb * (1 << 20)))
    rng = np.random.default_rng(seed)
    chunk = max(1, int(chunk_mb * (1 << 20)) // itemsize)
    t0 = time.perf_counter()

    def log(name, shape):
        if verbose:
            print(f"  {name} {shape} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    weight_map, total, files = {}, 0, []
    for i, group in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += _write_shard(os.path.join(folder, fname), group, dtype, rng, tail, chunk, log)
        files.append(fname)
        weight_map.update({name: fname for name, _s, _k in group})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=1)
    return {"files": files, "bytes": total, "tensors": specs, "config": cfg}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tinyllama")
    for name in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab", "experts"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None, dest=name)
    ap.add_argument("--dtype", choices=sorted(_ST_DTYPE), default="BF16")
    ap.add_argument("--shard-mb", type=float, default=4800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tail", type=float, default=2.5, help="Pareto tail index of the entries")
    ap.add_argument("--verbose", "-v", action="store_true")
    a = ap.parse_args(argv)
    sizes = {k: getattr(a, k) for k in ("hidden", "intermediate", "layers", "heads", "kv_heads",
                                         "vocab", "experts")}
    t0 = time.perf_counter()
    info = make_checkpoint(a.folder, a.preset, dtype=a.dtype, shard_mb=a.shard_mb, seed=a.seed,
                           tail=a.tail, verbose=a.verbose, **sizes)
    dt = time.perf_counter() - t0
    n = sum(math.prod(s) for _n, s, _k in info["tensors"])
    print(f"{a.folder}: {len(info['files'])} shards, {len(info['tensors'])} tensors, "
          f"{n / 1e9:.3f} B parameters, {info['bytes'] / 1e9:.2f} GB in {dt:.1f} s "
          f"({info['bytes'] / 1e6 / max(dt, 1e-9):.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
