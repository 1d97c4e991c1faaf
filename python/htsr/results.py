"""Result files that grow as matrices finish, survive a kill, and resume.

``ResultsFile(path, options, resume=...)`` is the sink of ``htsr.analyze(..., out=path)``:

* ``.csv`` / ``.tsv`` / ``.jsonl`` are append-only: the column header (CSV/TSV) is written
  first, then each batch of finished rows is appended with one ``write`` and made durable
  with ``fsync``; a killed run leaves a file that ``pandas.read_csv`` / ``read_json(lines=True)``
  reads, holding every row that was finished (a torn last line, possible only on power loss
  mid-write, is dropped on resume).
* ``.json`` (one array) and ``.parquet`` cannot be appended: rows go to a journal
  ``<path>.journal.jsonl`` (same rules) and the file itself is written when the run ends.
* Every format has a side file ``<path>.htsr.json``: the options fingerprint
  (``AnalysisOptions.fingerprint()``), the numeric options, the column list and whether the run
  completed.  It is written (atomically) before the first row.

Resume: rows are keyed by ``(name, N, M, rf, slice_id)``; a matrix whose rows are in the file
with a status other than ``'error'`` is not computed again (error rows are retried).  A file
made with different numeric options is refused (``ValueError`` naming the options that
differ); so is a file without its side file.  At the end the rows are compacted (one row per
key, the last written wins) and sorted by ``(layer_id, slice_id)``, and the file is replaced
atomically (write to ``<path>.tmp``, fsync, rename): the final file does not depend on where
the run was interrupted.  Floats are written with ``repr`` (shortest round-trip), so a value
read back is bit-identical.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Iterable

from . import metrics as _metrics

__all__ = ["ResultsFile", "read_results", "FORMATS", "row_key"]

APPEND_FORMATS = (".csv", ".tsv", ".jsonl")
COMPACT_FORMATS = (".json", ".parquet")
FORMATS = APPEND_FORMATS + COMPACT_FORMATS
META_SUFFIX = ".htsr.json"
JOURNAL_SUFFIX = ".journal.jsonl"
_VERSION = 1

#: columns read back as text (everything else: int if it parses as one, else float)
_TEXT = {"name", "longname", "layer_type", "part", "source", "stored_dtype", "status",
         "warning", "message", "best_fit"}
#: text columns whose empty value is '' (the others: None)
_EMPTY_TEXT = {"warning", "best_fit"}


def file_columns(pool: bool, extra=()) -> list[str]:
    """The columns of a results file: every table column, the ``extra`` ones (columns of the
    matrices' metadata, such as a LoRA adapter's ``r``), plus ``message`` (error rows)."""
    cols = [c for c in _metrics.ID_COLUMNS + _metrics.METRIC_COLUMNS + _metrics.TRAILING_COLUMNS
            if pool is False or c != "slice_id"]
    return _metrics.order_columns(list(dict.fromkeys(cols + list(extra) + ["message"])))


def row_key(row: dict) -> tuple:
    """(name, N, M, rf, slice_id) -- what identifies a matrix across runs."""
    sid = row.get("slice_id")
    sid = -1 if sid is None or (isinstance(sid, float) and math.isnan(sid)) else int(sid)
    return (str(row["name"]), int(row["N"]), int(row["M"]), int(row["rf"]), sid)


def _plain(v):
    """A JSON/CSV-safe Python scalar (numpy scalars unwrapped)."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    return v


def _fsync_dir(path: str):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, data: bytes):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)


class _Lines:
    """An append-only text file of complete lines.  It starts as ``initial`` (written
    atomically: a resumed file is never half-rewritten); each ``append`` is one write + fsync."""

    def __init__(self, path: str, initial: str):
        self.path = path
        _atomic_write(path, initial.encode("utf-8"))
        self.f = open(path, "a", encoding="utf-8", newline="")

    def append(self, text: str):
        if text:
            self.f.write(text)
            self.f.flush()
            os.fsync(self.f.fileno())

    def close(self):
        if not self.f.closed:
            self.f.close()


