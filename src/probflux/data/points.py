"""Spatio-temporal point data: ``(t_i, x_i[, c_i])`` samples of a time-dependent density.

* :class:`TemporalPoints` — validated float64 tensors ``t: (N,)``, ``x: (N, D)``, ``context: (N, C)``.
* :func:`load_points` — ``.csv`` / ``.tsv`` (header required, columns by name), ``.npz`` / ``.npy`` files
  (the rules of :mod:`probflux.data.files`).
* :func:`pinwheel`, :func:`branching` — built-in data sets whose distribution moves over ``t in [0, 1]``.
* :func:`split` — seeded train/val/test split.

Row numbers in error messages are 0-based indices into the data rows (a CSV header is not counted).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .files import DataFile, read_file
from .registry import register

__all__ = [
    "TemporalPoints",
    "load_points",
    "points_from_file",
    "pinwheel",
    "branching",
    "BUILTIN",
    "builtin",
    "split",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence[Any]]
PathLike = Union[str, "os.PathLike[str]"]


def _fmt(v: float) -> str:
    return f"{float(v):.10g}"


def _as_float64(a: ArrayLike, name: str, source: str) -> Tensor:
    if isinstance(a, Tensor):
        if a.is_complex() or a.dtype == torch.bool:
            raise TypeError(f"{name} must be a real tensor, got dtype {a.dtype} ({source})")
        return a.detach().to(torch.float64)
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype} ({source})")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))


def _check_finite(v: Tensor, name: str, source: str) -> None:
    bad = ~torch.isfinite(v)
    if not bool(bad.any()):
        return
    idx = torch.nonzero(bad)[0].tolist()  # first in row-major order: lowest row, then lowest column
    what = "NaN" if bool(torch.isnan(v[tuple(idx)])) else "inf"
    col = f" (column {idx[1]})" if v.dim() == 2 else ""
    raise ValueError(f"{name} contains {what} at row {idx[0]}{col} of {source}")


class TemporalPoints:
    """Points ``(t_i, x_i)`` with optional per-point context, stored as float64 tensors.

    Args:
        t: ``(N,)`` times (data units).
        x: ``(N, D)`` positions, ``D >= 1``.
        context: ``(N, C)`` or ``None``.
        source: file or data set name, used in error messages.

    Raises ``ValueError`` naming the argument for a wrong shape, ``N = 0``, unequal ``N``, or a
    NaN/inf entry (with its first row and column).
    """

    t: Tensor
    x: Tensor
    context: Optional[Tensor]
    source: str

    def __init__(
        self,
        t: ArrayLike,
        x: ArrayLike,
        context: Optional[ArrayLike] = None,
        *,
        source: str = "<array>",
        _allow_empty: bool = False,
    ) -> None:
        self.source = str(source)
        t_ = _as_float64(t, "t", self.source)
        x_ = _as_float64(x, "x", self.source)
        if t_.dim() != 1:
            raise ValueError(f"t must have shape (N,); got {tuple(t_.shape)} ({self.source})")
        if x_.dim() != 2 or x_.shape[1] < 1:
            raise ValueError(f"x must have shape (N, D) with D >= 1; got {tuple(x_.shape)} ({self.source})")
        n = t_.shape[0]
        if n == 0 and not _allow_empty:
            raise ValueError(f"no data points (N = 0) in {self.source}")
        if x_.shape[0] != n:
            raise ValueError(f"x has {x_.shape[0]} rows but t has {n} ({self.source})")
        c_: Optional[Tensor] = None
        if context is not None:
            c_ = _as_float64(context, "context", self.source)
            if c_.dim() != 2:
                raise ValueError(f"context must have shape (N, C); got {tuple(c_.shape)} ({self.source})")
            if c_.shape[0] != n:
                raise ValueError(f"context has {c_.shape[0]} rows but t has {n} ({self.source})")
            if c_.shape[1] == 0:
                c_ = None
        _check_finite(t_, "t", self.source)
        _check_finite(x_, "x", self.source)
        if c_ is not None:
            _check_finite(c_, "context", self.source)
        self.t, self.x, self.context = t_, x_, c_

    @classmethod
    def _unchecked(cls, t: Tensor, x: Tensor, context: Optional[Tensor], source: str) -> TemporalPoints:
        obj = cls.__new__(cls)
        obj.t, obj.x, obj.context, obj.source = t, x, context, source
        return obj

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def dim(self) -> int:
        """``D``, the spatial dimension."""
        return int(self.x.shape[1])

    @property
    def context_dim(self) -> int:
        """``C`` (0 without context)."""
        return 0 if self.context is None else int(self.context.shape[1])

    def subset(self, idx: Union[Tensor, np.ndarray, Sequence[int], slice]) -> TemporalPoints:
        """Rows ``idx`` (indices, boolean mask or slice); may be empty."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, Tensor) else idx, device=self.t.device)
            if idx.dtype != torch.bool:
                idx = idx.long().reshape(-1)
        ctx = None if self.context is None else self.context[idx]
        return TemporalPoints._unchecked(self.t[idx], self.x[idx], ctx, self.source)

    def to(self, dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None) -> TemporalPoints:
        """Copy with every tensor converted to ``dtype`` and/or moved to ``device``."""
        conv = lambda v: v.to(dtype=dtype or v.dtype, device=device if device is not None else v.device)  # noqa: E731
        ctx = None if self.context is None else conv(self.context)
        return TemporalPoints._unchecked(conv(self.t), conv(self.x), ctx, self.source)

    def __repr__(self) -> str:
        return f"TemporalPoints(n={len(self)}, dim={self.dim}, context_dim={self.context_dim}, source={self.source!r})"


