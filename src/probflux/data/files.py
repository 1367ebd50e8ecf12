"""Data files read by name: the one place that decides what the columns of a ``.csv``/``.tsv``/``.npz``/``.npy`` are.

:func:`read_file` returns a :class:`DataFile` (plain numpy arrays and the *layout* the file has); the per-kind
readers turn it into library objects: :func:`probflux.data.load_points` (time-stamped points),
:func:`probflux.data.read_events` / :func:`probflux.data.event_file_splits` (event sequences) and
:func:`probflux.data.read_snapshots` (population snapshots). docs/data.md shows the workflows.

**CSV / TSV** (``,`` / tab): the first non-comment line is a REQUIRED header; columns are found by name,
case-insensitively (lines starting with ``#`` are comments):

* time: the one column named ``t`` or ``time`` (or ``time_index`` / ``day``: then the file holds population
  snapshots, one per distinct value); ``columns.t`` names it otherwise;
* sequence (optional): ``sequence``, ``seq``, ``sequence_id`` or ``id`` — the event sequence each row belongs to
  (``columns.sequence`` otherwise); ``magnitude``/``mag`` (optional) is recognised and not used;
* context (optional, points): ``c1..cC`` or ``context1..contextC`` (``columns.context`` otherwise);
* coordinates: every other column, which must be named ``x[, y[, z]]`` or ``x1..xD`` (``x_1``, ``x0`` ... too),
  ordered by name; ``columns.x`` lists them otherwise (any names, in that order; the remaining columns are then
  ignored).

Anything else — no header, two candidate time columns, a column that is neither recognised nor listed — is
rejected with a ``ValueError`` naming the columns found and the ones expected; nothing is guessed. A header
``X,Y,T`` is read as time ``T`` and coordinates ``(X, Y)``.

**NPZ** layouts (``DataFile.layout``):

* ``t (N,)``, ``x (N, D)`` [, ``context (N, C)``] [, ``sequence (N,)``] — a table (as a CSV);
* ``X (N, D)``, ``time_index (N,)`` [, ``times (K,)``: the time of index ``k``; default the index itself] —
  ``snapshots`` (the TIGON files);
* ``train``, ``val``, ``test`` — ``splits``, each ``(1, N, 1 + D)`` (EarthquakeNPP: one long sequence per split) or
  ``(N, 1 + D)``; or keys ``train_*``, ``val_*``, ``test_*``, one ``(n_i, 1 + D)`` sequence each (DSTPP files);
* two or more arrays ``(n_i, 1 + D)`` with other keys — ``sequences``, one per key (Neural STPP files);
* a single array ``(N, 1 + D [+ C])`` — a table with columns ``[t, x_1..x_D]`` by position.

**NPY**: ``(N, 1 + D [+ C])`` — a table by position; ``(S, n, 1 + D)`` — ``S`` sequences.

Row numbers in messages are 1-based *line* numbers of the file for CSV/TSV, 0-based indices otherwise.
"""
from __future__ import annotations

import csv
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

__all__ = ["Columns", "DataFile", "read_file", "resolve_kind", "DATA_KINDS", "EXTENSIONS"]

