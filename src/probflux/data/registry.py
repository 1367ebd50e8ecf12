"""The single list of named data sets: every loader registers here, the config validates against it.

A data set has a ``name`` (what ``data.name`` says), a ``kind`` and a ``loader``:

* ``"points"`` — time-stamped points, ``loader(n, seed) -> TemporalPoints`` (built-in generators);
* ``"file"`` — a file at ``data.path`` holding any of the three data kinds (:data:`FILE_KINDS`):
  ``loader(path, columns) -> DataFile`` (:func:`probflux.data.files.read_file`); ``data.kind`` or the file's layout
  decides which (:func:`probflux.data.files.resolve_kind`), and :func:`probflux.app.builders.load_data` applies the
  same protocol options as for the built-in sets of that kind;
* ``"snapshots"`` — population snapshots, ``loader(**options) -> Snapshots``;
* ``"events"`` — spatio-temporal event sequences, ``loader`` is an
  :class:`~probflux.data.events.EventDataset` (its splits and protocol).

The modules :mod:`probflux.data.points`, :mod:`~probflux.data.snapshots` and :mod:`~probflux.data.events`
call :func:`register` for what they define; :func:`datasets` imports them first, so the list is complete
whoever asks.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Dataset", "KINDS", "FILE_KINDS", "register", "datasets", "dataset", "names"]

KINDS = ("points", "file", "snapshots", "events")
FILE_KINDS = ("points", "events", "snapshots")  # what a "file" data set can hold
_LOADER_MODULES = ("probflux.data.points", "probflux.data.snapshots", "probflux.data.events")
_REGISTRY: dict[str, Dataset] = {}


@dataclass(frozen=True)
class Dataset:
    """A registered data set: ``name``, ``kind`` (one of :data:`KINDS`), ``loader`` and a one-line ``description``."""

    name: str
    kind: str
    loader: Any
    description: str = ""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The data kinds this set can yield: its ``kind``, or all of :data:`FILE_KINDS` for a ``"file"`` set."""
        return FILE_KINDS if self.kind == "file" else (self.kind,)


def register(name: str, kind: str, loader: Any, description: str = "") -> Dataset:
    """Add a data set to the registry (a name may be registered once)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register: name must be a non-empty string; got {name!r}")
    if kind not in KINDS:
        raise ValueError(f"register: kind must be one of {', '.join(KINDS)}; got {kind!r}")
    old = _REGISTRY.get(name)
    if old is not None and old.loader is not loader:
        raise ValueError(f"register: data set {name!r} is already registered (kind {old.kind!r})")
    entry = Dataset(name, kind, loader, description)
    _REGISTRY[name] = entry
    return entry


def datasets(kind: Optional[str] = None) -> dict[str, Dataset]:
    """Every registered data set (of ``kind`` when given), in registration order."""
    for module in _LOADER_MODULES:
        importlib.import_module(module)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return {n: d for n, d in _REGISTRY.items() if kind is None or d.kind == kind}


def names(kind: Optional[str] = None) -> tuple[str, ...]:
    """The registered names (of ``kind`` when given)."""
    return tuple(datasets(kind))


def dataset(name: str) -> Dataset:
    """The registered data set ``name``; ``ValueError`` listing the valid names otherwise."""
    known = datasets()
    if name not in known:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(known)}")
    return known[name]