# ------------------------------------------------------------------------------------------ files


def _from_matrix(a: np.ndarray, context_columns: int, name: str) -> TemporalPoints:
    """Columns ``[t, x_1..x_D, c_1..c_C]`` of a 2-D array ``(N, 1 + D + C)``."""
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] < 2 + context_columns:
        want = f"(N, 1 + D + {context_columns})" if context_columns else "(N, 1 + D)"
        cols = "t, x_1..x_D, context..." if context_columns else "t, x_1..x_D"
        raise ValueError(f"{name}: expected an array of shape {want} with columns [{cols}] and D >= 1; got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} contains no data rows")
    d = a.shape[1] - 1 - context_columns
    ctx = a[:, 1 + d:] if context_columns else None
    return TemporalPoints(a[:, 0], a[:, 1:1 + d], ctx, source=name)


def points_from_file(data: DataFile, context_columns: int = 0) -> TemporalPoints:
    """The :class:`TemporalPoints` of a :class:`~probflux.data.files.DataFile` table (a sequence column is dropped:
    the events pooled). ``context_columns = C`` splits a positional matrix ``[t, x.., c_1..c_C]``; for named columns it
    must equal the number of context columns found."""
    name = data.name
    if data.layout != "table":
        raise ValueError(f"{data.describe()} cannot be read as points (data.kind: points); "
                         f"read it as data.kind: {data.implied_kind}")
    if data.matrix is not None:
        return _from_matrix(data.matrix, context_columns, name)
    found = 0 if data.context is None else data.context.shape[1]
    if context_columns and found != context_columns:
        raise ValueError(f"{name}: context_columns={context_columns} but the file has "
                         f"{'no context' if not found else f'{found} context column(s)'} ({data.columns})")
    try:
        return TemporalPoints(data.t, data.x, data.context, source=name)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if name in msg else f"{name}: {msg}") from None


def load_points(path: PathLike, *, context_columns: int = 0, columns: Any = None) -> TemporalPoints:
    """Read time-stamped points from ``.csv``/``.tsv`` (header required, columns by name), ``.npz`` (arrays ``t``,
    ``x``[, ``context``], or one matrix) or ``.npy`` (a matrix) — the rules of :mod:`probflux.data.files`.

    Matrices have shape ``(N, 1 + D + C)`` with columns ``[t, x_1..x_D, c_1..c_C]`` where ``C = context_columns``.
    ``columns``: :class:`~probflux.data.files.Columns` (or a mapping ``{"t": ..., "x": [...]}``) naming CSV columns.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file) for anything else, e.g. a CSV
    whose columns cannot be identified by name.
    """
    if isinstance(context_columns, bool) or not isinstance(context_columns, int) or context_columns < 0:
        raise ValueError(f"context_columns must be an int >= 0, got {context_columns!r}")
    return points_from_file(read_file(path, columns), context_columns)