DATA_KINDS = ("points", "events", "snapshots")
EXTENSIONS = (".csv", ".tsv", ".npz", ".npy")
TIME_NAMES = ("t", "time")
SNAPSHOT_TIME_NAMES = ("time_index", "day")
SEQUENCE_NAMES = ("sequence", "seq", "sequence_id", "id")
MAGNITUDE_NAMES = ("magnitude", "mag")
SPLITS = ("train", "val", "test")
_CONTEXT = re.compile(r"(?:c|context)_?(\d+)")
_COORD_INDEXED = re.compile(r"x_?(\d+)")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Columns:
    """Column names given by the user (``data.columns``); ``None`` = find by the standard names.

    ``t``: the time column; ``x``: the coordinate columns in order; ``sequence``: the sequence column;
    ``context``: context columns (points only).
    """

    t: Optional[str] = None
    x: Optional[tuple[str, ...]] = None
    sequence: Optional[str] = None
    context: Optional[tuple[str, ...]] = None

    @classmethod
    def coerce(cls, obj: Any) -> Columns:
        """From ``None``, a :class:`Columns`, a mapping or any object with these attributes (a config section)."""
        if obj is None:
            return cls()
        if isinstance(obj, Columns):
            return obj
        get = obj.get if isinstance(obj, Mapping) else (lambda k, d=None: getattr(obj, k, d))
        unknown = set(obj) - {"t", "x", "sequence", "context"} if isinstance(obj, Mapping) else set()
        if unknown:
            raise ValueError(f"columns: unknown key(s) {sorted(unknown)}; valid keys: t, x, sequence, context")

        def names(v: Any, key: str) -> Optional[tuple[str, ...]]:
            if v is None:
                return None
            if isinstance(v, str) or not all(isinstance(s, str) for s in v) or not len(v):
                raise ValueError(f"columns.{key} must be a non-empty list of column names, got {v!r}")
            return tuple(v)

        for key in ("t", "sequence"):
            if get(key) is not None and not isinstance(get(key), str):
                raise ValueError(f"columns.{key} must be a column name, got {get(key)!r}")
        return cls(get("t"), names(get("x"), "x"), get("sequence"), names(get("context"), "context"))


@dataclass
class DataFile:
    """What one data file holds, identified by name (numpy arrays; no kind-specific validation yet).

    ``layout``: ``"table"`` (``t: (N,)``, ``x: (N, D)``, optional ``context: (N, C)``, ``sequence: (N,)`` str keys),
    ``"snapshots"`` (``t: (N,)`` = the snapshot label of each row, ``x: (N, D)``, optional ``times: (K,)`` per
    sorted label), ``"sequences"`` (``sequences``: ``[(key, (n_i, 1 + D))]``) or ``"splits"`` (``splits``:
    ``{"train"|"val"|"test": [(key, (n_i, 1 + D))]}``). ``matrix`` is the raw positional array of a one-array
    file (``[t, x.., context..]``), ``columns`` says how the columns were identified, ``magnitude`` is set when a
    magnitude column was recognised (an event catalog).
    """

    path: str
    name: str
    layout: str
    t: Optional[np.ndarray] = None
    x: Optional[np.ndarray] = None
    context: Optional[np.ndarray] = None
    sequence: Optional[np.ndarray] = None
    times: Optional[np.ndarray] = None
    sequences: Optional[list[tuple[str, np.ndarray]]] = None
    splits: Optional[dict[str, list[tuple[str, np.ndarray]]]] = None
    matrix: Optional[np.ndarray] = None
    magnitude: Optional[str] = None
    columns: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def implied_kind(self) -> Optional[str]:
        """The data kind the layout itself says (``None`` for a plain table ``t, x``: points or one event sequence)."""
        if self.layout == "snapshots":
            return "snapshots"
        if self.layout in ("sequences", "splits") or self.sequence is not None or self.magnitude is not None:
            return "events"
        return None

    def describe(self) -> str:
        """One line: the layout and how its columns were identified."""
        what = {"table": "a table", "snapshots": "population snapshots", "sequences": "event sequences",
                "splits": "train/val/test event splits"}[self.layout]
        return f"{self.name}: {what}{' (' + self.columns + ')' if self.columns else ''}"


def resolve_kind(data: DataFile, kind: Optional[str] = None, *, event_options: bool = False, snapshot_options: bool = False) -> str:
    """The data kind to read ``data`` as: ``kind`` when given (checked against the layout), else the layout's own
    (:attr:`DataFile.implied_kind`); a plain table is ``events`` when ``event_options`` (history, windows or cut times
    were asked for), ``snapshots`` when ``snapshot_options`` (``leave_out``/``whiten``), else ``points``."""
    implied = data.implied_kind
    if kind is not None:
        if kind not in DATA_KINDS:
            raise ValueError(f"data.kind must be one of {', '.join(DATA_KINDS)}; got {kind!r}")
        if data.layout in ("sequences", "splits") and kind != "events":
            raise ValueError(f"{data.describe()} cannot be read as data.kind={kind!r}; it holds event sequences (data.kind: events)")
        if data.layout == "snapshots" and kind != "snapshots":
            raise ValueError(f"{data.describe()} cannot be read as data.kind={kind!r}; it holds population snapshots "
                             "(data.kind: snapshots)")
        return kind
    if event_options and snapshot_options:
        raise ValueError(f"{data.name}: event options (data.history, data.window, data.cuts) and snapshot options "
                         "(data.leave_out, data.whiten) are both set; set data.kind")
    if implied is not None:
        return implied
    return "events" if event_options else "snapshots" if snapshot_options else "points"


