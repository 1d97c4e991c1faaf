"""Checkpoint side files and file safety: JSON configs and shard indexes, the folder a
checkpoint may read from, and size checks before memory-mapped reads.

Containment rule: a file reached through a checkpoint folder (found in it, or named by its index
or by another file's metadata) must resolve, symlinks included, inside that folder -- or, for a
Hugging Face cache snapshot ``<repo>/snapshots/<rev>`` (whose files are symlinks to
``<repo>/blobs``), inside ``<repo>``.  A file named explicitly by the caller is read as given."""
from __future__ import annotations

import json
import os
import zipfile


def _no_constant(name):
    raise ValueError(f"{name} is not allowed (JSON has no non-finite numbers)")


def read_json(path, what) -> dict:
    """A JSON object from ``path``; ValueError naming the file for invalid, non-finite
    (``NaN``/``Infinity``) or too deeply nested JSON."""
    with open(path, "rb") as fh:
        return parse_json_object(fh.read(), path, what)


def parse_json_object(blob: bytes, path, what) -> dict:
    """``blob`` (UTF-8 JSON) as a dict; ValueError naming ``path`` and ``what`` for invalid,
    non-finite or too deeply nested JSON, or JSON that is not an object."""
    try:
        obj = json.loads(blob.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{path}: {what} is nested too deeply to parse") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} is not a JSON object")
    return obj


def checkpoint_root(folder) -> str:
    """Real path of the folder the files of checkpoint folder ``folder`` must stay in."""
    real = os.path.realpath(folder)
    parent = os.path.dirname(real)
    repo = os.path.dirname(parent)
    if os.path.basename(parent) == "snapshots" and os.path.isdir(os.path.join(repo, "blobs")):
        return repo
    return real


def inside(path, root: str, what: str) -> str:
    """``path`` if it resolves (symlinks too) inside the real folder ``root``, else a ValueError
    that names ``what`` and the folder (never the content of the file)."""
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise ValueError(f"{what} resolves outside the checkpoint folder {root}; refusing to "
                         "read it")
    return path


def read_index(path) -> tuple[dict, list[str]]:
    """``weight_map`` (tensor -> shard name) of a sharded-checkpoint index, and the shard paths
    in natural order, each checked to exist inside the index's folder."""
    idx = read_json(path, "checkpoint index")
    wm = idx.get("weight_map")
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in wm.items()):
        raise ValueError(f"{path}: checkpoint index has no valid 'weight_map' "
                         "(tensor name -> shard file)")
    d = os.path.dirname(os.path.abspath(path))
    root = checkpoint_root(d)
    shards = []
    for shard in sorted(set(wm.values())):
        p = inside(os.path.join(d, shard), root, f"{path}: weight_map names shard {shard!r}, "
                                                 "which")
        if not os.path.isfile(p):
            raise ValueError(f"{path}: weight_map names shard {shard!r}, which does not exist "
                             f"in {d}")
        shards.append(p)
    return wm, shards


def require_size(path, needed: int, what: str) -> None:
    """Raise a ValueError naming ``path`` unless it still holds ``needed`` bytes: checked before
    each read of a memory-mapped tensor, as touching a mapped page past the end of a file that
    shrank would kill the process with SIGBUS."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ValueError(f"{path}: cannot read {what}: {exc.strerror}") from None
    if size < needed:
        raise ValueError(f"{path}: file is {size} bytes but {what} needs {needed} (truncated "
                         "while being read?)")


def open_zip(path, what: str) -> zipfile.ZipFile:
    """``zipfile.ZipFile(path)``; every way a damaged zip fails (zipfile raises BadZipFile,
    NotImplementedError for unknown versions or methods, EOFError, ...) as a ValueError."""
    try:
        return zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 -- any parse failure of an untrusted file
        raise ValueError(f"{path}: not a valid {what} (zip) file: {exc}") from None
