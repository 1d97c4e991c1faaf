"""Weight sources -> :class:`LayerSpec` iterators.

Modules: ``registry`` (``FORMATS``, :func:`iter_layers`), one reader per format
(``safetensors``, ``torch``, ``numpy``, ``gguf``, ``onnx``, ``keras``, ``peft``), ``dtypes`` (stored
values -> float32), ``naming`` (order, config, layer types, fused-tensor splitting), ``specs``
(stored tensors -> LayerSpecs), ``base`` (the ``LayerSpec`` / ``Entry`` / ``Format`` records),
``files`` (JSON side files, containment, size checks), ``pages`` (madvise), ``hub`` (Hugging
Face cache).  Each reader module's docstring describes its format.

``iter_layers(model_or_path)`` yields, lazily and in model order, one :class:`LayerSpec` per
analysable weight matrix of

* a live ``torch.nn.Module`` (``named_modules()`` order, each module's direct parameters in
  registration order, a parameter shared by several modules -- tied embeddings -- once);
* an in-memory state_dict: a ``Mapping`` of name -> torch tensor / numpy array (insertion order;
  ``{'state_dict': ...}``-style wrappers are unwrapped; tensors aliasing an earlier one skipped);
* a ``.safetensors`` file, a directory of ``*.safetensors`` shards with or without
  ``model.safetensors.index.json`` (read by our own header parser + ``np.memmap``: no torch, no
  ``safetensors`` package, no copy of the file);
* a PyTorch ``.bin`` / ``.pt`` / ``.pth`` / ``.ckpt`` file or a directory of them (with an
  optional ``pytorch_model.bin.index.json``), via ``torch.load(mmap=True, weights_only=True)``;
* a ``.npz`` (members as a state_dict; uncompressed members are memory-mapped) or ``.npy`` file
  (or a directory of ``.npy`` files, one tensor each, named by the file stem);
* a GGUF file or split set (``gguf``), an ONNX model (``onnx``), a Keras ``.keras`` / ``.h5``
  file or live Keras model (``keras``), a PEFT LoRA adapter folder (``peft``);
* a Hugging Face model id ``org/name[@rev]`` already in the local cache (``hub``).

Conventions
-----------
Names.  ``key`` is the tensor / parameter path (``encoder.layer.0.attention.self.query.weight``);
``LayerSpec.name`` is the key without a trailing ``.weight`` (the module path for live modules).
A parameter that is not called ``weight`` keeps its own name so that every source agrees:
``nn.MultiheadAttention``'s fused projection is ``<module>.in_proj_weight`` both for the live
module and for its state_dict; a transformers-v5 / GPT-OSS expert tensor is
``model.layers.0.mlp.experts.gate_up_proj``.

Parts.  A fused or stacked tensor yields one spec per logical matrix; ``name`` stays the tensor
name and ``part`` says which piece: ``'q'``, ``'k'``, ``'v'`` (``c_attn``, ``qkv_proj``, ``qkv``,
``Wqkv``, ``in_proj_weight``, ``query_key_value``), ``'gate'``, ``'up'`` (``gate_up_proj``),
``'expert.3'`` (3-D MoE tensors ``[E, a, b]``, always split per expert) and ``'expert.3.gate'`` /
``'expert.3.up'`` (fused expert ``gate_up_proj``).  ``LayerSpec.longname`` is
``name[part]`` (the row name ``htsr.analysis`` uses), or ``name`` when ``part`` is None.
With ``split_fused=False`` fused 2-D tensors are analysed whole (experts are still per expert).

How fused tensors are split (``config`` = the ``config=`` argument, else ``config.json`` next to
the weights, else a live model's ``.config``; nested ``text_config`` is searched too):

* ``c_attn``: q|k|v concatenated along the longer axis (GPT-2 ``Conv1D`` ``[H, 3H]``: dim 1;
  GPT-BigCode ``Linear`` ``[H + 2*kv, H]``: dim 0) with q the size of the shorter axis.
* ``qkv_proj`` / ``qkv`` / ``Wqkv`` / ``in_proj_weight``: q|k|v along dim 0; sizes
  ``(n_heads*head_dim, n_kv*head_dim, n_kv*head_dim)`` from the config when they add up
  (Phi-3 GQA), else ``(cols, (rows-cols)/2, (rows-cols)/2)``.
* ``gate_up_proj`` 2-D (Phi-3): gate|up halves along dim 0.
* ``query_key_value`` (needs ``model_type`` in the config, otherwise analysed whole):
  gpt_neox / bloom / persimmon: per-head interleave ``(n_head, 3, d)``; falcon: multi-query
  ``[H + 2d, H]`` = q|k|v, ``new_decoder_architecture`` groups ``(n_kv, n_head/n_kv + 2, d)``,
  else per-head interleave; chatglm: q|k|v with ``multi_query_group_num`` kv heads.
* 3-D ``experts.gate_up_proj``: GPT-OSS ``[E, H, 2I]`` interleaved (``[:, ::2]`` / ``[:, 1::2]``),
  Llama-4 ``[E, H, 2I]`` concatenated along the last axis, otherwise the axis of length
  ``2*intermediate_size`` (transformers-v5 in-memory ``[E, 2I, H]`` -> dim 1), or without a
  config the longer axis, halved.

Layer types.  Live modules: class name containing ``linear`` -> dense, ``embedding`` ->
embedding, ``conv`` -> conv1d (2-D HF ``Conv1D`` weights ``(in, out)``; 3-D ``nn.Conv1d``
``(out, in, k)`` -> ``rf=k`` slices ``W[:, :, i]``) or conv2d (4-D, ``rf = kh*kw`` slices
``W[:, :, i, j]``, i outer, j inner), ``norm`` -> skipped; other parameters (and every tensor of
a state_dict / file) are classified by name and rank: 2-D -> embedding if the module name
contains ``embed`` or is ``wte``/``wpe``, conv1d for GPT-2 ``c_attn/c_fc/c_proj`` (unless the
config names another model type), else dense; 4-D -> conv2d (channels-first ``(kh, kw, in,
out)`` when ``a+b < c+d``, as WeightWatcher does); 3-D -> conv1d if a path component contains
``conv``, a squeezed 2-D matrix if the leading dimension is 1 (``pos_embed [1, T, D]``), else
MoE experts.  Skipped: non-float tensors (buffers such as ``position_ids``), tensors of rank < 2
or with no elements, any name whose last component contains ``bias`` or ``mask``, norms (module name
containing ``norm`` or starting ``ln``), ``*_scale_inv`` / ``*_scale`` / ``*_scales``,
``inv_freq``, ``running_mean`` / ``running_var``, rank >= 5, packed sub-byte / E8M0 / complex.
Routers (``mlp.gate.weight [E, H]``) and tiny matrices are kept: size filters are analysis's job.

Order.  Files: natural sort of the tensor names (digit runs compared numerically, ``layers.2``
before ``layers.10``; other text in plain string order), also for sharded checkpoints (shard
order is ignored).  Live modules: ``named_modules()``.  In-memory mappings: insertion order.

Values.  ``load()`` returns ``rf`` 2-D float32 arrays (unit column stride; possibly read-only
views of a memory map or of a live parameter -- never write to them).  F16 / BF16 / FP8
(e4m3fn, e5m2, e4m3fnuz, e5m2fnuz) are converted exactly; F64 is rounded to float32.  An FP8
weight with a sibling ``<key>_scale_inv`` (DeepSeek) or ``<key>_scale`` (compressed-tensors) is
dequantized: per-tensor / per-channel scales broadcast, 2-D block scales use
``quantization_config.weight_block_size`` (default ``[128, 128]``; edge blocks partial).
``nbytes`` is the number of bytes ``load()`` reads from storage (piece + its scales).

MXFP4 (GPT-OSS experts: ``<name>_blocks`` U8 ``[E, R, G, 16]``, two E2M1 codes per byte, low
nibble first, and ``<name>_scales`` U8 ``[E, R, G]``, E8M0 exponents, one per 32 values) is
dequantized exactly, one expert at a time, as transformers' ``integrations/mxfp4.py`` does:
value = e2m1(code) * 2**(scale - 127), each expert's ``[R, 32 G]`` matrix transposed to the
model's ``[32 G, R]`` layout; the layer is ``<name>`` (``stored_dtype`` ``mxfp4``).
A ``_blocks`` tensor without its ``_scales`` is skipped with a warning naming it.

Not supported (left out): Flax msgpack / Orbax, integer-quantized safetensors (int8/int4 +
scales, GPTQ/AWQ), Conv3d, RNN-specific gate splits.
"""
from __future__ import annotations

from .base import LayerSpec
from .dtypes import mxfp4_to_float32, to_float32
from .naming import load_config, natural_key
from .pages import mapped_root, prefetch_mapped_pages, release_mapped_pages  # noqa: F401
from .registry import iter_layers
from .safetensors import SafetensorsFile, TensorInfo

__all__ = [
    "LayerSpec",
    "iter_layers",
    "natural_key",
    "to_float32",
    "mxfp4_to_float32",
    "SafetensorsFile",
    "TensorInfo",
    "load_config",
]
