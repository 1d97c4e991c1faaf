"""Peak memory of `htsr.analyze` on a 1.1B-parameter-shaped (TinyLlama-1.1B) Q8_0 GGUF.

Writes the file once with gguf's GGUFWriter, streaming (tensor infos first, then one tensor's
quantized blocks at a time: random N(0, 0.02^2) float32 weights, seed 0), then analyses it in a
fresh child process and reports that child's peak RSS (ru_maxrss) with the load average.

    python benchmarks/bench_gguf_memory.py [--dir DIR] [--json]

Acceptance (issue 10): peak RSS <= 1.5 GB.  tests/test_sources_gguf.py runs this under
HTSR_SLOW_TESTS=1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# TinyLlama-1.1B: vocab 32000, hidden 2048, 22 layers, 32 heads / 4 kv heads of 64, MLP 5632
VOCAB, H, LAYERS, HEADS, KV, I_ = 32000, 2048, 22, 32, 4, 5632


def shapes() -> dict:
    kv = KV * H // HEADS
    out = {"token_embd.weight": (VOCAB, H)}
    for i in range(LAYERS):
        b = f"blk.{i}."
        out.update({b + "attn_q.weight": (H, H), b + "attn_k.weight": (kv, H),
                    b + "attn_v.weight": (kv, H), b + "attn_output.weight": (H, H),
                    b + "ffn_gate.weight": (I_, H), b + "ffn_up.weight": (I_, H),
                    b + "ffn_down.weight": (H, I_), b + "attn_norm.weight": (H,)})
    out["output_norm.weight"] = (H,)
    out["output.weight"] = (VOCAB, H)
    return out


def write(path: str) -> float:
    import gguf
    from gguf.constants import GGMLQuantizationType as T

    t0 = time.perf_counter()
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.attention.head_count", HEADS)
    w.add_uint32("llama.attention.head_count_kv", KV)
    w.add_uint32("llama.embedding_length", H)
    w.add_uint32("llama.feed_forward_length", I_)
    w.add_uint32("llama.block_count", LAYERS)
    sh = shapes()
    for name, s in sh.items():
        if len(s) == 1:
            w.add_tensor_info(name, s, np.dtype(np.float32), 4 * s[0])
        else:
            w.add_tensor_info(name, (s[0], s[1] // 32 * 34), np.dtype(np.uint8),
                              s[0] * s[1] // 32 * 34, raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, s in sh.items():
        if len(s) == 1:
            w.write_tensor_data(np.ones(s, np.float32))
            continue
        q = np.empty((s[0], s[1] // 32 * 34), np.uint8)
        step = max(1, (1 << 22) // s[1])
        for i in range(0, s[0], step):  # a few MB of float32 at a time
            x = rng.standard_normal((min(step, s[0] - i), s[1]), dtype=np.float32) * 0.02
            q[i:i + step] = gguf.quants.quantize(x, T.Q8_0)
        w.write_tensor_data(q)
    w.close()
    return time.perf_counter() - t0


CHILD = """
import json, os, resource, sys, time
import htsr
from htsr.sources import iter_layers
path = sys.argv[1]
n = len(list(iter_layers(path)))
t0 = time.perf_counter()
df = htsr.analyze(path)
sec = time.perf_counter() - t0
print(json.dumps({"matrices": n, "rows": len(df), "seconds": round(sec, 1),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "alpha_median": float(df["alpha"].median()),
                  "loadavg_after": os.getloadavg()}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/htsr_bench_gguf")
    ap.add_argument("--json", action="store_true", help="print only the JSON result line")
    a = ap.parse_args(argv)
    os.makedirs(a.dir, exist_ok=True)
    path = os.path.join(a.dir, "tinyllama-1.1b-shaped-q8_0.gguf")
    wrote = None
    if not os.path.exists(path):
        wrote = write(path)
    load_before = os.getloadavg()
    r = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
        return r.returncode
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(file_bytes=os.path.getsize(path), loadavg_before=load_before,
               write_seconds=None if wrote is None else round(wrote, 1))
    if not a.json:
        print(f"{path}: {res['file_bytes'] / 1e9:.2f} GB, {res['matrices']} matrices, "
              f"analysed in {res['seconds']} s, peak RSS {res['peak_rss_bytes'] / 1e9:.2f} GB "
              f"(load average before {load_before}, after {res['loadavg_after']})")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
