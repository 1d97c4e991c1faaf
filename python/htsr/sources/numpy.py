"""NumPy ``.npz`` (members as a state_dict; uncompressed members memory-mapped) and ``.npy``
files (one tensor each, named by the file stem)."""
from __future__ import annotations

import functools
import math
import os
import struct
import zipfile

import numpy as np

from .base import Entry, Format, np_entry
from .dtypes import FLOAT_NAMES
from .files import open_zip, require_size
from .naming import natural_key


def _npy_member_header(fp):
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def npz_entries(path: str) -> list[Entry]:
    out = []
    zf = open_zip(path, ".npz")
    with zf, open(path, "rb") as raw:
        for zi in zf.infolist():
            if not zi.filename.endswith(".npy"):
                continue
            key = zi.filename[:-4]
            try:
                with zf.open(zi) as fp:
                    shape, fortran, dtype = _npy_member_header(fp)
                    hdr_len = fp.tell()
            except Exception as exc:
                raise ValueError(f"{path}: member {zi.filename!r}: invalid .npy header: "
                                 f"{exc}") from None
            if dtype.hasobject or math.prod(shape) == 0:
                continue
            what = f"{path}: member {zi.filename!r}"
            need = math.prod(shape) * dtype.itemsize
            _check_member_size(zi, hdr_len, need, shape, dtype, what)
            if zi.compress_type == zipfile.ZIP_STORED:
                raw.seek(zi.header_offset)
                local = raw.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04":
                    raise ValueError(f"{what}: bad local zip header")
                n, x = struct.unpack("<HH", local[26:30])
                offset = zi.header_offset + 30 + n + x + hdr_len
                if offset + need > os.path.getsize(path):
                    raise ValueError(f"{what}: data runs past the end of the file")
                getter = functools.partial(_mapped, path, offset, dtype, shape, fortran,
                                           zi.filename)
                whole = None
            else:
                getter = functools.partial(_npz_member, path, key, what)
                whole = zi.compress_size
            dname = dtype.name
            kind = ("float" if dtype.kind == "f" and dname in FLOAT_NAMES
                    else "int" if dtype.kind in "iub" else "other")
            out.append(Entry(key, tuple(shape), dname, kind, path,
                              lambda g=getter: np.asarray(g()), whole))
    out.sort(key=lambda e: natural_key(e.key))
    return out


# deflate emits at most 258 bytes per 2 bits of input: ~1032:1 (zlib technical details)
_DEFLATE_MAX_RATIO = 1032


def _check_member_size(zi: zipfile.ZipInfo, hdr_len: int, need: int, shape, dtype, what):
    """The member must hold the ``need`` data bytes its npy header announces, and the sizes in
    the zip directory must be possible, so that nothing is read past it or allocated for it."""
    if zi.compress_type == zipfile.ZIP_STORED and zi.compress_size != zi.file_size:
        raise ValueError(f"{what}: stored member with compressed size {zi.compress_size} != "
                         f"size {zi.file_size}")
    if (zi.compress_type == zipfile.ZIP_DEFLATED
            and zi.file_size > _DEFLATE_MAX_RATIO * zi.compress_size + 1024):
        raise ValueError(f"{what}: zip directory claims {zi.file_size} bytes, more than deflate "
                         f"can produce from {zi.compress_size}")
    if hdr_len + need > zi.file_size:
        raise ValueError(f"{what}: npy header says {tuple(shape)} {dtype} = {need} bytes, but "
                         f"the member holds {max(zi.file_size - hdr_len, 0)}")


def _mapped(path, offset, dtype, shape, fortran, member):
    require_size(path, offset + math.prod(shape) * dtype.itemsize, f"member {member!r}")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")


def _npz_member(path, key, what):
    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except Exception as exc:  # a file changed since its directory was read
        raise ValueError(f"{what}: cannot read: {exc}") from None


def npy_entries(files: list[str]) -> list[Entry]:
    out = []
    for p in files:
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{p}: not a valid .npy file: {exc}") from None
        key = os.path.basename(p)[: -len(".npy")]
        e = np_entry(key, arr, p)
        if isinstance(arr, np.memmap):
            e.get = functools.partial(_checked, e.get, p, arr.offset + arr.nbytes)
        out.append(e)
    out.sort(key=lambda e: natural_key(e.key))
    return out


def _checked(get, path, size):
    require_size(path, size, "its array data")
    return get()


def numpy_entries(files: list[str], index: str | None = None) -> list[Entry]:
    """Entries of ``.npz`` and ``.npy`` files together, in natural name order."""
    npz = [p for p in files if p.lower().endswith(".npz")]
    npy = [p for p in files if p.lower().endswith(".npy")]
    out = [e for p in npz for e in npz_entries(p)] + npy_entries(npy)
    return sorted(out, key=lambda e: natural_key(e.key))


FORMAT = Format("numpy", (".npz", ".npy"), numpy_entries, looks_for="*.npz, *.npy")
