"""Names -> layers: natural order, config access, layer-type inference, skipped tensors and
the splitting of fused q/k/v, gate/up and expert tensors into logical matrices."""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from .files import read_json

DEFAULT_BLOCK = (128, 128)
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs numerically: ``layers.2`` < ``layers.10``."""
    parts = _DIGITS.split(name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class Config:
    """Model config values (top level, then nested ``text_config``-style dicts); ``source`` names
    the config in errors."""

    _NESTED = ("text_config", "llm_config", "language_config", "attn_config")

    def __init__(self, d: Mapping | None, source: str = "config"):
        self.d = dict(d) if d else {}
        self.source = source

    def _find(self, keys):
        for k in keys:
            if k in self.d and self.d[k] is not None:
                return k, self.d[k]
        for sub in self._NESTED:
            s = self.d.get(sub)
            if isinstance(s, Mapping):
                for k in keys:
                    if k in s and s[k] is not None:
                        return f"{sub}.{k}", s[k]
        return None, None

    def get(self, *keys, default=None):
        v = self._find(keys)[1]
        return default if v is None else v

    def get_int(self, *keys) -> int | None:
        """A positive whole number (int or integral float); None when absent, 0 or not a number
        (Swin's per-stage ``num_heads`` list); a negative, fractional, non-finite or boolean
        value is a ValueError naming the key."""
        k, v = self._find(keys)
        if not isinstance(v, (int, float)) or (type(v) in (int, float) and v == 0):
            return None
        if type(v) is int and v > 0:
            return v
        if type(v) is float and math.isfinite(v) and v > 0 and v.is_integer():
            return int(v)
        raise ValueError(f"{self.source}: {k} = {v!r} is not a positive whole number")

    @property
    def model_type(self) -> str:
        return str(self.get("model_type", default="") or "")

    def block(self) -> tuple:
        q = self.get("quantization_config")
        if isinstance(q, Mapping):
            b = q.get("weight_block_size")
            if isinstance(b, (list, tuple)) and len(b) == 2 and all(is_uint(x) and x for x in b):
                return int(b[0]), int(b[1])
        return DEFAULT_BLOCK


def load_config(config) -> dict:
    """``config`` as a plain dict: a dict, a transformers config (``to_dict()``) or a path to a
    JSON file (or a directory holding ``config.json``)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if isinstance(config, (str, os.PathLike)):
        p = os.fspath(config)
        if os.path.isdir(p):
            p = os.path.join(p, "config.json")
        return read_json(p, "config")
    raise TypeError(f"config: expected a dict, a transformers config or a path, got "
                    f"{type(config).__name__}")


_SKIP_PARAM_SUFFIX = ("_scale_inv", "scale_inv", "_scale", "_scales", "inv_freq", "position_ids",
                      "running_mean", "running_var", "num_batches_tracked", "_zero_point",
                      "_blocks")
_GPT2_CONV1D = {"c_attn", "c_fc", "c_proj", "q_attn"}
_GPT2_TYPES = {"gpt2", "imagegpt", "decision_transformer"}
_LN = re.compile(r"^ln(_|\d|$)")


def layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _module_comp(key: str) -> str:
    comps = key.split(".")
    if comps[-1] == "weight" and len(comps) > 1:
        return comps[-2]
    return comps[-1]


def skip_key(key: str) -> bool:
    param = key.rsplit(".", 1)[-1].lower()
    if "bias" in param or "mask" in param or param.endswith(_SKIP_PARAM_SUFFIX):
        return True
    mod = _module_comp(key).lower()
    return "norm" in mod or bool(_LN.match(mod))


def infer_type(key: str, shape: tuple, cfg: Config) -> str | None:
    """Layer type of a state_dict tensor, or None (skip).  3-D -> 'experts' / 'conv1d' /
    'squeeze' pseudo types resolved by the caller."""
    nd = len(shape)
    if nd == 2:
        return type_2d(key, cfg)
    if nd == 4:
        return "conv2d"
    if nd == 3:
        if any("conv" in c.lower() for c in key.split(".")):
            return "conv1d"
        if shape[0] == 1 and "expert" not in key.lower():
            return "squeeze"
        return "experts"
    return None


def type_2d(key: str, cfg: Config) -> str:
    mod = _module_comp(key)
    low = mod.lower()
    if "embed" in low or low in ("wte", "wpe") or low.endswith("_embd"):  # GGUF token_embd
        return "embedding"
    if mod in _GPT2_CONV1D and (not cfg.model_type or cfg.model_type in _GPT2_TYPES):
        return "conv1d"
    return "dense"


# ---------------------------------------------------------------------------------------------
# fused tensors: selectors
#   ('rows', a, b) -> x[a:b]          ('cols', a, b) -> x[:, a:b]
#   ('cstep', s, k) -> x[:, s::k]      ('groups', G, per, d, a, b) ->
#                                          x.reshape(G, per, d, c)[:, a:b].reshape(-1, c)
# ---------------------------------------------------------------------------------------------
def apply_sel(x, sel):
    kind = sel[0]
    if kind == "rows":
        return x[sel[1]:sel[2]]
    if kind == "cols":
        return x[:, sel[1]:sel[2]]
    if kind == "cstep":
        return x[:, sel[1]::sel[2]]
    if kind == "groups":
        _, G, per, d, a, b = sel
        c = x.shape[1]
        return x.reshape(G, per, d, c)[:, a:b].reshape(-1, c)
    raise AssertionError(sel)


def sel_shape(shape2d, sel) -> tuple:
    r, c = shape2d
    kind = sel[0]
    if kind == "rows":
        return sel[2] - sel[1], c
    if kind == "cols":
        return r, sel[2] - sel[1]
    if kind == "cstep":
        return r, len(range(sel[1], c, sel[2]))
    _, G, per, d, a, b = sel
    return G * (b - a) * d, c


def _concat(axis: int, sizes, names) -> list:
    out, a = [], 0
    for n, s in zip(names, sizes):
        out.append((n, ("rows" if axis == 0 else "cols", a, a + s)))
        a += s
    return out


def _qkv_generic(long: int, short: int, axis: int):
    rest = long - short
    if rest > 0 and rest % 2 == 0:
        return _concat(axis, (short, rest // 2, rest // 2), "qkv")
    return None


def split_2d(name: str, shape2d: tuple, cfg: Config, orientation: str | None):
    """[(part, selector)] for a fused 2-D tensor, or None."""
    comp = name.rsplit(".", 1)[-1]
    r, c = shape2d
    mt = cfg.model_type
    nh = cfg.get_int("num_attention_heads", "n_head", "num_heads", "n_heads")
    hidden = cfg.get_int("hidden_size", "n_embd", "d_model")
    hd = cfg.get_int("head_dim", "kv_channels") or (hidden // nh if hidden and nh else None)

    if comp == "c_attn":
        if orientation == "conv1d" or (orientation is None and c > r):
            return _qkv_generic(c, r, 1)
        return _qkv_generic(r, c, 0)
    if comp == "in_proj_weight":
        return _qkv_generic(r, c, 0)
    if comp in ("qkv_proj", "qkv", "Wqkv", "attn_qkv"):  # attn_qkv: GGUF
        nkv = cfg.get_int("num_key_value_heads", "num_kv_heads", "kv_n_heads", "n_head_kv") or nh
        if nh and hd and nh * hd + 2 * nkv * hd == r:
            return _concat(0, (nh * hd, nkv * hd, nkv * hd), "qkv")
        return _qkv_generic(r, c, 0)
    if comp == "gate_up_proj":
        return [("gate", ("rows", 0, r // 2)), ("up", ("rows", r // 2, r))] if r % 2 == 0 \
            else None
    if comp == "query_key_value" and nh:
        if mt in ("gpt_neox", "gpt_neox_japanese", "bloom", "persimmon"):
            return _interleave(r, nh)
        if mt in ("falcon", "RefinedWeb", "RefinedWebModel"):
            new_arch = cfg.get("new_decoder_architecture", default=(mt == "RefinedWeb"))
            d = hd or (r // (3 * nh))
            if new_arch:
                nkv = cfg.get_int("num_kv_heads", "n_head_kv", "num_key_value_heads") or nh
                g = nh // nkv if nh % nkv == 0 else 0
                if g and d and nkv * (g + 2) * d == r:
                    return [("q", ("groups", nkv, g + 2, d, 0, g)),
                            ("k", ("groups", nkv, g + 2, d, g, g + 1)),
                            ("v", ("groups", nkv, g + 2, d, g + 1, g + 2))]
                return None
            if cfg.get("multi_query", default=True):
                if d and nh * d + 2 * d == r:
                    return _concat(0, (nh * d, d, d), "qkv")
                return None
            return _interleave(r, nh)
        if mt == "chatglm":
            d = hd
            g = cfg.get_int("multi_query_group_num") if cfg.get("multi_query_attention") else nh
            if d and g and nh * d + 2 * g * d == r:
                return _concat(0, (nh * d, g * d, g * d), "qkv")
    return None


def _interleave(r: int, nh: int):
    if r % (3 * nh):
        return None
    d = r // (3 * nh)
    return [(p, ("groups", nh, 3, d, i, i + 1)) for i, p in enumerate("qkv")]


def split_expert(name: str, slab: tuple, cfg: Config):
    """[(part, selector)] for one expert of a fused ``gate_up_proj``, or None."""
    if not name.rsplit(".", 1)[-1].endswith(("gate_up_proj", "gate_up_exps")):
        return None
    a, b = slab
    mt = cfg.model_type
    if mt == "gpt_oss":
        return [("gate", ("cstep", 0, 2)), ("up", ("cstep", 1, 2))] if b % 2 == 0 else None
    rows = [("gate", ("rows", 0, a // 2)), ("up", ("rows", a // 2, a))]
    cols = [("gate", ("cols", 0, b // 2)), ("up", ("cols", b // 2, b))]
    if mt.startswith("llama4"):
        return cols if b % 2 == 0 else None
    inter = cfg.get_int("moe_intermediate_size", "expert_intermediate_size", "intermediate_size")
    if inter and a == 2 * inter and b != 2 * inter:
        return rows
    if inter and b == 2 * inter and a != 2 * inter:
        return cols
    if a >= b:
        return rows if a % 2 == 0 else None
    return cols if b % 2 == 0 else None
