"""What a run was trained on, recorded in ``run.json`` and checked whenever the run's data are read again.

``run.json`` (written by :func:`probflux.app.run.fit_config`)::

    {"format": "probflux-run", "run_id": "<uuid4 hex>", "command": "fit" | "demo", "created": "<UTC ISO time>",
     "library_version": "...",
     "data": {"files": [{"path": "/abs/file.csv", "size": 1234, "sha256": "..."}, ...],
              "splits_sha256": "...", "points": {"train": N, "val": N, "test": N}, "normalizer": {...}}}

``files`` are the data files read while the splits were built: ``data.path``, or the files of a built-in data set
under the shared data root (:func:`probflux.data.snapshots.data_root_candidates`), found by watching which files the
loader opens (:func:`recording_reads`). A path inside the run directory is stored relative to it (``"in_run": true``),
so a moved run directory stays usable; every other path is absolute. ``splits_sha256`` hashes the ``t``, ``x`` and
``context`` values of the three splits, so a change that no file shows (a built-in generator, the split code) is
caught too. :func:`check_files` and :func:`check_splits` raise :class:`DataChanged` naming what differs.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..data.snapshots import data_root_candidates
from ..io import write_json

__all__ = ["MANIFEST", "DataChanged", "recording_reads", "file_record", "data_record", "check_files", "check_splits",
           "write_manifest", "read_manifest", "new_manifest"]

MANIFEST = "run.json"
FORMAT = "probflux-run"
PathLike = Union[str, os.PathLike]


class DataChanged(ValueError):
    """The data a run was trained on are no longer what its ``run.json`` recorded."""


# ------------------------------------------------------------------------------------ reading files

_recorders: list[set[str]] = []
_hooked = False


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _recorders:
        return
    path, mode, flags = (tuple(args) + (None, None, None))[:3]
    if isinstance(path, int) or path is None:
        return
    if isinstance(mode, str):
        if any(c in mode for c in "wax+"):
            return
    elif isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR):
        return
    try:
        name = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return
    for r in _recorders:
        r.add(name)


@contextmanager
def recording_reads() -> Iterator[set[str]]:
    """The set of real paths of the files opened for reading while the block runs (a ``sys.addaudithook`` hook,
    installed once per process; it does nothing outside such a block)."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    seen: set[str] = set()
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)


def _data_files(reads: Iterable[str], data_path: Optional[str]) -> list[Path]:
    """Of the files read, those that are data: ``data_path`` and regular files under a data root."""
    roots = [os.path.realpath(r) + os.sep for r in data_root_candidates()]
    keep = {os.path.realpath(data_path)} if data_path else set()
    keep |= {p for p in reads if any(p.startswith(r) for r in roots)}
    return [Path(p) for p in sorted(keep) if os.path.isfile(p)]


# ---------------------------------------------------------------------------------------- records


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inside_run(path: PathLike, run_dir: PathLike) -> Optional[str]:
    """``path`` relative to ``run_dir`` (posix) when it lies inside it, else None."""
    try:
        return Path(os.path.realpath(path)).relative_to(os.path.realpath(run_dir)).as_posix()
    except ValueError:
        return None


def file_record(path: PathLike, run_dir: PathLike) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of one file; ``path`` absolute, or relative to ``run_dir`` (``"in_run": true``)."""
    path = Path(path)
    rel = inside_run(path, run_dir)
    rec: dict[str, Any] = {"path": rel if rel is not None else os.path.realpath(path), "size": path.stat().st_size,
                           "sha256": _sha256(path)}
    if rel is not None:
        rec["in_run"] = True
    return rec


def _splits_sha256(splits: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for s in splits:
        for v in (s.t, s.x, getattr(s, "context", None)):
            h.update(b"none" if v is None else np.ascontiguousarray(v.detach().cpu().double().numpy()).tobytes())
            h.update(b"|")
    return h.hexdigest()


def data_record(data_path: Optional[str], reads: Iterable[str], splits: tuple[Any, Any, Any], normalizer: Any,
                run_dir: PathLike) -> dict[str, Any]:
    """The ``data`` entry of ``run.json`` for splits ``(train, val, test)`` built while ``reads`` were opened."""
    files = [file_record(p, run_dir) for p in _data_files(reads, data_path)]
    return {"files": files, "splits_sha256": _splits_sha256(splits),
            "points": {k: int(len(s.t)) for k, s in zip(("train", "val", "test"), splits)}, "normalizer": _plain(normalizer.state_dict())}


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _plain(w) for k, w in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(w) for w in v]
    return v


def check_files(recorded: dict[str, Any], run_dir: PathLike) -> None:
    """:class:`DataChanged` when a recorded data file is missing or its size or sha256 differs."""
    for rec in recorded.get("files", []):
        path = Path(run_dir) / rec["path"] if rec.get("in_run") else Path(rec["path"])
        if not path.is_file():
            raise DataChanged(f"data file {str(path)!r}, which this run was trained on, is missing; restore it there "
                              f"(size {rec['size']} bytes, sha256 {rec['sha256'][:12]}...) to evaluate or plot the run")
        size = path.stat().st_size
        if size != rec["size"]:
            raise DataChanged(f"data file {str(path)!r} changed since the run was trained: {size} bytes now, "
                              f"{rec['size']} recorded in {MANIFEST}; the splits would differ, so the run refuses to use it")
        digest = _sha256(path)
        if digest != rec["sha256"]:
            raise DataChanged(f"data file {str(path)!r} changed since the run was trained (sha256 {digest[:12]}... now, "
                              f"{rec['sha256'][:12]}... recorded in {MANIFEST}; same size); the run refuses to use it")


def check_splits(recorded: dict[str, Any], splits: tuple[Any, Any, Any], normalizer: Any, *, library_version: str = "?") -> None:
    """:class:`DataChanged` when the splits loaded now, or their normaliser, differ from the recorded ones."""
    if "splits_sha256" in recorded and _splits_sha256(splits) != recorded["splits_sha256"]:
        now = {k: int(len(s.t)) for k, s in zip(("train", "val", "test"), splits)}
        from .._version import __version__

        raise DataChanged(f"the data loaded now differ from those the run was trained on (points {now} now, "
                          f"{recorded.get('points')} recorded; splits sha256 differs) although every recorded file is unchanged: "
                          f"the data set's generator or split changed (run trained with probflux {library_version}, this is {__version__})")
    if "normalizer" in recorded:
        rec, now = recorded["normalizer"], _plain(normalizer.state_dict())
        for k in rec:
            a, b = np.asarray(rec[k], dtype=float), np.asarray(now.get(k), dtype=float)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-12, atol=0.0):
                raise DataChanged(f"the normaliser fitted now differs from the recorded one ({k}: {a.tolist()} recorded, "
                                  f"{b.tolist()} now)")


# ---------------------------------------------------------------------------------------- run.json


def new_manifest(run_id: str, command: str, data: dict[str, Any]) -> dict[str, Any]:
    from .._version import __version__

    return {"format": FORMAT, "run_id": run_id, "command": command,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "library_version": __version__, "data": data}


def write_manifest(run_dir: PathLike, manifest: dict[str, Any]) -> None:
    write_json(Path(run_dir) / MANIFEST, manifest)


def read_manifest(run_dir: PathLike) -> Optional[dict[str, Any]]:
    """``run.json`` of ``run_dir`` (None when there is none: a run written before probflux recorded it)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataChanged(f"{str(path)!r} is unreadable ({e}); it records the run's id and data") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DataChanged(f"{str(path)!r} is not a probflux run record (no 'format': {FORMAT!r})")
    return m
