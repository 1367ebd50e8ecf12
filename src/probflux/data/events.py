"""Spatio-temporal event sequences (marked temporal point processes with a location per event).

Each sequence is a float64 tensor ``(n_i, 1 + D)`` with columns ``[t, x_1..x_D]``, sorted by ``t``,
observed on a common window ``[t0, t1]`` — the Neural STPP format (``docs/data_sources.md`` §1).

* :class:`EventSequences` — validated sequences with keys, observation window, pooled views
  (:meth:`~EventSequences.events`, :meth:`~EventSequences.to_points`,
  :meth:`~EventSequences.histories`), :meth:`~EventSequences.subset` and the Neural STPP
  standardisation (:meth:`~EventSequences.spatial_stats`, :meth:`~EventSequences.standardize`).
* Real data under ``<data root>/stpp/`` (root as :func:`~probflux.data.data_root_candidates`):
  :func:`earthquakes_jp`, :func:`covid_nj`, :func:`citibike`, :func:`pinwheel_stpp`,
  :func:`earthquakenpp`, :func:`bh_conflicts`.
* :func:`pinwheel_hawkes` — a seeded re-implementation of Neural STPP's Pinwheel–Hawkes generator.
* :func:`split_sequences` (seeded split of whole sequences) and :func:`windows` (cut long sequences
  into fixed-length, re-based windows).
* :data:`EVENT_DATASETS` / :func:`event_dataset` — the registry ``name -> loader``.
* :class:`EventCatalog` / :func:`earthquakenpp_catalog` — ONE continuous catalog (train, val and test periods
  in one time-ordered array with the period boundaries), for the continuous protocol of
  :mod:`probflux.stpp.continuous`.

Neural STPP protocol: standardise ``x`` with the mean/std of **all training events**
(``train.spatial_stats()``), leave ``t`` unchanged, report log-likelihood per event.

Row numbers in error messages are 0-based indices into a sequence's events; column 0 is ``t``,
columns ``1..D`` are ``x_1..x_D``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .files import DataFile, read_file
from .points import ArrayLike, TemporalPoints, _as_float64, _fmt
from .registry import register
from .snapshots import Standardization, _data_file, data_root_candidates  # noqa: F401 (re-exported lookup order)

__all__ = [
    "EventSequences",
    "PooledEvents",
    "earthquakes_jp",
    "covid_nj",
    "citibike",
    "pinwheel_stpp",
    "earthquakenpp",
    "earthquakenpp_window",
    "EventCatalog",
    "earthquakenpp_catalog",
    "bh_conflicts",
    "pinwheel_hawkes",
    "split_sequences",
    "windows",
    "EventDataset",
    "EVENT_DATASETS",
    "event_dataset",
    "EventSplits",
    "event_splits",
    "split_in_time",
    "events_from_file",
    "read_events",
    "event_file_splits",
]


class PooledEvents(NamedTuple):
    """All events of an :class:`EventSequences` stacked in sequence order.

    ``t: (N,)``, ``x: (N, D)`` float, ``seq_index: (N,)`` int64 (the sequence each event belongs to).
    """

    t: Tensor
    x: Tensor
    seq_index: Tensor


# ------------------------------------------------------------------------------- EventSequences


def _check_window(window: Any, where: str) -> tuple[float, float]:
    try:
        t0, t1 = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a pair (t0, t1) of numbers, got {window!r} ({where})") from None
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
        raise ValueError(f"window must be finite (t0, t1) with t0 < t1, got ({_fmt(t0)}, {_fmt(t1)}) ({where})")
    return t0, t1


class EventSequences:
    """``S`` event sequences ``sequences[i]: (n_i, 1 + D)`` = ``[t, x_1..x_D]``, sorted by ``t``.

    Args:
        sequences: ``S >= 1`` arrays/tensors ``(n_i, 1 + D)`` with ``n_i >= 1`` and one common
            ``D >= 1`` (a 3-D array ``(S, n, 1 + D)`` is read as ``S`` sequences of equal length).
        keys: ``S`` distinct string keys (default ``seq_0000, seq_0001, ...``).
        window: ``(t0, t1)``, the observation window; every time must satisfy ``t0 <= t <= t1``.
        name: short data set name (used in error messages).
        source: where the data came from (file path or generator and its parameters).

    Attributes: ``sequences`` (list of float64 tensors), ``keys`` (list of str), ``window``,
    ``name``, ``source``.

    Equal times within a sequence (ties) are allowed; ``BH_conflicts.csv`` has whole-day times.
    Raises ``ValueError`` for no sequences, a key count mismatch, a duplicate or non-string key, a
    bad window, and — naming the sequence's key — a wrong shape or ``D`` differing from the first
    sequence, an empty sequence (Neural STPP data never has one), a NaN/inf entry (with row and
    column), a time smaller than its predecessor (with row) and a time outside the window (with row
    and value). ``TypeError`` for non-numeric input.
    """

    sequences: list[Tensor]
    keys: list[str]
    window: tuple[float, float]
    name: str
    source: str

    def __init__(
        self,
        sequences: Union[Sequence[ArrayLike], np.ndarray, Tensor],
        keys: Optional[Sequence[str]] = None,
        *,
        window: tuple[float, float],
        name: str = "events",
        source: str = "<arrays>",
    ) -> None:
        self.name, self.source = str(name), str(source)
        where = self.name
        self.window = _check_window(window, where)
        if isinstance(sequences, (np.ndarray, Tensor)):
            if sequences.ndim != 3:
                raise ValueError(f"sequences given as one array must have shape (S, n, 1 + D); got {tuple(sequences.shape)} ({where})")
            sequences = list(sequences)
        elif isinstance(sequences, (str, bytes)) or not isinstance(sequences, Sequence):
            raise TypeError(f"sequences must be a list of arrays (n_i, 1 + D), got {type(sequences).__name__} ({where})")
        n_seq = len(sequences)
        if n_seq == 0:
            raise ValueError(f"no sequences (S = 0) in {where}")
        if keys is None:
            width = max(4, len(str(n_seq - 1)))
            keys = [f"seq_{i:0{width}d}" for i in range(n_seq)]
        if isinstance(keys, str) or not isinstance(keys, Sequence):
            raise TypeError(f"keys must be a list of {n_seq} strings, got {type(keys).__name__} ({where})")
        keys = list(keys)
        if len(keys) != n_seq:
            raise ValueError(f"keys has {len(keys)} entries but there are {n_seq} sequences ({where})")
        seen: dict[str, int] = {}
        for i, k in enumerate(keys):
            if not isinstance(k, str):
                raise TypeError(f"key {i} must be a string, got {k!r} ({where})")
            if k in seen:
                raise ValueError(f"duplicate key {k!r} at positions {seen[k]} and {i} ({where})")
            seen[k] = i
        seqs: list[Tensor] = []
        for k, s in zip(keys, sequences):
            at = f"sequence {k!r}"
            v = _as_float64(s, at, where)
            if v.dim() != 2 or v.shape[1] < 2:
                raise ValueError(f"{at} must have shape (n, 1 + D) with columns [t, x_1..x_D] and D >= 1; got {tuple(v.shape)} ({where})")
            if seqs and v.shape[1] != seqs[0].shape[1]:
                raise ValueError(f"{at} has D = {v.shape[1] - 1} but sequence {keys[0]!r} has D = {seqs[0].shape[1] - 1} ({where})")
            if v.shape[0] == 0:
                raise ValueError(f"{at} is empty (0 events) in {where}")
            seqs.append(v)
        self.sequences, self.keys = seqs, keys
        self._validate_values()

    def _validate_values(self) -> None:
        """NaN/inf, order and window checks on the pooled events; locate the first offender."""
        where = self.name
        allv = torch.cat(self.sequences, 0)
        lengths = torch.tensor(self.lengths, dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])

        def locate(pooled_row: int) -> tuple[str, int]:
            i = int(torch.searchsorted(offsets, torch.tensor(pooled_row), right=True)) - 1
            return self.keys[i], pooled_row - int(offsets[i])

        bad = ~torch.isfinite(allv)
        if bool(bad.any()):
            r, c = torch.nonzero(bad)[0].tolist()
            key, row = locate(r)
            what = "NaN" if bool(torch.isnan(allv[r, c])) else "inf"
            raise ValueError(f"sequence {key!r} contains {what} at row {row} (column {c}) of {where}")
        t = allv[:, 0]
        down = t[1:] < t[:-1]
        down[offsets[1:-1] - 1] = False  # a new sequence may start earlier
        if bool(down.any()):
            r = int(torch.nonzero(down)[0, 0]) + 1
            key, row = locate(r)
            raise ValueError(
                f"sequence {key!r} is not sorted by time: t = {_fmt(t[r])} at row {row} < t = {_fmt(t[r - 1])} at row {row - 1} ({where})"
            )
        t0, t1 = self.window
        out = (t < t0) | (t > t1)
        if bool(out.any()):
            r = int(torch.nonzero(out)[0, 0])
            key, row = locate(r)
            raise ValueError(
                f"sequence {key!r}: t = {_fmt(t[r])} at row {row} is outside the observation window [{_fmt(t0)}, {_fmt(t1)}] of {where}"
            )

    @classmethod
    def _trusted(cls, sequences: list[Tensor], keys: list[str], window: tuple[float, float], name: str, source: str) -> EventSequences:
        """No validation: for results of methods on an already validated object."""
        obj = cls.__new__(cls)
        obj.sequences, obj.keys, obj.window, obj.name, obj.source = sequences, keys, window, name, source
        return obj

    # ---------------------------------------------------------------- basic properties

    def __len__(self) -> int:
        """``S``, the number of sequences."""
        return len(self.sequences)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.sequences)

    def __getitem__(self, item: Union[int, str]) -> Tensor:
        """Sequence ``item`` (position or key) as ``(n_i, 1 + D)``."""
        if isinstance(item, str):
            try:
                return self.sequences[self.keys.index(item)]
            except ValueError:
                raise KeyError(f"no sequence with key {item!r} in {self.name}") from None
        return self.sequences[item]

    @property
    def dim(self) -> int:
        """``D``, the spatial dimension."""
        return int(self.sequences[0].shape[1]) - 1

    @property
    def lengths(self) -> list[int]:
        """``[n_0, ..., n_{S-1}]``, events per sequence."""
        return [int(s.shape[0]) for s in self.sequences]

    @property
    def n_events(self) -> int:
        """``N = sum_i n_i``."""
        return sum(self.lengths)

    def offsets(self) -> Tensor:
        """``(S + 1,)`` int64: sequence ``i`` is rows ``offsets[i]:offsets[i+1]`` of :meth:`events`."""
        lengths = torch.tensor(self.lengths, dtype=torch.long)
        return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])

    def events(self) -> PooledEvents:
        """All events pooled: ``(t: (N,), x: (N, D), seq_index: (N,) int64)``, in sequence order."""
        allv = torch.cat(self.sequences, 0)
        seq_index = torch.repeat_interleave(torch.arange(len(self)), torch.tensor(self.lengths, dtype=torch.long))
        return PooledEvents(allv[:, 0].contiguous(), allv[:, 1:].contiguous(), seq_index.to(allv.device))

    def histories(self) -> Tensor:
        """``(N,)`` int64: each pooled event's index (position) in its own sequence.

        Event ``j`` of :meth:`events` is ``sequences[seq_index[j]][pos[j]]``; its history (the events
        strictly before it in its sequence) is ``sequences[seq_index[j]][:pos[j]]``, i.e. pooled rows
        ``j - pos[j] .. j - 1``. ``pos[j] = 0`` marks a sequence's first event (empty history).
        """
        _, _, seq_index = self.events()
        return torch.arange(seq_index.shape[0], device=seq_index.device) - self.offsets().to(seq_index.device)[seq_index]

    def to_points(self) -> TemporalPoints:
        """All events pooled as a :class:`TemporalPoints` ``(t, x)`` (sequence membership dropped)."""
        t, x, _ = self.events()
        return TemporalPoints._unchecked(t, x, None, self.name)

    def subset(self, keys: Sequence[str]) -> EventSequences:
        """The sequences with these keys, in the order given (``KeyError`` naming an unknown key)."""
        if isinstance(keys, str):
            keys = [keys]
        pos = {k: i for i, k in enumerate(self.keys)}
        keys = list(keys)
        if not keys:
            raise ValueError(f"subset needs at least one key ({self.name})")
        missing = [k for k in keys if k not in pos]
        if missing:
            raise KeyError(f"no sequence with key {missing[0]!r} in {self.name} ({len(missing)} unknown key(s))")
        if len(set(keys)) != len(keys):
            dup = next(k for i, k in enumerate(keys) if k in keys[:i])
            raise ValueError(f"duplicate key {dup!r} in subset ({self.name})")
        return EventSequences._trusted([self.sequences[pos[k]] for k in keys], keys, self.window, self.name, self.source)

    def to(self, dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None) -> EventSequences:
        """Copy with every sequence converted to ``dtype`` and/or moved to ``device``."""
        conv = lambda v: v.to(dtype=dtype or v.dtype, device=device if device is not None else v.device)  # noqa: E731
        return EventSequences._trusted([conv(s) for s in self.sequences], list(self.keys), self.window, self.name, self.source)

    def __repr__(self) -> str:
        return (
            f"EventSequences(name={self.name!r}, S={len(self)}, N={self.n_events}, dim={self.dim}, "
            f"window=[{_fmt(self.window[0])}, {_fmt(self.window[1])}])"
        )

    # ---------------------------------------------------------------- standardisation

    def spatial_stats(self) -> Standardization:
        """Per-dimension ``(mean (D,), std (D,))`` of ``x`` over all events pooled.

        As in Neural STPP (``torch.std``, divisor ``N - 1``); a zero (or undefined, ``N = 1``) deviation
        becomes 1. Returns a :class:`~probflux.data.Standardization` (unpacks as ``(mean, std)``).
        Use the *training* split's statistics for every split.
        """
        return Standardization.fit(self.events().x)

    def standardize(self, stats: Optional[Union[Standardization, tuple[ArrayLike, ArrayLike]]] = None) -> EventSequences:
        """New sequences with ``x -> (x - mean) / std``; ``t`` and the window are unchanged.

        ``stats`` is ``(mean, std)`` of shape ``(D,)`` each (typically ``train.spatial_stats()``);
        default: this object's own :meth:`spatial_stats`.
        """
        st = self.spatial_stats() if stats is None else Standardization.coerce(stats, self.dim, self.name, ("mean", "std"))
        out = [torch.cat([s[:, :1], st.apply(s[:, 1:])], 1) for s in self.sequences]
        return EventSequences._trusted(out, list(self.keys), self.window, self.name, self.source)


# ---------------------------------------------------------------------------- split and windows


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


_PART_NAMES = ("train", "val", "test")


def split_sequences(seqs: EventSequences, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[EventSequences, ...]:
    """Seeded random split of whole sequences into ``len(fractions)`` parts (default train/val/test).

    ``fractions`` are ``>= 0`` and sum to 1; part ``i >= 1`` gets ``round(S * fractions[i])``
    sequences and part 0 the rest. Every part must be non-empty; each keeps the original order and
    keys. Part names are ``<name>/train``, ``/val``, ``/test`` for three parts, else ``/part<i>``.
    """
    fr = [float(f) for f in fractions]
    if not fr or any(not (math.isfinite(f) and f >= 0.0) for f in fr) or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {tuple(fractions)!r}")
    seed = _check_seed(seed)
    n = len(seqs)
    sizes = [int(round(n * f)) for f in fr[1:]]
    sizes = [n - sum(sizes)] + sizes
    if min(sizes) < 1:
        raise ValueError(f"{seqs.name} has {n} sequences: splitting with fractions {tuple(fr)} gives sizes {sizes}; "
                         "every part needs at least one sequence")
    perm = np.random.default_rng(seed).permutation(n)
    names = _PART_NAMES if len(fr) == 3 else tuple(f"part{i}" for i in range(len(fr)))
    out, start = [], 0
    for size, part in zip(sizes, names):
        idx = np.sort(perm[start:start + size])
        start += size
        out.append(EventSequences._trusted([seqs.sequences[i] for i in idx], [seqs.keys[i] for i in idx], seqs.window,
                                           f"{seqs.name}/{part}", seqs.source))
    return tuple(out)


def windows(
    seqs: Union[EventSequences, ArrayLike],
    length: float = 30.0,
    stride: float = 7.0,
    *,
    window: Optional[tuple[float, float]] = None,
    min_events: int = 1,
    partial: bool = False,
) -> EventSequences:
    """Cut long sequences into windows of ``length`` starting every ``stride``, times re-based.

    Defaults follow Neural STPP's Earthquakes JP data: 30-day windows starting every 7 days (so
    consecutive windows overlap and an event appears in up to ``ceil(length / stride)`` windows).
    For each sequence with observation window ``[t0, t1]``, windows start at ``s = t0 + j * stride``
    for every ``j >= 0`` with ``s + length <= t1`` (full windows only) and keep the events with
    ``s <= t < s + length`` (the last window also keeps ``t = t1`` when it ends exactly there), with
    ``t - s`` as their time. Windows with fewer than ``min_events >= 1`` events are dropped.

    ``partial=True`` also keeps the trailing partial window: the first start ``s < t1`` whose window passes ``t1``
    (events ``s <= t <= t1``), so every event of the sequence lies in some window (with ``stride == length``: in
    exactly one). Its re-based times stay in ``[0, t1 - s]`` while the result's common window is ``(0, length)``: fine
    for spatial scores, but a temporal compensator over ``(0, length)`` overstates that window's observed span.
    (The continuous protocol, :mod:`probflux.stpp.continuous`, needs no windows at all.)

    ``seqs`` is an :class:`EventSequences` or one array ``(n, 1 + D)`` together with ``window``.
    Keys are ``"<key>@<s>"`` (``s`` in the parent's time units, 10 significant digits); the result's window is
    ``(0, length)``. Raises ``ValueError`` if no window fits or none keeps ``min_events`` events.
    """
    if not isinstance(seqs, EventSequences):
        if window is None:
            raise ValueError("windows() of a single array needs window=(t0, t1)")
        seqs = EventSequences([seqs], ["seq"], window=window, name="sequence")
    elif window is not None:
        raise ValueError(f"window= is only for a single array; {seqs.name} has its own window")
    for nm, v in (("length", length), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"{nm} must be a finite number > 0, got {v!r}")
    if isinstance(min_events, bool) or not isinstance(min_events, (int, np.integer)) or min_events < 1:
        raise ValueError(f"min_events must be an int >= 1, got {min_events!r}")
    length, stride = float(length), float(stride)
    t0, t1 = seqs.window
    n_starts = int(math.floor((t1 - t0 - length) / stride + 1e-9)) + 1 if t1 - t0 >= length * (1 - 1e-12) else 0
    if partial and t0 + (n_starts - 1) * stride + length < t1 - 1e-9 * max(1.0, abs(t1)) if n_starts else partial:
        n_starts += 1  # the first window that passes t1
    if n_starts < 1:
        raise ValueError(f"window length {_fmt(length)} is longer than the observation window [{_fmt(t0)}, {_fmt(t1)}] of {seqs.name}")
    out, keys = [], []
    for key, s in zip(seqs.keys, seqs.sequences):
        t = s[:, 0].contiguous()
        for j in range(n_starts):
            a = t0 + j * stride
            b = min(a + length, t1)
            lo = int(torch.searchsorted(t, torch.tensor(a, dtype=t.dtype), right=False))
            hi = int(torch.searchsorted(t, torch.tensor(b, dtype=t.dtype), right=abs(b - t1) <= 1e-9 * max(1.0, abs(t1))))
            if hi - lo < min_events:
                continue
            w = s[lo:hi].clone()
            w[:, 0] = (w[:, 0] - a).clamp(0.0, length)
            out.append(w)
            keys.append(f"{key}@{_fmt(a)}")
    if not out:
        raise ValueError(f"no window of length {_fmt(length)} in {seqs.name} holds at least {min_events} event(s)")
    return EventSequences._trusted(out, keys, (0.0, length), f"{seqs.name}/windows({length:g},{stride:g})", seqs.source)


# ------------------------------------------------------------------------------------ real data

_STPP_HINT = "set PROBFLUX_DATA to the folder that holds stpp/ (see docs/data_sources.md §1)"


def _stpp_file(relative: str) -> Path:
    """``root / relative`` for the first candidate data root that has it; else ``FileNotFoundError``."""
    return _data_file(relative, _STPP_HINT)


def _check_split(split: Any, valid: Sequence[str], what: str, missing: str = "") -> str:
    if split in valid:
        return str(split)
    if split == "train" and missing:
        raise ValueError(f"the train split of {what} is not available: {missing}; valid splits: {', '.join(valid)}")
    raise ValueError(f"unknown split {split!r} for {what}; valid splits: {', '.join(valid)}")


def _read_npz(path: Path, keys: Optional[Sequence[str]] = None) -> tuple[list[str], list[np.ndarray]]:
    """Arrays ``keys`` (default: all, in file order) of an ``.npz`` file, numeric, no pickles."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if keys is None:
                keys = names
            missing = [k for k in keys if k not in names]
            if missing:
                raise ValueError(f"{path}: missing array(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            arrays = [z[k] for k in keys]
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read the file ({e})") from None
    for k, a in zip(keys, arrays):
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{path}: array {k!r} must be numeric, got dtype {a.dtype}")
    return list(keys), arrays


def _build(arrays: Sequence[Any], keys: Sequence[str], window: tuple[float, float], name: str, path: Path) -> EventSequences:
    try:
        return EventSequences(list(arrays), list(keys), window=window, name=name, source=str(path))
    except (ValueError, TypeError) as e:
        raise type(e)(f"{path}: {e}") from None


def _prefixed(path: Path, split: str, window: tuple[float, float], name: str) -> EventSequences:
    """Sequences of an ``.npz`` whose keys start with ``<split>_`` (the DSTPP val/test files)."""
    with np.load(path, allow_pickle=False) as z:
        keys = [k for k in z.files if k.startswith(f"{split}_")]
    if not keys:
        raise ValueError(f"{path}: no arrays named {split}_*")
    keys, arrays = _read_npz(path, keys)
    return _build(arrays, keys, window, name, path)


EARTHQUAKES_JP_WINDOW = (0.0, 30.0)
COVID_NJ_WINDOW = (0.0, 7.0)
CITIBIKE_WINDOW = (0.0, 24.0)
PINWHEEL_WINDOW = (0.0, 30.0)


def earthquakes_jp(split: str = "train") -> EventSequences:
    """Neural STPP "Earthquakes JP": 30-day windows ``[t (days), longitude, latitude]``, window ``[0, 30]``.

    ``split`` in ``train`` (950 sequences, 82,657 events), ``val`` (50, 4,130), ``test`` (50, 5,110)
    — the Neural STPP split of ``stpp/earthquakes_jp/earthquakes_jp_splits.json`` — or ``all`` (all
    1,500 windows in file order, including the 450 buffer windows that belong to no split). Keys are the
    window start dates ``YYYYMMDD``. Consecutive windows overlap (they start every 7 days).
    """
    split = _check_split(split, ("train", "val", "test", "all"), "earthquakes_jp")
    path = _stpp_file("stpp/earthquakes_jp/earthquakes_jp.npz")
    if split == "all":
        keys, arrays = _read_npz(path)
    else:
        jpath = _stpp_file("stpp/earthquakes_jp/earthquakes_jp_splits.json")
        try:
            with open(jpath, encoding="utf-8") as fh:
                splits = json.load(fh)
        except (OSError, ValueError) as e:
            raise ValueError(f"{jpath}: cannot read the split file ({e})") from None
        keys = splits.get(split) if isinstance(splits, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"{jpath}: expected a JSON object with a list of string keys under {split!r}")
        keys, arrays = _read_npz(path, keys)
    return _build(arrays, keys, EARTHQUAKES_JP_WINDOW, f"earthquakes_jp/{split}", path)


_VALTEST_MISSING = ("only the val and test splits are in the data folder "
                    "(the train pickle could not be obtained, see docs/data_sources.md §1)")


def covid_nj(split: str = "val") -> EventSequences:
    """Neural STPP "COVID-19 NJ": ``[t (days), longitude, latitude]``, window ``[0, 7]``.

    ``split`` in ``val`` (100 sequences, 4,346 events) or ``test`` (100, 13,656); the train split
    (1,450 sequences) is not available here. Keys ``val_0000``/``test_0000`` ... as in
    ``stpp/covid_nj/covid_nj_cases_valtest.npz``. Without the train split the Neural STPP
    standardisation (train statistics) cannot be reproduced exactly.
    """
    split = _check_split(split, ("val", "test"), "covid_nj", _VALTEST_MISSING)
    path = _stpp_file("stpp/covid_nj/covid_nj_cases_valtest.npz")
    return _prefixed(path, split, COVID_NJ_WINDOW, f"covid_nj/{split}")


def citibike(split: str = "val") -> EventSequences:
    """Neural STPP "Citibike": ``[t (hours), longitude, latitude]``, window ``[0, 24]``.

    ``split`` in ``val`` (300 sequences, 46,467 events) or ``test`` (320, 47,276); the train split
    (2,440 sequences) is not available here. Keys ``val_0000``/``test_0000`` ... as in
    ``stpp/citibike/citibike_valtest.npz``.
    """
    split = _check_split(split, ("val", "test"), "citibike", _VALTEST_MISSING)
    path = _stpp_file("stpp/citibike/citibike_valtest.npz")
    return _prefixed(path, split, CITIBIKE_WINDOW, f"citibike/{split}")


def pinwheel_stpp() -> EventSequences:
    """The 1,000 DSTPP Pinwheel–Hawkes sequences ``[t, x, y]``, window ``[0, 30]`` (37,373 events, 4–130 each).

    ``stpp/pinwheel/pinwheel_dstpp_1000.npz``, keys ``seq_0000..seq_0999``. There is no official
    split of these sequences: use :func:`split_sequences` (the registry uses ``seed=0``), or
    :func:`pinwheel_hawkes` to draw fresh sequences from the same process.
    """
    path = _stpp_file("stpp/pinwheel/pinwheel_dstpp_1000.npz")
    keys, arrays = _read_npz(path)
    return _build(arrays, keys, PINWHEEL_WINDOW, "pinwheel_stpp", path)


# Split boundaries of ss15859/neural_stpp config/{catalog}_nstpp.yaml (train, val, test start; test end).
_EARTHQUAKENPP_DATES = {
    "Japan_25": (_dt.date(1992, 1, 1), _dt.date(2007, 1, 1), _dt.date(2011, 1, 1), _dt.date(2020, 1, 1)),
    "ComCat_25": (_dt.date(1981, 1, 1), _dt.date(1998, 1, 1), _dt.date(2007, 1, 1), _dt.date(2020, 1, 17)),
}


def earthquakenpp_window(catalog: str, split: str) -> tuple[float, float]:
    """``(0, duration of the split in days)`` from the split dates of :func:`earthquakenpp`."""
    if catalog not in _EARTHQUAKENPP_DATES:
        raise ValueError(f"unknown EarthquakeNPP catalog {catalog!r}; valid catalogs: {', '.join(_EARTHQUAKENPP_DATES)}")
    i = _check_split(split, _PART_NAMES, f"earthquakenpp {catalog}")
    d = _EARTHQUAKENPP_DATES[catalog]
    j = _PART_NAMES.index(i)
    return (0.0, float((d[j + 1] - d[j]).days))


def earthquakenpp(catalog: str = "Japan_25", split: str = "train", *, path: Union[str, Path, None] = None) -> EventSequences:
    """An EarthquakeNPP catalog split as ONE long sequence ``[t (days), x (km), y (km)]``.

    ``catalog`` in ``Japan_25`` (train/val/test 16,230 / 4,976 / 15,368 events; splits start
    1992-01-01 / 2007-01-01 / 2011-01-01, end 2020-01-01) or ``ComCat_25`` (40,701 / 14,740 /
    21,881; 1981-01-01 / 1998-01-01 / 2007-01-01, end 2020-01-17); key ``"<catalog>/<split>"``.
    The file stores time since the split's *first event* (``create_dataset.py`` of
    ss15859/neural_stpp subtracts the minimum time), so ``t = 0`` for the first event; the window is
    ``(0, split duration in days)`` — e.g. Japan_25 train ``(0, 5479)`` — which overstates the true end
    by the first event's delay after the split start (unknown from the file; typically < 1 day).
    Cut it into Neural STPP-style sequences with :func:`windows` (default 30-day windows every 7 days).

    ``path``: any ``.npz`` in this layout (arrays ``train``, ``val``, ``test`` of shape ``(1, N, 1 + D)``); then
    ``catalog`` is only a name and the window is ``(min(0, first t), last t)`` of the split.
    """
    if path is None:
        window = earthquakenpp_window(catalog, split)
        path = _stpp_file(f"stpp/earthquakenpp/{catalog}.npz")
        _, (arr,) = _read_npz(path, [split])
        if arr.ndim != 3 or arr.shape[0] != 1:
            raise ValueError(f"{path}: array {split!r} must have shape (1, N, 1 + D); got {arr.shape}")
        return _build([arr[0]], [f"{catalog}/{split}"], window, f"earthquakenpp/{catalog}/{split}", path)
    split = _check_split(split, _PART_NAMES, f"earthquakenpp file {str(path)!r}")
    data = read_file(path)
    if data.layout != "splits" or len(data.splits[split]) != 1:
        raise ValueError(f"{data.name}: expected the EarthquakeNPP layout (arrays train, val, test of shape (1, N, 1 + D)); "
                         f"got {data.describe()}")
    return _file_sequences(data.splits[split], None, f"{catalog}/{split}", str(path), keys=[f"{catalog}/{split}"])


class EventCatalog:
    """One continuous event catalog: every event of consecutive periods (train, val, test) in one time-ordered array.

    Args:
        t: ``(N,)`` event times (days for EarthquakeNPP), non-decreasing (ties allowed).
        x: ``(N, D)`` locations (km for EarthquakeNPP: spatial log-likelihoods are then per km^2).
        boundaries: ``(b_0, b_1, ..., b_P)`` increasing; period ``p`` is ``[b_p, b_{p+1})``, the last one
            ``[b_{P-1}, b_P]`` (closed at the end). Every event must lie in ``[b_0, b_P]``.
        periods: ``P`` names (default ``train``, ``val``, ``test`` for three periods).

    Attributes: ``t``, ``x`` (float64), ``boundaries`` (tuple of floats), ``periods`` (tuple of str), ``name``,
    ``source``. The catalog is never windowed or re-based: the continuous protocol conditions each event on all
    strictly earlier events of the whole catalog, whatever period they fall in.
    """

    def __init__(self, t: ArrayLike, x: ArrayLike, boundaries: Sequence[float], *, periods: Optional[Sequence[str]] = None,
                 name: str = "catalog", source: str = "<arrays>") -> None:
        self.name, self.source = str(name), str(source)
        t = _as_float64(t, "t", self.name).reshape(-1)
        x = _as_float64(x, "x", self.name)
        if x.dim() != 2 or x.shape[0] != t.shape[0]:
            raise ValueError(f"x must have shape (N, D) with N = {t.shape[0]} (the length of t); got {tuple(x.shape)} ({self.name})")
        if not (bool(torch.isfinite(t).all()) and bool(torch.isfinite(x).all())):
            raise ValueError(f"t and x must be finite ({self.name})")
        if t.shape[0] > 1 and bool((t[1:] < t[:-1]).any()):
            r = int(torch.nonzero(t[1:] < t[:-1])[0, 0]) + 1
            raise ValueError(f"t must be non-decreasing: t[{r}] = {_fmt(t[r])} < t[{r - 1}] = {_fmt(t[r - 1])} ({self.name})")
        b = tuple(float(v) for v in boundaries)
        if len(b) < 2 or any(not (math.isfinite(u) and u < v) for u, v in zip(b[:-1], b[1:])):
            raise ValueError(f"boundaries must be >= 2 finite increasing times; got {b} ({self.name})")
        if t.shape[0] and (float(t[0]) < b[0] or float(t[-1]) > b[-1]):
            raise ValueError(f"events must lie in [{_fmt(b[0])}, {_fmt(b[-1])}]; got t in [{_fmt(t[0])}, {_fmt(t[-1])}] ({self.name})")
        names = tuple(periods) if periods is not None else (_PART_NAMES if len(b) == 4 else tuple(f"period{i}" for i in range(len(b) - 1)))
        if len(names) != len(b) - 1 or len(set(names)) != len(names):
            raise ValueError(f"periods must be {len(b) - 1} distinct names (one per interval of boundaries); got {names} ({self.name})")
        self.t, self.x, self.boundaries, self.periods = t.contiguous(), x.contiguous(), b, names

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def span(self, period: str) -> tuple[float, float]:
        """``(start, end)`` of ``period``."""
        if period not in self.periods:
            raise ValueError(f"unknown period {period!r} of {self.name}; valid periods: {', '.join(self.periods)}")
        i = self.periods.index(period)
        return self.boundaries[i], self.boundaries[i + 1]

    def indices(self, period: str) -> slice:
        """Rows ``[i0, i1)`` of the events of ``period`` (``start <= t < end``; the last period includes ``t = end``)."""
        a, b = self.span(period)
        last = period == self.periods[-1]
        i0 = int(torch.searchsorted(self.t, torch.tensor(a, dtype=self.t.dtype), right=False))
        i1 = int(torch.searchsorted(self.t, torch.tensor(b, dtype=self.t.dtype), right=last))
        return slice(i0, i1)

    def events(self, period: Optional[str] = None) -> tuple[Tensor, Tensor]:
        """``(t: (n,), x: (n, D))`` of ``period`` (all events when None)."""
        s = slice(None) if period is None else self.indices(period)
        return self.t[s], self.x[s]

    def before(self, period: str) -> tuple[Tensor, Tensor]:
        """``(t, x)`` of every event strictly before ``period`` starts (e.g. train + val before ``test``)."""
        i0 = self.indices(period).start
        return self.t[:i0], self.x[:i0]

    def counts(self) -> dict[str, int]:
        return {p: self.indices(p).stop - self.indices(p).start for p in self.periods}

    def __repr__(self) -> str:
        parts = ", ".join(f"{p}={n}" for p, n in self.counts().items())
        return f"EventCatalog(name={self.name!r}, N={len(self)}, dim={self.dim}, {parts}, boundaries={self.boundaries})"


def earthquakenpp_catalog(catalog: str = "Japan_25", *, path: Union[str, Path, None] = None,
                          starts: Optional[Sequence[float]] = None) -> EventCatalog:
    """An EarthquakeNPP catalog as ONE continuous :class:`EventCatalog`: train, val and test periods, ``t`` in days since
    the training period's start, ``x, y`` in km (as stored), boundaries ``(0, val start, test start, test end)``.

    ``catalog`` in ``Japan_25``, ``ComCat_25``: the periods are placed at their split dates (:func:`earthquakenpp`), e.g.
    ComCat_25 boundaries ``(0, 6209, 9496, 14260)`` days (1981-01-01, 1998-01-01, 2007-01-01, 2020-01-17). The files
    store each split's time since its own *first event*, so each split's events are shifted by its start date: the
    first event of a split sits at the split start (the true delay, unknown from the file, is typically under a day;
    the ordering across periods is exact because the periods do not overlap).

    ``path``: any ``.npz`` in that layout (arrays ``train``, ``val``, ``test`` of shape ``(1, N, 1 + D)``); then
    ``catalog`` is only a name. ``starts = (val start, test start)`` in days after the training start places the
    periods; by default each period starts at the previous period's last event (its stored duration), and the test
    period ends at its last event.
    """
    if path is None:
        if catalog not in _EARTHQUAKENPP_DATES:
            raise ValueError(f"unknown EarthquakeNPP catalog {catalog!r}; valid catalogs: {', '.join(_EARTHQUAKENPP_DATES)} "
                             "(or give path= to a file in that layout)")
        parts = [earthquakenpp(catalog, s) for s in _PART_NAMES]
        d = _EARTHQUAKENPP_DATES[catalog]
        bounds = [float((v - d[0]).days) for v in d]
        if starts is not None:
            raise ValueError(f"starts applies to files given by path; {catalog} has its split dates")
        src = parts[0].source
    else:
        parts = [earthquakenpp(catalog, s, path=path) for s in _PART_NAMES]
        ends = [float(p.sequences[0][-1, 0]) for p in parts]
        if starts is None:
            bounds = [0.0, ends[0], ends[0] + ends[1]]
        else:
            st = [float(v) for v in starts]
            if len(st) != 2 or not (0.0 < st[0] < st[1]):
                raise ValueError(f"starts must be (val start, test start) with 0 < val start < test start (days); got {tuple(starts)!r}")
            bounds = [0.0, *st]
        bounds.append(bounds[2] + ends[2])
        src = str(path)
    ts, xs = [], []
    for p, a, b in zip(parts, bounds[:-1], bounds[1:]):
        s = p.sequences[0]
        t = s[:, 0] - float(s[0, 0]) + a
        if float(t[-1]) > b + 1e-9 * max(1.0, abs(b)):
            raise ValueError(f"{src}: the {p.name} events span {_fmt(float(t[-1]) - a)} days, past the period end {_fmt(b)} "
                             f"(start {_fmt(a)}); check starts=")
        ts.append(t.clamp_max(b) if p is parts[-1] else t.clamp_max(math.nextafter(b, -math.inf)))
        xs.append(s[:, 1:])
    return EventCatalog(torch.cat(ts), torch.cat(xs), bounds, name=f"earthquakenpp/{catalog}", source=src)


def bh_conflicts(path: Union[str, Path, None] = None) -> EventSequences:
    """Boko Haram conflict events (BSTPP 0.1.4 ``BH_conflicts.csv``): ONE sequence ``[T, X, Y]``.

    2,470 events, ``T`` in whole days 0..4574 (974 ties: several events share a day), ``X`` longitude
    3.4–15.1, ``Y`` latitude 6.4–14.4. Window ``[0, ceil(max T)] = [0, 4574]``; key ``"BH_conflicts"``.
    The file has no event between days 2100 and 2623 (a 523-day gap; the next largest is 186 days),
    probably missing records rather than calm — mind it when fitting one stationary model.
    Cut it into shorter sequences with :func:`windows`.

    ``path``: another CSV with the same header (``X,Y,T``: columns by name, :mod:`probflux.data.files`).
    """
    path = _stpp_file("stpp/bstpp_pypi/BH_conflicts.csv") if path is None else Path(path)
    data = read_file(path)
    if data.layout != "table" or data.sequence is not None:
        raise ValueError(f"{data.name}: expected one event sequence with columns T, X, Y; got {data.describe()}")
    tmax = float(np.nanmax(data.t)) if np.isfinite(data.t).any() else 1.0
    return events_from_file(data, window=(0.0, float(max(math.ceil(tmax), 1))), name="bh_conflicts", keys=["BH_conflicts"])


# ------------------------------------------------------------------------------------- user files


def _span(arrays: Sequence[np.ndarray], t0: Optional[float], t1: Optional[float]) -> tuple[float, float]:
    """``(t0, t1)``: the given bounds, else the min/max time over ``arrays`` (a window of length 1 if they coincide)."""
    ts = np.concatenate([np.asarray(a[:, 0], dtype=np.float64) for a in arrays]) if arrays else np.zeros(1)
    finite = ts[np.isfinite(ts)]
    lo = float(finite.min()) if t0 is None and finite.size else float(t0 or 0.0)
    hi = float(finite.max()) if t1 is None and finite.size else float(t1 if t1 is not None else lo + 1.0)
    return (lo, hi if hi > lo else lo + 1.0)


def _file_sequences(items: Sequence[tuple[str, np.ndarray]], window: Optional[tuple[Optional[float], Optional[float]]], name: str,
                    source: str, keys: Optional[Sequence[str]] = None) -> EventSequences:
    arrays = [a for _, a in items]
    bad = [k for k, a in items if a.ndim != 2 or a.shape[1] < 2]
    if bad:
        raise ValueError(f"{name}: sequence {bad[0]!r} must have shape (n, 1 + D) with columns [t, x_1..x_D]")
    lo, hi = window if window is not None else (None, None)
    try:
        keys = list(keys) if keys is not None else [k for k, _ in items]
        return EventSequences(arrays, keys, window=_span(arrays, lo, hi), name=name, source=source)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{source}: {e}") from None


def events_from_file(data: DataFile, *, window: Optional[tuple[Optional[float], Optional[float]]] = None, name: Optional[str] = None,
                     keys: Optional[Sequence[str]] = None) -> EventSequences:
    """The :class:`EventSequences` of a :class:`~probflux.data.files.DataFile`: a table (one sequence, or one per value
    of its sequence column, in order of first appearance; rows sorted by time within each sequence, ties kept in file
    order) or a ``sequences`` layout (one per array, as stored). ``window = (t0, t1)``: the observation window; a bound
    left ``None`` is the min/max time over the file."""
    name = name or os.path.splitext(data.name)[0]
    if data.layout == "sequences":
        return _file_sequences(data.sequences, window, name, data.path, keys)
    if data.layout != "table":
        why = "it holds population snapshots"
        if data.layout == "splits":
            why = "use event_file_splits (its train/val/test arrays are the split)"
        raise ValueError(f"{data.describe()} cannot be read as one set of event sequences; {why}")
    if data.context is not None:
        raise ValueError(f"{data.name}: event sequences take no context columns ({data.columns})")
    table = np.concatenate([np.asarray(data.t, dtype=np.float64).reshape(-1, 1), np.asarray(data.x, dtype=np.float64)], 1)
    if data.sequence is None:
        groups = [(keys[0] if keys else name, table[np.argsort(table[:, 0], kind="stable")])]
    else:
        uniq, first = np.unique(data.sequence, return_index=True)
        groups = []
        for k in uniq[np.argsort(first)]:
            rows = table[data.sequence == k]
            groups.append((str(k), rows[np.argsort(rows[:, 0], kind="stable")]))
    return _file_sequences(groups, window, name, data.path, keys)


def read_events(path: Union[str, Path], columns: Any = None, *,
                window: Optional[tuple[Optional[float], Optional[float]]] = None) -> EventSequences:
    """Event sequences from a file (:func:`probflux.data.files.read_file`, then :func:`events_from_file`): a CSV/TSV
    with ``t``/``time``, coordinate and optionally ``sequence`` columns, an ``.npz`` with one array per sequence
    (Neural STPP) or ``t``/``x``[/``sequence``] arrays, or an ``.npy`` ``(n, 1 + D)`` / ``(S, n, 1 + D)``."""
    return events_from_file(read_file(path, columns), window=window)


def event_file_splits(data: Union[DataFile, str, Path], *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                      cuts: Optional[Sequence[float]] = None, window: Optional[float] = None, stride: Optional[float] = None,
                      seed: int = 0, t0: Optional[float] = None, t1: Optional[float] = None, columns: Any = None,
                      partial_windows: bool = False) -> EventSplits:
    """Train/val/test :class:`EventSequences` of an event file — the protocol options of the built-in event sets:

    * a ``splits`` layout (EarthquakeNPP ``train``/``val``/``test``, or ``train_*``/``val_*``/``test_*``): the file's own
      split (each part's window is ``(min(0, first t), last t)``; fractions, ``cuts``, ``t0``/``t1`` do not apply);
    * several sequences: a seeded split of whole sequences (``round(S * val_fraction)`` to val, ``round(S * test_fraction)``
      to test, :func:`split_sequences`);
    * ONE sequence (a catalog): split in time at ``cuts = (val_start, test_start)``, or by default at the fractions
      ``1 - val - test`` and ``1 - test`` of the window ``[t0, t1]`` (default: first/last event), train first.

    ``window`` (a length): cut every part into windows of that length with times re-based (:func:`windows`): training
    windows start every ``stride`` (default ``window``), val/test windows are disjoint. ``partial_windows=True`` keeps each
    part's trailing partial window (:func:`windows` with ``partial=True``), so every event of every part lies in some
    window. Without ``window`` the parts keep their absolute times (the continuous protocol: one long sequence per part).
    """
    if not isinstance(data, DataFile):
        data = read_file(data, columns)
    for key, v in (("data.window", window), ("data.stride", stride)):
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ValueError(f"{key} must be a number > 0, got {v!r}")
    if stride is not None and window is None:
        raise ValueError("data.stride needs data.window (the window length)")
    if not isinstance(partial_windows, bool):
        raise ValueError(f"data.partial_windows must be true or false, got {partial_windows!r}")
    if partial_windows and window is None:
        raise ValueError("data.partial_windows needs data.window (the window length)")
    name = os.path.splitext(data.name)[0]
    if data.layout == "splits":
        given = [k for k, v in (("data.cuts", cuts), ("data.t0", t0), ("data.t1", t1)) if v is not None]
        if given:
            raise ValueError(f"{data.name} has its own train/val/test split ({data.columns}); {', '.join(given)} do(es) not apply")
        parts = [_file_sequences(data.splits[s], (min(0.0, float(np.min([a[:, 0].min() for _, a in data.splits[s]]))), None),
                                 f"{name}/{s}", data.path) for s in _PART_NAMES]
        note = f"the file's own train/val/test arrays ({data.columns})"
    else:
        seqs = events_from_file(data, window=(t0, t1), name=name)
        if len(seqs) > 1:
            if cuts is not None:
                raise ValueError(f"data.cuts splits ONE long sequence in time; {data.name} has {len(seqs)} sequences (they are split by "
                                 "data.val_fraction / data.test_fraction)")
            if not (val_fraction > 0 and test_fraction > 0):
                raise ValueError(f"{data.name}: splitting {len(seqs)} sequences needs data.val_fraction > 0 and data.test_fraction > 0")
            parts = list(split_sequences(seqs, (1.0 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed))
            fr = f"{1 - val_fraction - test_fraction:g}/{val_fraction:g}/{test_fraction:g}"
            note = f"{len(seqs)} sequences split at random (seed {seed}) {fr}"
        else:
            lo, hi = seqs.window
            if cuts is None:
                if not (val_fraction > 0 and test_fraction > 0):
                    raise ValueError(f"{data.name}: splitting one sequence in time needs data.val_fraction > 0 and data.test_fraction > 0, "
                                     "or data.cuts")
                cuts = (lo + (1.0 - val_fraction - test_fraction) * (hi - lo), lo + (1.0 - test_fraction) * (hi - lo))
            cuts = [float(c) for c in cuts]
            if len(cuts) != 2:
                raise ValueError(f"data.cuts must be two times (val start, test start), got {cuts}")
            if not lo < cuts[0] < cuts[1] < hi:
                raise ValueError(f"data.cuts must satisfy t0 < val start < test start < t1 for the window [{_fmt(lo)}, {_fmt(hi)}] "
                                 f"of {data.name}; got {cuts}")
            parts = split_in_time(seqs, cuts, rebase=window is not None)
            note = f"one sequence split in time at {_fmt(cuts[0])} / {_fmt(cuts[1])}"
    if window is not None:
        strides = (stride or window, window, window)
        try:
            parts = [windows(p, window, s, partial=partial_windows) for p, s in zip(parts, strides)]
        except ValueError as e:
            raise ValueError(f"data.window={_fmt(window)}: {e}") from None
        note += f"; {_fmt(window)}-long windows (train every {_fmt(strides[0])}, val/test disjoint"
        note += ", trailing partial windows kept)" if partial_windows else ")"
    else:
        note += "; continuous (no windows)"
    return EventSplits(parts[0], parts[1], parts[2], note)


# ------------------------------------------------------------------------- Pinwheel–Hawkes generator

PINWHEEL_HAWKES = {"n_classes": 10, "mu": 0.05, "alpha": 0.6, "omega": 10.0}


def pinwheel_hawkes(n_sequences: int, seed: int = 0, *, t1: float = 30.0, return_classes: bool = False) -> Any:
    """Neural STPP's Pinwheel–Hawkes process (``toy_datasets.PinwheelHawkes``), re-implemented.

    Time: a 10-class multivariate Hawkes process on ``[0, t1]`` with base rates ``mu_k = 0.05`` and
    intensities ``lambda_k(t) = mu_k + sum_{t_j < t, class j = k - 1 (mod 10)} alpha * omega *
    exp(-omega (t - t_j))``, ``alpha = 0.6``, ``omega = 10`` (each event of class ``k`` triggers on
    average 0.6 events of class ``k + 1 mod 10``; the kernel integrates to ``alpha`` as in the ``MHP``
    class Neural STPP uses). Simulated by Ogata thinning, vectorised over sequences: the total
    intensity only decays between events, so its value just after the last event bounds it.

    Space: an event of class ``k`` gets ``f1 = 1 + 0.3 e1``, ``f2 = 0.1 e2`` (``e ~ N(0, 1)``),
    ``a = 2 pi k / 10 + 0.25 exp(f1)`` and location ``2 R(a)^T [f1, f2] = 2 (f1 cos a + f2 sin a,
    -f1 sin a + f2 cos a)`` — Neural STPP's ``einsum("ti,tij->tj", features, rotations)`` multiplies by
    the *transposed* rotation, so arms curl clockwise and class ``k + 1`` lies at ``-2 pi / 10`` from
    class ``k``. The shipped DSTPP file agrees with this orientation (docs/data_sources.md §1.4 writes ``R(angle)``,
    the mirror image).

    Expected events per sequence: ``10 * 0.05 * 30 / (1 - 0.6) = 37.5`` minus a small edge loss
    (offspring after ``t1``). Measured with seeds 0..19, 1,000 sequences each: mean 37.40 events per
    sequence (per-seed means 36.39–38.19, their sd 0.48 = sd / sqrt(1000)), sd 15.4, per-seed min 3–9
    and max 96–142; quantiles 5/25/50/75/95 % = 16/26/35/46/66. The DSTPP file (1,000 sequences): mean
    37.373, sd 15.8, min 4, max 130, quantiles 17/26/35/46/64; two-sample KS test of the counts against
    the 20,000 draws p = 0.60. Space: mean radius 2.011 vs 2.014 in the file; the clockwise-curl
    statistic ``|mean exp(10 i (theta + 0.25 exp(r / 2)))|`` is 0.564 vs 0.567 (0.02 for the mirror image).

    Deterministic for a given ``(n_sequences, seed, t1)`` (one ``numpy.random.default_rng(seed)``
    stream is shared across sequences, so sequence ``i`` changes with ``n_sequences``). The rare
    empty sequence (probability ``exp(-15)``) is redrawn. Keys ``seq_0000 ...``; window ``[0, t1]``.
    With ``return_classes=True`` returns ``(sequences, classes)``, ``classes[i]: (n_i,)`` int64.
    """
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, (int, np.integer)) or n_sequences < 1:
        raise ValueError(f"n_sequences must be a positive int, got {n_sequences!r}")
    seed = _check_seed(seed)
    if isinstance(t1, bool) or not isinstance(t1, (int, float, np.floating, np.integer)) or not (math.isfinite(t1) and t1 > 0):
        raise ValueError(f"t1 must be a finite number > 0, got {t1!r}")
    t1 = float(t1)
    n_classes, mu, alpha, omega = (PINWHEEL_HAWKES[k] for k in ("n_classes", "mu", "alpha", "omega"))
    rng = np.random.default_rng(seed)
    n = int(n_sequences)
    times: list[list[float]] = [[] for _ in range(n)]
    classes: list[list[int]] = [[] for _ in range(n)]
    todo = np.arange(n)
    while todo.size:
        _simulate_hawkes(rng, todo, times, classes, t1, n_classes, mu, alpha, omega)
        todo = np.array([i for i in todo if not times[i]], dtype=np.int64)
    seqs, cls_out = [], []
    for ti, ki in zip(times, classes):
        k = np.asarray(ki, dtype=np.int64)
        m = k.shape[0]
        f1 = 1.0 + 0.3 * rng.standard_normal(m)
        f2 = 0.1 * rng.standard_normal(m)
        a = 2.0 * math.pi * k / n_classes + 0.25 * np.exp(f1)
        c, s = np.cos(a), np.sin(a)
        seqs.append(np.stack([np.asarray(ti), 2.0 * (f1 * c + f2 * s), 2.0 * (-f1 * s + f2 * c)], 1))
        cls_out.append(torch.from_numpy(k))
    out = EventSequences(seqs, window=(0.0, t1), name="pinwheel_hawkes",
                         source=f"pinwheel_hawkes(n_sequences={n}, seed={seed}, t1={_fmt(t1)})")
    return (out, cls_out) if return_classes else out


def _simulate_hawkes(
    rng: np.random.Generator,
    idx: np.ndarray,
    times: list[list[float]],
    classes: list[list[int]],
    t1: float,
    n_classes: int,
    mu: float,
    alpha: float,
    omega: float,
) -> None:
    """Ogata thinning for sequences ``idx`` in parallel; appends accepted events to ``times``/``classes``."""
    s = np.zeros(idx.size)
    excess = np.zeros((idx.size, n_classes))  # lambda_k(s) - mu_k at each sequence's current time s
    active = np.arange(idx.size)
    while active.size:
        e = excess[active]
        bound = n_classes * mu + e.sum(1)  # the total intensity only decays until the next event
        s_new = s[active] + rng.exponential(1.0, active.size) / bound
        e = e * np.exp(-omega * (s_new - s[active]))[:, None]
        u = rng.uniform(0.0, 1.0, active.size) * bound
        k = (u[:, None] >= np.cumsum(mu + e, 1)).sum(1)  # n_classes = rejected
        alive = s_new < t1
        acc = alive & (k < n_classes)
        rows = np.nonzero(acc)[0]
        e[rows, (k[rows] + 1) % n_classes] += alpha * omega
        s[active], excess[active] = s_new, e
        for r in rows:
            i = idx[active[r]]
            times[i].append(float(s_new[r]))
            classes[i].append(int(k[r]))
        active = active[alive]


# ------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class EventDataset:
    """A registered event data set: ``load(split)`` returns :class:`EventSequences`.

    ``splits`` lists the valid ``split`` values; ``"all"`` (where present) is the default.
    """

    name: str
    splits: tuple[str, ...]
    loader: Callable[[str], EventSequences]
    description: str

    def load(self, split: Optional[str] = None) -> EventSequences:
        if split is None:
            if "all" not in self.splits:
                raise ValueError(f"event data set {self.name!r} needs a split: one of {', '.join(self.splits)}")
            split = "all"
        return self.loader(split)  # the loader validates split (e.g. "train split not available")


def _pinwheel_split(split: str) -> EventSequences:
    split = _check_split(split, ("train", "val", "test", "all"), "pinwheel_stpp")
    data = pinwheel_stpp()
    return data if split == "all" else split_sequences(data, (0.8, 0.1, 0.1), seed=0)[_PART_NAMES.index(split)]


# Neural STPP draws 2,000 / 200 / 200 sequences; fresh seeds per split (not Neural STPP's sequences).
_HAWKES_SPLITS = {"train": (2000, 13579), "val": (200, 13580), "test": (200, 13581)}


def _hawkes_split(split: str) -> EventSequences:
    split = _check_split(split, tuple(_HAWKES_SPLITS), "pinwheel_hawkes")
    n, seed = _HAWKES_SPLITS[split]
    out = pinwheel_hawkes(n, seed)
    out.name = f"pinwheel_hawkes/{split}"
    return out


def _bh(split: str) -> EventSequences:
    _check_split(split, ("all",), "bh_conflicts")
    return bh_conflicts()


_E = EventDataset
EVENT_DATASETS: dict[str, EventDataset] = {
    "earthquakes_jp": _E("earthquakes_jp", ("train", "val", "test", "all"), earthquakes_jp,
                         "Neural STPP Earthquakes JP, 30-day windows, [lon, lat]"),
    "covid_nj": _E("covid_nj", ("val", "test"), covid_nj, "Neural STPP COVID-19 NJ, 7-day windows, [lon, lat] (no train split)"),
    "citibike": _E("citibike", ("val", "test"), citibike, "Neural STPP Citibike, 24-hour days, [lon, lat] (no train split)"),
    "pinwheel_stpp": _E("pinwheel_stpp", ("train", "val", "test", "all"), _pinwheel_split,
                        "1,000 DSTPP Pinwheel-Hawkes sequences; train/val/test = split_sequences(seed=0), 800/100/100"),
    "pinwheel_hawkes": _E("pinwheel_hawkes", tuple(_HAWKES_SPLITS), _hawkes_split,
                          "fresh Pinwheel-Hawkes draws, 2000/200/200 sequences (seeds 13579/13580/13581)"),
    "earthquakenpp_japan_25": _E("earthquakenpp_japan_25", _PART_NAMES, lambda s: earthquakenpp("Japan_25", s),
                                 "EarthquakeNPP Japan M>=2.5, one long sequence per split, km"),
    "earthquakenpp_comcat_25": _E("earthquakenpp_comcat_25", _PART_NAMES, lambda s: earthquakenpp("ComCat_25", s),
                                  "EarthquakeNPP ComCat California M>=2.5, one long sequence per split, km"),
    "bh_conflicts": _E("bh_conflicts", ("all",), _bh, "BSTPP Boko Haram conflicts, one sequence, [lon, lat]"),
}
del _E
for _ds in EVENT_DATASETS.values():
    register(_ds.name, "events", _ds, _ds.description)


def event_dataset(name: str, split: Optional[str] = None) -> EventSequences:
    """The registered event data set ``name`` (see :data:`EVENT_DATASETS`) for ``split``.

    ``split=None`` means ``"all"`` where a data set has it (``earthquakes_jp``, ``pinwheel_stpp``,
    ``bh_conflicts``); the others need ``train``/``val``/``test`` (``covid_nj`` and ``citibike``:
    ``val``/``test`` only).
    """
    if name not in EVENT_DATASETS:
        raise ValueError(f"unknown event data set {name!r}; valid names: {', '.join(EVENT_DATASETS)}")
    return EVENT_DATASETS[name].load(split)


# ------------------------------------------------------------------------------ benchmark splits


class EventSplits(NamedTuple):
    """Train/validation/test :class:`EventSequences` of one data set (raw coordinates) and how they were made."""

    train: EventSequences
    val: EventSequences
    test: EventSequences
    note: str


def split_in_time(seqs: EventSequences, cuts: Sequence[float], *, rebase: bool = True) -> list[EventSequences]:
    """Cut ONE long sequence at the increasing times ``cuts`` into consecutive parts ``[c_k, c_{k+1})``,
    each re-based to start at time 0 with window ``(0, c_{k+1} - c_k)`` (the last part keeps ``t = t1``);
    ``rebase=False`` keeps the times, with window ``(c_k, c_{k+1})``."""
    if len(seqs) != 1:
        raise ValueError(f"split_in_time needs one long sequence; {seqs.name} has {len(seqs)}")
    t0, t1 = seqs.window
    edges = (t0, *[float(c) for c in cuts], t1)
    if any(not a < b for a, b in zip(edges[:-1], edges[1:])):
        raise ValueError(f"cuts must increase strictly inside the window ({_fmt(t0)}, {_fmt(t1)}); got {tuple(cuts)!r}")
    s, out = seqs.sequences[0], []
    for a, b in zip(edges[:-1], edges[1:]):
        keep = (s[:, 0] >= a) & ((s[:, 0] < b) | ((b == t1) & (s[:, 0] == t1)))
        if not bool(keep.any()):
            raise ValueError(f"{seqs.name} has no event in [{_fmt(a)}, {_fmt(b)})")
        part = s[keep].clone()
        if rebase:
            part[:, 0] -= a
        out.append(EventSequences._trusted([part], [f"{seqs.keys[0]}[{_fmt(a)},{_fmt(b)})"], (0.0, b - a) if rebase else (a, b),
                                           f"{seqs.name}[{_fmt(a)},{_fmt(b)})", seqs.source))
    return out


def event_splits(name: str) -> EventSplits:
    """The train/val/test protocol of the events benchmark for data set ``name`` (raw coordinates; standardise
    all three with ``train.spatial_stats()``):

    * ``earthquakes_jp``: Neural STPP's 950/50/50 windows.
    * ``covid_nj``, ``citibike``: only the val/test files exist — train on 90% of the val sequences, validate on
      the other 10% (seeded), test on the test split.
    * ``pinwheel_stpp``: the 1,000 DSTPP sequences, seeded 800/100/100; ``pinwheel_hawkes``: fresh draws 2000/200/200.
    * ``earthquakenpp_japan_25``, ``earthquakenpp_comcat_25``: the chronological splits cut into 30-day windows,
      every 7 days for training (overlapping, as Neural STPP's earthquake windows), disjoint for val/test so every
      event is scored once.
    * ``bh_conflicts``: the one sequence split in time at days 3000 / 3700, cut into 365-day windows (every 30 days
      for training, disjoint for val/test).
    """
    if name == "earthquakes_jp":
        return EventSplits(*(earthquakes_jp(s) for s in _PART_NAMES), "Neural STPP split 950/50/50")
    if name in ("covid_nj", "citibike"):
        loader = covid_nj if name == "covid_nj" else citibike
        tr, va = split_sequences(loader("val"), (0.9, 0.1), seed=0)
        return EventSplits(tr, va, loader("test"), "trained on 90% of the Neural STPP val split (no train split here), "
                           "validated on 10%, tested on the test split")
    if name in ("pinwheel_stpp", "pinwheel_hawkes"):
        note = ("1,000 DSTPP Pinwheel sequences, our 800/100/100 split (Neural STPP draws its own sequences)" if name == "pinwheel_stpp"
                else "fresh Pinwheel-Hawkes draws 2000/200/200")
        return EventSplits(*(event_dataset(name, s) for s in _PART_NAMES), note)
    if name in ("earthquakenpp_japan_25", "earthquakenpp_comcat_25"):
        cat = {"earthquakenpp_japan_25": "Japan_25", "earthquakenpp_comcat_25": "ComCat_25"}[name]
        return EventSplits(windows(earthquakenpp(cat, "train"), 30.0, 7.0), windows(earthquakenpp(cat, "val"), 30.0, 30.0),
                           windows(earthquakenpp(cat, "test"), 30.0, 30.0),
                           "chronological EarthquakeNPP splits in km; 30-day windows (train every 7 days, val/test disjoint)")
    if name == "bh_conflicts":
        parts = split_in_time(bh_conflicts(), (3000.0, 3700.0))
        return EventSplits(windows(parts[0], 365.0, 30.0), windows(parts[1], 365.0, 365.0), windows(parts[2], 365.0, 365.0),
                           "one sequence split in time at days 3000/3700; 365-day windows (train every 30 days, val/test "
                           "disjoint); whole-day times")
    raise ValueError(f"unknown event data set {name!r}; valid names: {', '.join(EVENT_DATASETS)}")
