"""Checkpoint side files: JSON configs and shard indexes."""
from __future__ import annotations

import json
import os


def read_json(path, what) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} is not a JSON object")
    return obj


def read_index(path) -> dict:
    idx = read_json(path, "checkpoint index")
    wm = idx.get("weight_map")
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in wm.items()):
        raise ValueError(f"{path}: checkpoint index has no valid 'weight_map' "
                         "(tensor name -> shard file)")
    d = os.path.dirname(os.path.abspath(path))
    for shard in sorted(set(wm.values())):
        if not os.path.isfile(os.path.join(d, shard)):
            raise ValueError(f"{path}: weight_map names shard {shard!r}, which does not exist "
                             f"in {d}")
    return wm
