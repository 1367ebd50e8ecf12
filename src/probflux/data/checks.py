"""Checks of loaded splits that no single point shows: degenerate times, extreme outliers, one-point splits.

:func:`check_splits` runs on every ``(train, val, test)`` that :func:`probflux.app.builders.load_data` returns
(through :func:`checked`):

* every point at one time (the time interval would be made up, and sampling at any other time extrapolates),
  or a training split at a single time: ``ValueError``;
* a value more than ``OUTLIER_Z`` robust standard deviations from the median of its column (``|v - median| /
  (1.4826 MAD)``, over all three splits): ``ValueError`` naming the split, row, column and value — one such
  value (say a time of ``1e30``) otherwise squeezes every other point to the same standardised position;
* a training split of one point: ``ValueError``; a validation or test split of one point: a ``UserWarning``
  (its NLL is one number; best-checkpoint selection and test scores then rest on it).
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["OUTLIER_Z", "check_splits", "checked"]

OUTLIER_Z = 1e6  # robust z-score above which a value is taken for a data error, not a tail
_SPLITS = ("train", "val", "test")


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _columns(p: Any) -> list[tuple[str, Tensor]]:
    cols = [("t", p.t.reshape(-1))]
    cols += [(f"x[:, {j}]", p.x[:, j]) for j in range(p.x.shape[1])]
    return cols


def _robust_scale(v: Tensor) -> tuple[float, Optional[float]]:
    """``(median, 1.4826 MAD)``; the scale falls back to the 90th percentile of ``|v - median|`` when the MAD is
    0 (a column mostly at one value) and is ``None`` when that is 0 too (nothing to compare with)."""
    med = float(v.median())
    dev = (v - med).abs()
    mad = float(dev.median()) * 1.4826
    if mad > 0:
        return med, mad
    q = float(torch.quantile(dev, 0.9)) if dev.numel() <= 16_000_000 else float(dev.sort().values[int(0.9 * (dev.numel() - 1))])
    return med, (q if q > 0 else None)


def check_splits(train: Any, val: Any, test: Any, *, source: Optional[str] = None) -> None:
    """Raise ``ValueError`` (or warn) for degenerate splits; see the module docstring. ``t: (N,)``, ``x: (N, D)``."""
    splits = [(name, p) for name, p in zip(_SPLITS, (train, val, test)) if p is not None]
    source = source or getattr(train, "source", "the data")
    nonempty = [(n, p) for n, p in splits if len(p.t)]
    if len(train.t) < 2:
        raise ValueError(f"{source}: the training split has {len(train.t)} point(s); a model needs at least 2 (lower "
                         "data.val_fraction/data.test_fraction or add data)")
    all_t = torch.cat([p.t.reshape(-1).double() for _, p in nonempty])
    if bool((all_t == all_t[0]).all()):
        raise ValueError(f"{source}: all {all_t.numel()} points have the same time t = {_fmt(float(all_t[0]))}; a dynamics model "
                         "needs points at two or more times (is the time column right? see data.columns.t)")
    if bool((train.t == train.t.reshape(-1)[0]).all()):
        raise ValueError(f"{source}: every training point has the time t = {_fmt(float(train.t.reshape(-1)[0]))}; the model "
                         "cannot learn how the density moves from one time")
    for name, p in splits:
        if len(p.t) == 1 and name != "train":
            warnings.warn(f"{source}: the {name} split holds a single point (t = {_fmt(float(p.t[0]))}); its scores rest on it",
                          UserWarning, stacklevel=3)
    columns = list(zip(*[_columns(p) for _, p in nonempty]))  # per column: its values in each non-empty split
    for parts in columns:
        label = parts[0][0]
        values = torch.cat([v.double() for _, v in parts])
        med, scale = _robust_scale(values)
        if scale is None:
            continue
        hits = []
        for (split_name, _), (_, v) in zip(nonempty, parts):
            z = (v.double() - med).abs() / scale
            for row in torch.nonzero(z > OUTLIER_Z).reshape(-1)[:5].tolist():
                hits.append(f"{label} = {_fmt(float(v[row]))} at row {row} of the {split_name} split ({float(z[row]):.3g} robust sd)")
        if hits:
            raise ValueError(f"{source}: extreme outliers, more than {OUTLIER_Z:g} robust standard deviations (1.4826 MAD = "
                             f"{_fmt(scale)}) from the median {_fmt(med)} of {label}: " + "; ".join(hits[:5])
                             + ". Such a value dominates the time map or the standardisation; remove or fix those rows")


def checked(load: Callable[..., tuple[Any, Any, Any, Any]]) -> Callable[..., tuple[Any, Any, Any, Any]]:
    """Decorate a loader returning ``(train, val, test, normalizer)`` so that its splits pass :func:`check_splits`."""

    @functools.wraps(load)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[Any, Any, Any, Any]:
        train, val, test, normalizer = load(*args, **kwargs)
        check_splits(train, val, test)
        return train, val, test, normalizer

    return wrapper