# ------------------------------------------------------------------------------------------ reading


def read_file(path: PathLike, columns: Any = None) -> DataFile:
    """Read ``path`` (``.csv``, ``.tsv``, ``.npz``, ``.npy``) into a :class:`DataFile` by the rules of this module.

    ``columns``: a :class:`Columns` (or mapping / config section) naming CSV columns. Raises ``FileNotFoundError``
    for a missing file and ``ValueError`` naming the file otherwise.
    """
    cols = Columns.coerce(columns)
    path = os.fspath(path)
    name = os.path.basename(path) or path
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"data path {path!r} is a directory, not a {', '.join(EXTENSIONS)} file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"{name}: unsupported file type {ext or '(no extension)'!r}; use {', '.join(EXTENSIONS[:-1])} or {EXTENSIONS[-1]}")
    if ext in (".npz", ".npy") and (cols.t or cols.x or cols.sequence or cols.context):
        raise ValueError(f"{name}: data.columns names CSV/TSV columns; a {ext} file has fixed keys (see docs/data.md)")
    try:
        if ext in (".csv", ".tsv"):
            return _read_delimited(path, name, "," if ext == ".csv" else "\t", cols)
        if ext == ".npz":
            return _read_npz(path, name)
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if name in msg else f"{name}: cannot read the file ({msg})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # truncated / corrupt archives
        raise ValueError(f"{name}: cannot read the file ({e})") from None
    return _from_array(arr, path, name, None)


def _numeric(a: np.ndarray, what: str, name: str) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: {what} must be numeric, got dtype {a.dtype}")
    return a


def _from_array(arr: np.ndarray, path: str, name: str, key: Optional[str]) -> DataFile:
    """A table ``[t, x..]`` or ``S`` sequences from one array (``key``: its name in an ``.npz``; ``None`` for ``.npy``)."""
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array{'' if key is None else f' {key!r}'}, got dtype {arr.dtype}")
    key = key or "array"
    if arr.ndim == 3:
        if arr.shape[2] < 2:
            raise ValueError(f"{name}: array {key!r} of shape {arr.shape} must be (S, n, 1 + D) with D >= 1")
        return DataFile(path, name, "sequences", sequences=[(f"seq_{i:04d}", arr[i]) for i in range(arr.shape[0])],
                        columns=f"{arr.shape[0]} sequences [t, x_1..x_{arr.shape[2] - 1}] of array {key!r}")
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name}: expected an array of shape (N, 1 + D) with columns [t, x_1..x_D] and D >= 1; got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} contains no data rows")
    return DataFile(path, name, "table", t=arr[:, 0], x=arr[:, 1:], matrix=arr,
                    columns=f"columns [t, x_1..x_{arr.shape[1] - 1}] by position")


def _shapes(z: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(z.items())[:8]) + (" ..." if len(z) > 8 else "")


