"""Network order of weight matrices: ``block``, ``depth`` and ``role`` from the names.

Tables list matrices in natural name order, which puts ``lm_head`` before
``model.embed_tokens`` and ``down_proj`` before ``q_proj``.  The *depth* is the order of the
forward pass instead:

1. embeddings (and anything unnumbered that the name order puts before the first block);
2. block 0, block 1, ...; inside a block: attention q, k, v (fused qkv), o, then cross-attention
   q, k, v, o, then the MoE router, the dense/shared MLP gate, up (fused gate_up), down, then the
   routed experts in expert order (each gate, up, down);
3. the rest after the blocks (pooler, final projections), the LM head / classifier last.

``block`` is the number in ``layers.N`` / ``layer.N`` / ``h.N`` / ``blk.N`` / ``block(s).N`` /
``resblocks.N``; a model with several stacks (``encoder.layer.N`` and ``decoder.layers.N``,
vision and text towers) numbers them one after the other -- vision, then encoder, then other,
then decoder stacks -- each stack sized by its largest index, or by the config's layer count
(``encoder_layers``, ``num_layers``, ``num_hidden_layers``...) when that is larger (a filtered
table then keeps the same block numbers).  Matrices outside any numbered block have
``block = -1``.  ``depth`` is 0, 1, 2, ... in that order; rows with the same name (Conv2D
slices, the checkpoints of a training run) share one depth.

Pure functions on names; no I/O except reading ``config.json`` next to a path.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["Place", "layer_places", "add_depth", "source_config", "role_family", "ROLE_ORDER"]

_STACK = re.compile(r"(?:^|\.)(layers|layer|h|blk|blocks|block|resblocks)\.(\d+)(?=\.|\[|$)")
_PART = re.compile(r"\[([^\]]*)\]$")
_EXPERT = re.compile(r"(?:^|\.)experts?\.(\d+)(?=\.|$)")

#: role -> rank inside a block (attention, cross-attention, router, MLP, experts).
ROLE_ORDER = {
    "attn.q": 10, "attn.k": 11, "attn.v": 12, "attn.kv": 12.5, "attn.qkv": 13, "attn.o": 14,
    "attn.other": 15,
    "cross.q": 20, "cross.k": 21, "cross.v": 22, "cross.kv": 22.5, "cross.qkv": 23, "cross.o": 24,
    "cross.other": 25,
    "router": 30,
    "mlp.gate": 40, "mlp.up": 41, "mlp.gate_up": 42, "mlp.down": 43, "mlp.other": 44,
    "shared.gate": 45, "shared.up": 46, "shared.gate_up": 47, "shared.down": 48,
    "expert.gate": 50, "expert.up": 51, "expert.gate_up": 52, "expert.down": 53,
    "expert.other": 54,
    "other": 60,
}

# last name component -> kind (q/k/v/kv/qkv/o | gate/up/gate_up/down); context decides a few
_ATTN_LEAF = {
    "q_proj": "q", "query": "q", "q": "q", "wq": "q", "attn_q": "q", "q_a_proj": "q",
    "q_b_proj": "q", "q_lin": "q",
    "k_proj": "k", "key": "k", "k": "k", "wk": "k", "attn_k": "k", "k_lin": "k",
    "v_proj": "v", "value": "v", "v": "v", "wv": "v", "attn_v": "v", "v_lin": "v",
    "kv_a_proj_with_mqa": "kv", "kv_b_proj": "kv", "kv_proj": "kv",
    "qkv_proj": "qkv", "c_attn": "qkv", "query_key_value": "qkv", "wqkv": "qkv",
    "in_proj": "qkv", "attn_qkv": "qkv", "qkv": "qkv", "w_pack": "qkv",
    "o_proj": "o", "out_proj": "o", "attn_output": "o", "o": "o", "out_lin": "o",
}
_MLP_LEAF = {
    "gate_proj": "gate", "w1": "gate", "ffn_gate": "gate", "wi_0": "gate", "ffn_gate_exps": "gate",
    "up_proj": "up", "w3": "up", "c_fc": "up", "fc1": "up", "dense_h_to_4h": "up", "ffn_up": "up",
    "wi_1": "up", "wi": "up", "fc_in": "up", "lin1": "up", "ffn_up_exps": "up",
    "gate_up_proj": "gate_up", "w13": "gate_up",
    "down_proj": "down", "w2": "down", "fc2": "down", "dense_4h_to_h": "down", "ffn_down": "down",
    "fc_out": "down", "lin2": "down", "ffn_down_exps": "down",
}
_ROUTER_LEAF = {"gate", "router", "ffn_gate_inp", "wg"}
_HEAD_FIRST = {"lm_head", "output", "classifier", "score", "cls", "head", "embed_out", "qa_outputs",
               "heads", "fc", "logits"}
_EMBED = re.compile(r"embed|(?:^|\.)(?:wte|wpe|tok_embeddings|token_embd|shared|position_embd)(?:\.|$)")


@dataclass(frozen=True)
class Place:
    """Where one matrix sits in the network: ``block`` (-1 outside numbered blocks), ``role``
    (``embedding``, ``attn.q`` ... ``expert.down``, ``other``, ``head``), ``expert`` index
    (-1 if none) and ``depth`` (0, 1, ... in forward order)."""
    block: int
    role: str
    expert: int
    depth: int


def role_family(role: str) -> str:
    """Colour group of a role: ``q/k/v/o``, ``gate/up/down``, ``experts``, ``embedding``,
    ``head``, ``other`` (``attn.q`` -> ``q``; ``expert.*`` -> ``experts``)."""
    if role.startswith("expert"):
        return "experts"
    if "." in role:
        return role.split(".", 1)[1]
    return role


def _split_name(name: str, part: Any):
    m = _PART.search(name)
    base = name[:m.start()] if m else name
    if part is None or part != part:          # None / NaN
        part = m.group(1) if m else None
    return base, (str(part) if part is not None else None)


def _role(base: str, part: str | None, in_block: bool) -> tuple[str, int]:
    comps = [c.lower() for c in base.split(".")]
    leaf = comps[-1] if comps else ""
    expert = -1
    m = _EXPERT.search(base)
    kind = None
    if part:
        pp = part.split(".")
        if pp[0] == "expert" and len(pp) >= 2 and pp[1].isdigit():
            expert = int(pp[1])
            kind = pp[2] if len(pp) > 2 else None
        elif pp[0] in ("q", "k", "v", "gate", "up", "down", "kv"):
            kind = pp[0]
    if m and expert < 0:
        expert = int(m.group(1))
    ctx = ".".join(comps[:-1])
    cross = any(w in ctx for w in ("encdecattention", "encoder_attn", "crossattention",
                                   "cross_attn", "cross_attention"))
    attn_ctx = cross or "attn" in ctx or "attention" in ctx
    if kind is None:
        if leaf in _ATTN_LEAF and (attn_ctx or leaf not in ("q", "k", "v", "o")):
            kind = _ATTN_LEAF[leaf]
        elif leaf in _MLP_LEAF:
            kind = _MLP_LEAF[leaf]
        elif leaf in ("experts",) or (expert >= 0 and leaf in ("weight", "")):
            kind = "other"
    if kind is None:
        # context-dependent leaves: c_proj / dense / proj / wo / output.dense
        if leaf in ("c_proj", "dense", "proj", "wo", "out", "o_lin") and attn_ctx:
            kind = "o"
        elif leaf == "dense" and "intermediate" in comps:
            kind = "up"                     # BERT intermediate.dense
        elif leaf in ("c_proj", "proj", "wo", "dense") and in_block:
            kind = "down"                   # mlp.c_proj, DenseReluDense.wo, BERT output.dense
        elif leaf in _ROUTER_LEAF and in_block and not attn_ctx:
            return "router", expert
    if kind in ("q", "k", "v", "kv", "qkv", "o"):
        return ("cross." if cross else "attn.") + kind, expert
    if kind in ("gate", "up", "gate_up", "down", "other"):
        if expert >= 0:
            return "expert." + kind, expert
        if kind == "other":
            return ("attn.other" if attn_ctx else "mlp.other"), expert
        shared = any("shared_expert" in c for c in comps)
        return ("shared." if shared else "mlp.") + kind, expert
    if attn_ctx and in_block:
        return "attn.other", expert
    return "other", expert


def _stack_rank(prefix: str) -> int:
    p = prefix.lower()
    if any(w in p for w in ("vision", "visual", "image", "vit")):
        return 0
    if "encoder" in p:
        return 1
    if "decoder" in p:
        return 3
    return 2


def _config_layers(config: Mapping | None, rank: int) -> int:
    if not config:
        return 0
    keys = {0: ("vision_config.num_hidden_layers",),
            1: ("encoder_layers", "num_layers", "num_encoder_layers"),
            3: ("decoder_layers", "num_decoder_layers", "num_layers"),
            2: ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "block_count")}[rank]
    for k in keys:
        cur: Any = config
        for part in k.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        if isinstance(cur, int) and not isinstance(cur, bool) and cur > 0:
            return cur
    return 0


def layer_places(names: Sequence[str], parts: Sequence[Any] | None = None,
                 layer_types: Sequence[str] | None = None,
                 config: Mapping | None = None) -> list[Place]:
    """One :class:`Place` per entry of ``names`` (given in table order; equal names share a
    place).  ``parts``: the ``part`` column (fused-tensor parts, ``expert.3.gate``);
    ``layer_types``: ``embedding`` rows go first; ``config``: the model's config.json dict."""
    n = len(names)
    parts = list(parts) if parts is not None else [None] * n
    types = list(layer_types) if layer_types is not None else [None] * n
    first: dict[str, int] = {}
    for i, nm in enumerate(names):
        first.setdefault(str(nm), i)
    uniq = sorted(first, key=first.get)
    info = {}
    stacks: dict[str, list] = {}          # prefix -> [rank, first index, max block]
    for nm in uniq:
        i = first[nm]
        base, part = _split_name(nm, parts[i])
        m = _STACK.search(base)           # the outermost numbered stack
        if m is not None:
            prefix = base[:m.start(2)]
            st = stacks.setdefault(prefix, [_stack_rank(prefix), i, -1])
            st[2] = max(st[2], int(m.group(2)))
            info[nm] = (base, part, prefix, int(m.group(2)))
        else:
            info[nm] = (base, part, None, -1)
    offset, off = {}, 0
    for prefix, (rank, _i, mx) in sorted(stacks.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        offset[prefix] = off
        size = mx + 1
        if len([s for s in stacks.values() if s[0] == rank]) == 1:
            size = max(size, _config_layers(config, rank))
        off += size
    first_block = min((first[nm] for nm in uniq if info[nm][2] is not None), default=n)

    keys = {}
    places = {}
    for nm in uniq:
        base, part, prefix, local = info[nm]
        i = first[nm]
        in_block = prefix is not None
        block = offset[prefix] + local if in_block else -1
        role, expert = _role(base, part, in_block)
        is_embed = (types[i] == "embedding") or bool(_EMBED.search(base.lower()))
        head_like = base.split(".")[0].lower() in _HEAD_FIRST or \
            base.lower().rsplit(".", 1)[-1] in ("lm_head", "classifier", "score", "embed_out")
        if in_block:
            seg, rank = 1, ROLE_ORDER.get(role, 60)
        elif is_embed:
            seg, rank, role = 0, 0, "embedding"
        elif head_like:
            seg, rank, role = 3, 0, "head"
        else:
            seg, rank = (0, 1) if i < first_block else (2, 0)
        group = 50 if role.startswith("expert.") else rank   # experts: by index, then role
        keys[nm] = (seg, block, group, expert, rank, i)
        places[nm] = (block, role, expert)
    order = sorted(uniq, key=keys.get)
    depth = {nm: d for d, nm in enumerate(order)}
    return [Place(*places[str(nm)], depth[str(nm)]) for nm in names]


def source_config(source) -> dict:
    """config.json next to a path (file or folder), or a live model's ``.config``; {} if none."""
    try:
        if isinstance(source, (str, os.PathLike)):
            p = os.fspath(source)
            if not os.path.exists(p):
                return {}
            d = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
            c = os.path.join(d, "config.json")
            if os.path.isfile(c):
                from .sources import load_config
                return load_config(c)
        elif hasattr(source, "config"):
            from .sources import load_config
            return load_config(source.config)
    except (OSError, ValueError, TypeError):
        return {}
    return {}


def add_depth(df, source=None, config: Mapping | None = None):
    """``df`` with ``block`` and ``depth`` columns (in place; returned).  ``config``: dict, or
    read from ``config.json`` next to ``source`` (a path) / a live model's ``.config``."""
    if config is None and source is not None:
        config = source_config(source)
    if len(df) == 0 or "name" not in df.columns:
        df["block"] = []
        df["depth"] = []
        return df
    places = layer_places(list(df["name"]),
                          list(df["part"]) if "part" in df.columns else None,
                          list(df["layer_type"]) if "layer_type" in df.columns else None,
                          config)
    df["block"] = [p.block for p in places]
    df["depth"] = [p.depth for p in places]
    return df
