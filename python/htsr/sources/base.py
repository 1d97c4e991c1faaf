"""The :class:`LayerSpec` contract, the stored-tensor :class:`Entry` every reader produces, and
the :class:`Format` record a reader registers (see ``registry``)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import BITS, FLOAT_NAMES


@dataclass
class LayerSpec:
    """One analysable weight matrix (or ``rf`` equally shaped slices of one tensor)."""

    name: str  # tensor / module path without '.weight'
    layer_type: str  # 'dense' | 'conv1d' | 'conv2d' | 'embedding'
    shape: tuple  # stored tensor shape
    N: int  # max(slice dims)
    M: int  # min(slice dims)
    rf: int  # number of slices load() returns
    stored_dtype: str  # 'float32', 'bfloat16', 'float8_e4m3fn', ...
    source: str  # file path, '<module>' or '<state_dict>'
    part: str | None  # 'q', 'k', 'v', 'gate', 'up', 'expert.3', 'expert.3.gate', ... or None
    load: Callable[[], list] = field(repr=False, compare=False)
    nbytes: int = 0  # bytes load() reads from storage
    module_type: str | None = None  # torch class name (live modules only)
    matrix_shape: tuple = ()  # (rows, cols) of each array load() returns
    scale: str | None = None  # name of the dequantization scale tensor applied, if any
    columns: dict = field(default_factory=dict, repr=False, compare=False)  # extra table columns
    # optional: (the rf matrices as stored 16-bit patterns, uint16 views of the file mapping, no
    # copy; their dtype 'bfloat16' | 'float16'), for the native core to convert exactly itself
    load_raw: Callable[[], tuple[list, str]] | None = field(default=None, repr=False,
                                                             compare=False)

    @property
    def longname(self) -> str:
        return self.name if self.part is None else f"{self.name}[{self.part}]"


@dataclass(eq=False)
class Entry:
    key: str
    shape: tuple
    dtype: str  # our dtype name
    kind: str  # 'float' | 'int' | 'other'
    source: str
    get: Callable[[], Any]  # raw stored bits: numpy array (see to_float32) or torch tensor
    whole_nbytes: int | None = None  # a load reads this many bytes whatever piece (npz deflate)
    ltype: str | None = None  # layer type when the reader knows it (ONNX: from the graph node)
    raw16: bool = False  # get() is a numpy view of stored bfloat16/float16 bits (safetensors)

    @property
    def bits(self) -> int:
        return BITS.get(self.dtype, 32)


def np_entry(key, arr, source, whole_nbytes=None) -> Entry:
    dt = arr.dtype
    name = dt.name
    if dt.kind == "f" and name in FLOAT_NAMES:
        kind, get = "float", (lambda a=arr: a)
    elif name in FLOAT_NAMES:  # ml_dtypes bfloat16 / float8 arrays: expose the raw bits
        raw = np.uint16 if dt.itemsize == 2 else np.uint8
        kind, get = "float", (lambda a=arr, r=raw: a.view(r))
    elif dt.kind in "iub":
        kind, get = "int", (lambda a=arr: a)
    else:
        kind, get = "other", (lambda a=arr: a)
    return Entry(key, tuple(arr.shape), name, kind, source, get, whole_nbytes)


@dataclass(frozen=True)
class Format:
    """A checkpoint format as the registry sees it.

    ``read(files, index)`` returns the stored tensors of ``files`` (and of the shards named by the
    ``index`` file, when given) in model order; header errors raise ValueError naming the file.
    A single path is read when its lower-cased name ends with one of ``suffixes`` (or with the
    index suffix); a directory, by the first format with a matching file or index in it."""

    name: str
    suffixes: tuple[str, ...]  # lower-case file-name endings read by this format
    read: Callable[[list[str], str | None], list[Entry]]
    index: tuple[str, str] | None = None  # (index-file suffix, preferred index file name)
    skip_prefixes: tuple[str, ...] = ()  # lower-case file-name prefixes ignored in a directory
    looks_for: str = ""  # what a directory scan looks for, for error messages
    # the model config stored in the files themselves (GGUF metadata), used when no config is
    # given (before a config.json beside them)
    config: Callable[[list[str], str | None], dict] | None = None
    # builds the LayerSpecs itself from (entries, maker, **options) instead of maker.specs per
    # entry (PEFT: pairs of low-rank factors -> one spec)
    specs: Callable[..., Iterator[LayerSpec]] | None = None