def _read_npz(path: str, name: str) -> DataFile:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    keys = list(arrays)
    if not keys:
        raise ValueError(f"{name} holds no arrays")
    found = f"found {_shapes(arrays)}"
    if all(k in arrays for k in SPLITS):
        extra = [k for k in keys if k not in SPLITS]
        if extra:
            raise ValueError(f"{name}: train/val/test arrays together with other arrays {extra}; {found}")
        splits = {}
        for s in SPLITS:
            a = _numeric(arrays[s], f"array {s!r}", name)
            if a.ndim == 3 and a.shape[2] >= 2:
                splits[s] = [(f"{s}" if a.shape[0] == 1 else f"{s}_{i:04d}", a[i]) for i in range(a.shape[0])]
            elif a.ndim == 2 and a.shape[1] >= 2:
                splits[s] = [(s, a)]
            else:
                raise ValueError(f"{name}: array {s!r} must have shape (1, N, 1 + D) (EarthquakeNPP) or (N, 1 + D); {found}")
        return DataFile(path, name, "splits", splits=splits, columns="arrays train, val, test: [t, x_1..x_D] (EarthquakeNPP layout)")
    prefixed = [k for k in keys if k.split("_", 1)[0] in SPLITS and "_" in k]
    if prefixed:
        if len(prefixed) != len(keys):
            raise ValueError(f"{name}: arrays named train_*/val_*/test_* together with others "
                             f"{[k for k in keys if k not in prefixed][:5]}; {found}")
        splits = {s: [(k, _numeric(arrays[k], f"array {k!r}", name)) for k in keys if k.startswith(s + "_")] for s in SPLITS}
        missing = [s for s in SPLITS if not splits[s]]
        if missing:
            raise ValueError(f"{name}: arrays train_*, val_* and test_* expected (one sequence each); "
                             f"none for {', '.join(missing)}; {found}")
        return DataFile(path, name, "splits", splits=splits, columns="arrays <split>_<key>: one sequence [t, x_1..x_D] each")
    low = {k.lower(): k for k in keys}
    if len(low) != len(keys):
        raise ValueError(f"{name}: array names differ only by case; {found}")
    label_key = next((low[k] for k in SNAPSHOT_TIME_NAMES if k in low), None)
    if label_key is not None:
        if "x" not in low:
            raise ValueError(f"{name}: has {label_key!r} (snapshot labels) but no 'X' (cells, (N, D)); {found}")
        xk = low["x"]
        x, lab = _numeric(arrays[xk], f"array {xk!r}", name), _numeric(arrays[label_key], f"array {label_key!r}", name)
        extra = [k for k in keys if k not in (xk, label_key, low.get("times"))]
        if extra:
            raise ValueError(f"{name}: unexpected arrays {extra} next to {xk!r} and {label_key!r} "
                             f"(snapshots: X, time_index and optionally times); {found}")
        if x.ndim != 2 or lab.shape != (x.shape[0],):
            raise ValueError(f"{name}: expected {xk!r} of shape (N, D) and {label_key!r} of shape (N,); {found}")
        times = None
        if "times" in low:
            times = _numeric(arrays[low["times"]], "array 'times'", name).reshape(-1)
        return DataFile(path, name, "snapshots", t=lab, x=x, times=times,
                        columns=f"cells {xk!r}, snapshot labels {label_key!r}" + (", times 'times'" if times is not None else ""))
    if "t" in low and "x" in low:
        allowed = {"t", "x", "context", "sequence"}
        extra = [k for k in keys if k.lower() not in allowed]
        if extra:
            raise ValueError(f"{name}: unexpected arrays {extra} next to 't' and 'x' "
                             f"(expected t, x and optionally context, sequence); {found}")
        t, x = _numeric(arrays[low["t"]], "array 't'", name), _numeric(arrays[low["x"]], "array 'x'", name)
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if x.ndim == 1:
            x = x[:, None]
        ctx = arrays.get(low.get("context", ""))
        if ctx is not None:
            ctx = _numeric(ctx, "array 'context'", name)
            ctx = ctx[:, None] if ctx.ndim == 1 else ctx
        seq = arrays.get(low.get("sequence", ""))
        if t.ndim == 1 and t.shape[0] == 0:
            raise ValueError(f"{name} contains no data rows")
        return DataFile(path, name, "table", t=t, x=x, context=ctx, sequence=None if seq is None else seq.astype(str),
                        columns="arrays t, x" + (", context" if ctx is not None else "") + (", sequence" if seq is not None else ""))
    if len(keys) == 1:
        return _from_array(arrays[keys[0]], path, name, keys[0])
    if all(a.ndim == 2 and a.shape[1] >= 2 and a.dtype.kind in "biuf" for a in arrays.values()):
        return DataFile(path, name, "sequences", sequences=list(arrays.items()),
                        columns=f"{len(keys)} arrays, one sequence [t, x_1..x_D] each (Neural STPP layout)")
    raise ValueError(f"{name}: cannot tell what the arrays are; {found}; expected 't' and 'x' (points or events), 'X' and "
                     "'time_index' (snapshots), 'train'/'val'/'test' (EarthquakeNPP), one (n_i, 1 + D) array per sequence "
                     "(Neural STPP), or a single (N, 1 + D) array")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _read_delimited(path: str, name: str, delimiter: str, cols: Columns) -> DataFile:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not a text file ({e})") from None
    numbered = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise ValueError(f"{name} is empty: a header row naming the columns (e.g. t,x,y) and data rows are required")
    rows = list(csv.reader([line for _, line in numbered], delimiter=delimiter, skipinitialspace=True))
    header = [h.strip() for h in rows[0]]
    sep = "comma" if delimiter == "," else "tab"
    if any(_is_number(h) for h in header) or not all(header):
        raise ValueError(f"{name}: line {numbered[0][0]} ({','.join(header)}) is not a header; the first line must name the "
                         f"{sep}-separated columns (e.g. t,x,y): t or time, coordinates x,y,... or x1..xD")
    low = [h.lower() for h in header]
    dup = next((h for i, h in enumerate(low) if h in low[:i]), None)
    if dup is not None:
        raise ValueError(f"{name}: column {dup!r} appears twice in the header (names are matched case-insensitively): {header}")
    body = rows[1:]
    if not body:
        raise ValueError(f"{name} contains no data rows")
    for (lineno, _), r in zip(numbered[1:], body):
        if len(r) != len(header):
            raise ValueError(f"{name}: line {lineno} has {len(r)} fields but the header has {len(header)} ({', '.join(header)})")
    roles = _identify(header, cols, name)
    data = {c: [r[c].strip() for r in body] for c in range(len(header))}
    lines = [n for n, _ in numbered[1:]]

    def numbers(c: int) -> np.ndarray:
        try:
            v = np.asarray(data[c], dtype=np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(data[c]) if not _is_number(v))
            raise ValueError(f"{name}: line {lines[bad]}: column {header[c]!r} holds {data[c][bad]!r}, not a number") from None
        if not np.isfinite(v).all():
            bad = int(np.nonzero(~np.isfinite(v))[0][0])
            raise ValueError(f"{name}: line {lines[bad]}: column {header[c]!r} holds {data[c][bad]!r}; times, coordinates and "
                             "context must be finite numbers (drop or fill that row)")
        return v

    t = numbers(roles["t"])
    x = np.stack([numbers(c) for c in roles["x"]], 1)
    ctx = np.stack([numbers(c) for c in roles["context"]], 1) if roles["context"] else None
    seq = np.asarray(data[roles["sequence"]], dtype=str) if roles["sequence"] is not None else None
    mag = header[roles["magnitude"]] if roles["magnitude"] is not None else None
    desc = [f"time {header[roles['t']]!r}", f"coordinates {[header[c] for c in roles['x']]}"]
    if seq is not None:
        desc.append(f"sequence {header[roles['sequence']]!r}")
        if len(np.unique(seq)) == len(seq) and len(seq) > 1:
            raise ValueError(f"{name}: column {header[roles['sequence']]!r} gives every row its own sequence ({len(seq)} sequences of one "
                             "event); if it is an event id, name the real sequence column in data.columns.sequence or drop the column")
    if ctx is not None:
        desc.append(f"context {[header[c] for c in roles['context']]}")
    if mag is not None:
        desc.append(f"magnitude {mag!r} (not used)")
    if roles["ignored"]:
        desc.append(f"ignored {[header[c] for c in roles['ignored']]}")
    layout = "snapshots" if low[roles["t"]] in SNAPSHOT_TIME_NAMES else "table"
    if layout == "snapshots" and seq is not None:
        raise ValueError(f"{name}: a snapshot label column {header[roles['t']]!r} and a sequence column {header[roles['sequence']]!r}; "
                         "snapshots have no sequences (set data.columns.t to the time column of the events)")
    return DataFile(path, name, layout, t=t, x=x, context=ctx, sequence=seq, magnitude=mag, columns=", ".join(desc))