def _json_line(row: dict, columns: list[str]) -> str:
    return json.dumps({c: _plain(row.get(c)) for c in columns}, allow_nan=True,
                      separators=(",", ":")) + "\n"


def _csv_text(rows: Iterable[dict], columns: list[str], sep: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    for row in rows:
        out = []
        for c in columns:
            v = _plain(row.get(c))
            out.append("" if v is None else repr(v) if isinstance(v, float) else v)
        w.writerow(out)
    return buf.getvalue()


def _parse_cell(col: str, s: str):
    if col in _TEXT:
        return s if s != "" or col in _EMPTY_TEXT else None
    if s == "":
        return math.nan
    if s in ("True", "False"):
        return s == "True"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s        # a text column of the metadata (extra columns)


def _read_lines_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        data = f.read()
    for line in data[:data.rfind(b"\n") + 1].splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def _read_lines_csv(path: str, sep: str) -> list[dict]:
    with open(path, "rb") as f:
        data = f.read()
    text = data[:data.rfind(b"\n") + 1].decode("utf-8")
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header = next(reader, None)
    if header is None:
        return []
    return [{c: _parse_cell(c, s) for c, s in zip(header, rec)} for rec in reader
            if len(rec) == len(header)]


def _ext(path: str) -> str:
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unknown results format {ext or '(none)'!r}; "
                         f"use one of {', '.join(FORMATS)}")
    return ext


def _read_rows(path: str, ext: str) -> list[dict]:
    if ext == ".jsonl":
        return _read_lines_jsonl(path)
    if ext in (".csv", ".tsv"):
        return _read_lines_csv(path, "\t" if ext == ".tsv" else ",")
    if ext == ".json":
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    import pandas as pd
    return pd.read_parquet(path).to_dict("records")


def _sort_key(row: dict):
    sid = row.get("slice_id")
    sid = -1 if sid is None or (isinstance(sid, float) and math.isnan(sid)) else int(sid)
    return (int(row["layer_id"]), sid)


def compact(rows: list[dict]) -> list[dict]:
    """One row per key (the last wins), sorted by (layer_id, slice_id)."""
    last = {}
    for r in rows:
        last[row_key(r)] = r
    return sorted(last.values(), key=_sort_key)


def _frame(rows: list[dict], columns: list[str]):
    import pandas as pd
    df = pd.DataFrame(rows, columns=columns)
    if "message" in df and not df["message"].notna().any():
        df = df.drop(columns="message")
    return df


def read_results(path) -> "pandas.DataFrame":  # noqa: F821
    """The rows of a results file, finished or not (journal included), compacted and sorted."""
    path = str(path)
    ext = _ext(path)
    meta = _read_meta(path)
    rows = []
    if os.path.exists(path) and (ext in APPEND_FORMATS or (meta or {}).get("complete")):
        rows += _read_rows(path, ext)
    if ext in COMPACT_FORMATS and os.path.exists(path + JOURNAL_SUFFIX):
        rows += _read_lines_jsonl(path + JOURNAL_SUFFIX)
    cols = (meta or {}).get("columns") or _metrics.order_columns(
        list(dict.fromkeys(c for r in rows for c in r)))
    return _frame(compact(rows), cols)


