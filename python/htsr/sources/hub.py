"""Hugging Face model ids (``org/name``, optionally ``org/name@revision``) resolved from the local
Hugging Face cache, without network.

Cache folders, in order (huggingface_hub's rules): ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``,
``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``.  A model
lives in ``<cache>/models--org--name/snapshots/<commit>``; the revision is the commit named by
``refs/<revision>`` (default ``main``) or a commit hash (prefix) given after ``@``; without a
ref, the only snapshot, else the most recently modified one.
"""
from __future__ import annotations

import os
import re

_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


def cache_dirs() -> list[str]:
    env = os.environ
    out = [env.get("HF_HUB_CACHE"), env.get("HUGGINGFACE_HUB_CACHE")]
    if env.get("HF_HOME"):
        out.append(os.path.join(env["HF_HOME"], "hub"))
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out.append(os.path.join(xdg, "huggingface", "hub"))
    return list(dict.fromkeys(d for d in out if d))


def looks_like_id(s: str) -> bool:
    return bool(_ID.match(s)) and not s.startswith((".", "/")) and not os.path.exists(s)


def resolve(model_id: str) -> str:
    """The snapshot folder of ``model_id`` in the local cache; FileNotFoundError saying where it
    looked otherwise."""
    m = _ID.match(model_id)
    repo, rev = m["repo"], m["rev"] or "main"
    folder = "models--" + repo.replace("/", "--")
    looked = []
    for cache in cache_dirs():
        base = os.path.join(cache, folder)
        looked.append(base)
        snaps = os.path.join(base, "snapshots")
        if not os.path.isdir(snaps):
            continue
        ref = os.path.join(base, "refs", rev)
        commit = None
        if os.path.isfile(ref):
            with open(ref, encoding="utf-8", errors="replace") as fh:
                commit = fh.read().strip()
        names = sorted(os.listdir(snaps))
        if commit is None and m["rev"]:
            hits = [n for n in names if n.startswith(m["rev"])]
            commit = hits[0] if len(hits) == 1 else None
        elif commit is None and names:
            commit = max(names, key=lambda n: os.path.getmtime(os.path.join(snaps, n)))
        if commit and os.path.isdir(os.path.join(snaps, commit)):
            return os.path.join(snaps, commit)
    raise FileNotFoundError(f"{model_id}: not a file or folder, and not in the local Hugging "
                            f"Face cache (revision {rev!r}; looked in {', '.join(looked)}); "
                            "htsr does not download: fetch it first, e.g. `hf download "
                            f"{repo}`")