# ---------------------------------------------------------------------------------- built-in data


def _check_n_seed(n: int, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def pinwheel(n: int, seed: int = 0) -> TemporalPoints:
    """Five-arm pinwheel growing out of a central blob while rotating by 90 degrees over ``t in [0, 1]``.

    ``t ~ U(0, 1)``. The arm coordinates of the classic FFJORD pinwheel (radial ``1 + 0.3 e_r``,
    tangential ``0.1 e_tan``) are scaled by ``t``, bent by ``0.25 exp(radial)`` and rotated by the
    arm angle plus ``pi/2 * t``; a blob ``N(0, 0.4^2 I)`` weighted by ``1 - t`` fades out. At ``t = 0``
    the points form ``N(0, 0.4^2 I)``; at ``t = 1`` they are the classic pinwheel scaled by 2,
    rotated by 90 degrees, within about ``[-4, 4]^2``. Returns ``x: (n, 2)``.
    """
    _check_n_seed(n, seed)
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 1.0, n)
    arm = rng.integers(0, 5, n)
    radial = t * (1.0 + 0.3 * rng.standard_normal(n))
    tangential = t * 0.1 * rng.standard_normal(n)
    angle = 2 * math.pi * arm / 5 + 0.25 * np.exp(radial) + 0.5 * math.pi * t
    c, s = np.cos(angle), np.sin(angle)
    x = 2.0 * np.stack([c * radial - s * tangential, s * radial + c * tangential], axis=1)
    x += (1.0 - t)[:, None] * 0.4 * rng.standard_normal((n, 2))
    return TemporalPoints(t, x, source="pinwheel")


def branching(n: int, seed: int = 0) -> TemporalPoints:
    """One Gaussian blob at ``t = 0`` that splits into three branches curving outward by ``t = 1``.

    ``t ~ U(0, 1)``; each point belongs to one of three equally likely branches ``k`` whose centre
    ``3 t^2 (cos a_k(t), sin a_k(t))`` with ``a_k(t) = pi/2 + 2 pi k/3 + 1.2 t`` spirals outward, so the
    branches overlap early (undifferentiated) and separate late. Isotropic spread
    ``0.5 - 0.25 t``. Returns ``x: (n, 2)`` within about ``[-4, 4]^2``.
    """
    _check_n_seed(n, seed)
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 1.0, n)
    k = rng.integers(0, 3, n)
    angle = 0.5 * math.pi + 2 * math.pi * k / 3 + 1.2 * t
    radius = 3.0 * t**2
    centre = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    x = centre + (0.5 - 0.25 * t)[:, None] * rng.standard_normal((n, 2))
    return TemporalPoints(t, x, source="branching")


BUILTIN: dict[str, Callable[[int, int], TemporalPoints]] = {"pinwheel": pinwheel, "branching": branching}
register("pinwheel", "points", pinwheel, "five arms rotating and stretching over t in [0, 1]")
register("branching", "points", branching, "one cluster splitting into two branches")
register("file", "file", read_file, "a data file at data.path (.csv, .tsv, .npz, .npy): points, events or snapshots "
         "by data.kind or the file's layout (probflux.data.files)")


def builtin(name: str, n: int, seed: int = 0) -> TemporalPoints:
    """The built-in data set ``name`` (see :data:`BUILTIN`) with ``n`` points."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in data set {name!r}; valid names: {', '.join(sorted(BUILTIN))}")
    return BUILTIN[name](n, seed)


# ------------------------------------------------------------------------------ split, load_data


def split(points: TemporalPoints, val_fraction: float, test_fraction: float,
          seed: int) -> tuple[TemporalPoints, TemporalPoints, TemporalPoints]:
    """Seeded random split into ``(train, val, test)``; each keeps the original row order.

    ``round(N * fraction)`` points go to val and test (possibly 0: an empty ``TemporalPoints``);
    the training split must keep at least one point.
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    n = len(points)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise ValueError(f"{points.source} has {n} points: too few to keep a training point after taking {n_val} for validation "
                         f"and {n_test} for test")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, test_idx, train_idx = np.split(perm, [n_val, n_val + n_test])
    return tuple(points.subset(np.sort(i)) for i in (train_idx, val_idx, test_idx))  # type: ignore[return-value]