def _identify(header: list[str], cols: Columns, name: str) -> dict[str, Any]:
    """Column roles by name: ``{"t": i, "x": [i..], "sequence": i|None, "context": [i..], "magnitude": i|None, "ignored": [..]}``."""
    low = [h.lower() for h in header]
    found = f"found columns {header}"

    def given(v: str, key: str) -> int:
        if v in header:
            return header.index(v)
        if v.lower() in low:
            return low.index(v.lower())
        raise ValueError(f"{name}: data.columns.{key} = {v!r} is not a column; {found}")

    def unique(names: Sequence[str], what: str, key: str) -> Optional[int]:
        hits = [i for i, h in enumerate(low) if h in names]
        if len(hits) > 1:
            raise ValueError(f"{name}: ambiguous {what}: columns {[header[i] for i in hits]} could each be it; "
                             f"set data.columns.{key} to one of them ({found})")
        return hits[0] if hits else None

    if cols.t is not None:
        t = given(cols.t, "t")
    else:
        t = unique(TIME_NAMES + SNAPSHOT_TIME_NAMES, "time column", "t")
        if t is None:
            raise ValueError(f"{name}: no time column; {found}; expected one named t or time (time_index or day for population "
                             "snapshots), or set data.columns.t")
    seq = given(cols.sequence, "sequence") if cols.sequence is not None else unique(SEQUENCE_NAMES, "sequence column", "sequence")
    mags = [i for i, h in enumerate(low) if h in MAGNITUDE_NAMES]
    mag = mags[0] if mags else None
    if cols.context is not None:
        ctx = [given(c, "context") for c in cols.context]
    else:
        ctx = sorted((i for i, h in enumerate(low) if _CONTEXT.fullmatch(h)), key=lambda i: int(_CONTEXT.fullmatch(low[i]).group(1)))
    taken = {t, *ctx, *mags} | ({seq} if seq is not None else set())
    if cols.x is not None:
        x = [given(c, "x") for c in cols.x]
        clash = [header[i] for i in x if i in taken]
        if clash:
            raise ValueError(f"{name}: data.columns.x lists {clash}, which is also the time, sequence, magnitude or context column")
        if len(set(x)) != len(x):
            raise ValueError(f"{name}: data.columns.x lists a column twice: {list(cols.x)}")
        ignored = [i for i in range(len(header)) if i not in taken and i not in x]
        return {"t": t, "x": x, "sequence": seq, "context": ctx, "magnitude": mag, "ignored": ignored}
    rest = [i for i in range(len(header)) if i not in taken]
    names = [low[i] for i in rest]
    if not rest:
        raise ValueError(f"{name}: no coordinate column; {found}; expected x[, y[, z]] or x1..xD next to the time column")
    letters = "xyz"[:len(rest)]
    if len(rest) <= 3 and sorted(names) == sorted(letters):
        x = [rest[names.index(c)] for c in letters]
    elif all(_COORD_INDEXED.fullmatch(n) for n in names):
        idx = [int(_COORD_INDEXED.fullmatch(n).group(1)) for n in names]
        lo = min(idx)
        if lo not in (0, 1) or sorted(idx) != list(range(lo, lo + len(idx))):
            raise ValueError(f"{name}: coordinate columns {[header[i] for i in rest]} are not x1..xD (or x0..x(D-1)) without gaps; {found}")
        x = [rest[idx.index(k)] for k in range(lo, lo + len(idx))]
    else:
        used = [f"time {header[t]!r}"] + ([f"sequence {header[seq]!r}"] if seq is not None else []) + \
               ([f"magnitude {header[mag]!r}"] if mag is not None else []) + ([f"context {[header[i] for i in ctx]}"] if ctx else [])
        raise ValueError(f"{name}: cannot tell which columns are coordinates; {found} ({', '.join(used)}); the other columns "
                         f"{[header[i] for i in rest]} must be named x[, y[, z]] or x1..xD, or list the coordinates in data.columns.x "
                         f"(e.g. data.columns.x=[{','.join(header[i] for i in rest[:2])}])")
    return {"t": t, "x": x, "sequence": seq, "context": ctx, "magnitude": mag, "ignored": []}