def _read_meta(path: str) -> dict | None:
    mp = path + META_SUFFIX
    if not os.path.exists(mp):
        return None
    try:
        with open(mp, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{mp}: unreadable results side file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("htsr_results") != _VERSION:
        raise ValueError(f"{mp}: not an htsr results side file (version {_VERSION})")
    return meta


class ResultsFile:
    """Append-as-you-go, crash-consistent, resumable results file (see the module docstring)."""

    def __init__(self, path, options, *, resume: bool = False, extra_columns=()):
        self.path = str(path)
        self.ext = _ext(self.path)
        self.options = options
        self.fingerprint = options.fingerprint()
        self.columns = file_columns(options.pool, extra_columns)
        self.previous: list[dict] = []
        meta = _read_meta(self.path) if resume else None
        journal = self.path + JOURNAL_SUFFIX
        if resume and meta is None and (os.path.exists(self.path) or os.path.exists(journal)):
            raise ValueError(f"{self.path}: cannot resume: no {os.path.basename(self.path)}"
                             f"{META_SUFFIX} side file, so the options of the rows in it are "
                             "unknown (remove the file or write to a new one)")
        if meta is not None:
            self._check(meta)
            self.columns = list(meta.get("columns") or self.columns)
            if self.ext in APPEND_FORMATS:
                self.previous = _read_rows(self.path, self.ext) if os.path.exists(self.path) else []
            else:
                if meta.get("complete") and os.path.exists(self.path):
                    self.previous = _read_rows(self.path, self.ext)
                if os.path.exists(journal):
                    self.previous += _read_lines_jsonl(journal)
        else:
            resume = False
            for p in (journal, self.path):
                if os.path.exists(p) and self.ext in COMPACT_FORMATS:
                    os.remove(p)
        self._write_meta(complete=False)
        if self.ext in APPEND_FORMATS:
            # a resumed file is rewritten with every column (a finished one may lack 'message')
            self.lines = _Lines(self.path, self._encode(self.previous, self.columns, header=True))
        else:
            # the journal holds every row so far (a finished file's rows are copied into it)
            self.lines = _Lines(journal, "".join(_json_line(r, self.columns) for r in self.previous))

    @property
    def _sep(self) -> str:
        return "\t" if self.ext == ".tsv" else ","

    def _check(self, meta: dict):
        if meta.get("fingerprint") == self.fingerprint:
            return
        old = meta.get("numeric") or {}
        new = json.loads(json.dumps(self.options.numeric(), default=repr))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        what = ", ".join(f"{k}={old.get(k)!r} in the file vs {new.get(k)!r} now" for k in diff)
        raise ValueError(f"{self.path}: cannot resume: it was written with different analysis "
                         f"options ({what or 'fingerprint ' + str(meta.get('fingerprint'))}); "
                         "use the same options or write to a new file")

    def _write_meta(self, complete: bool):
        meta = {"htsr_results": _VERSION, "fingerprint": self.fingerprint,
                "numeric": self.options.numeric(), "columns": self.columns,
                "complete": bool(complete)}
        _atomic_write(self.path + META_SUFFIX,
                      json.dumps(meta, indent=1, default=repr).encode())

    def done_keys(self) -> set:
        """Keys of the matrices already in the file with a result (not an error)."""
        return {row_key(r) for r in self.previous if r.get("status") != "error"}

    def _encode(self, rows: list[dict], columns: list[str], header: bool = False) -> str:
        """Lines of an append format (CSV/TSV: with the column line first if ``header``)."""
        if self.ext in (".csv", ".tsv"):
            head = [{c: c for c in columns}] if header else []
            return _csv_text(head + list(rows), columns, self._sep)
        return "".join(_json_line(r, columns) for r in rows)

    def append(self, rows: list[dict]):
        """Write ``rows`` durably (one write, one fsync)."""
        if rows:
            self.lines.append(self._encode(rows, self.columns))

    def finish(self):
        """Compact, sort and atomically replace the file; returns the table (DataFrame)."""
        self.lines.close()
        journal = self.path + JOURNAL_SUFFIX
        if self.ext in APPEND_FORMATS:
            rows = compact(_read_rows(self.path, self.ext))
        else:
            rows = compact(_read_lines_jsonl(journal))
        df = _frame(rows, self.columns)
        columns = list(df.columns)              # without 'message' when no row is an error
        if self.ext in APPEND_FORMATS:
            data = self._encode(rows, columns, header=True).encode()
        elif self.ext == ".json":
            data = json.dumps([{c: _plain(r.get(c)) for c in columns} for r in rows],
                              indent=1, allow_nan=True).encode()
        else:
            buf = io.BytesIO()
            df.to_parquet(buf, index=False)
            data = buf.getvalue()
        _atomic_write(self.path, data)
        self._write_meta(complete=True)
        if os.path.exists(journal):
            os.remove(journal)
        return df

    def close(self):
        self.lines.close()
