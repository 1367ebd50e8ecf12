"""Population snapshots: unpaired samples ``X_k ~ rho_{t_k}`` of a density at a few times.

Single-cell time courses measure *different* cells at each time point, so there are no trajectories:
only ``K`` clouds ``X_k: (n_k, D)`` at times ``t_0 < ... < t_{K-1}``.

* :class:`Snapshots` — validated float64 snapshots; :meth:`Snapshots.leave_out` (the
  leave-one-time-point-out protocol), :meth:`Snapshots.standardize`, :meth:`Snapshots.whiten`,
  :meth:`Snapshots.to_points` (a :class:`~probflux.data.TemporalPoints` with ``t = t_k`` per cell).
* Real data (``<data root>/single_cell/``, see ``docs/data_sources.md`` §2): :func:`cite`,
  :func:`emt_3d`, :func:`emt_10d`, :func:`weinreb_2d`. The data root is ``$PROBFLUX_DATA`` if set,
  else ``<repo>/../shared/data`` (:func:`data_root_candidates`).
* Synthetic data, ``n`` cells per snapshot, deterministic per ``seed``: :func:`gaussian_to_gaussian`,
  :func:`gaussian_to_8gaussians`, :func:`moons`, :func:`branching_tree`.
* :data:`SNAPSHOTS` / :func:`snapshots` — the registry behind ``data.name``; :func:`load_snapshots` —
  the split, held-out snapshot and normaliser for a :class:`~probflux.app.config.DataConfig`, consistent
  with :func:`~probflux.data.load_data`.

Snapshot indices ``k`` and row numbers in error messages are 0-based.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..normalize import Normalizer
from .files import DataFile, read_file
from .points import ArrayLike, TemporalPoints, _as_float64, _check_n_seed, _fmt
from .registry import register

__all__ = [
    "Snapshots",
    "Standardization",
    "Whitening",
    "data_root",
    "data_root_candidates",
    "cite",
    "emt_3d",
    "emt_10d",
    "weinreb_2d",
    "gaussian_to_gaussian",
    "gaussian_to_8gaussians",
    "moons",
    "branching_tree",
    "SNAPSHOTS",
    "snapshot_set",
    "SnapshotSplit",
    "split_snapshots",
    "load_snapshots",
    "snapshots_from_file",
    "read_snapshots",
]


# ------------------------------------------------------------------------------ transformations


class Standardization(NamedTuple):
    """Per-dimension affine statistics ``z = (x - shift) / scale``; unpacks as ``(shift, scale)``.

    ``shift: (D,)``, ``scale: (D,)`` float64, ``scale > 0``.
    """

    shift: Tensor
    scale: Tensor

    def apply(self, x: Tensor) -> Tensor:
        """``(N, D)`` data → ``(N, D)`` standardised coordinates."""
        return (x - self.shift.to(x)) / self.scale.to(x)

    def invert(self, z: Tensor) -> Tensor:
        """``(N, D)`` standardised coordinates → ``(N, D)`` data."""
        return z * self.scale.to(z) + self.shift.to(z)

    @classmethod
    def fit(cls, x: Tensor) -> Standardization:
        """Mean and standard deviation (divisor ``N - 1``) of ``x: (N, D)``; a zero or undefined (``N = 1``)
        deviation becomes 1."""
        shift = x.mean(0)
        scale = x.std(0) if x.shape[0] > 1 else torch.ones_like(shift)
        return cls(shift, torch.where(scale > 0, scale, torch.ones_like(scale)))

    @classmethod
    def coerce(cls, stats: Any, dim: int, source: str, names: tuple[str, str] = ("shift", "scale")) -> Standardization:
        """Validate user-given ``stats = (shift, scale)`` of shape ``(dim,)`` each (finite, ``scale > 0``)."""
        a, b = names
        if len(stats) != 2:
            raise ValueError(f"stats must be ({a}, {b}), got {len(stats)} items ({source})")
        shift = _as_float64(stats[0], a, source).reshape(-1)
        scale = _as_float64(stats[1], b, source).reshape(-1)
        if shift.shape != (dim,) or scale.shape != (dim,):
            raise ValueError(f"stats must be ({a}, {b}) of shape ({dim},), got {tuple(shift.shape)} and {tuple(scale.shape)} ({source})")
        if not (bool(torch.isfinite(shift).all()) and bool(torch.isfinite(scale).all()) and bool((scale > 0).all())):
            raise ValueError(f"stats: {a} must be finite and {b} finite and > 0 ({source})")
        return cls(shift, scale)


@dataclass(frozen=True)
class Whitening:
    """PCA whitening ``z = (x - mean) @ matrix`` with ``x = z @ inverse + mean``.

    ``mean: (D,)``; ``matrix = V diag(lambda)^(-1/2)`` and ``inverse = diag(lambda)^(1/2) V^T``, both
    ``(D, D)``, where ``lambda`` (``eigenvalues: (D,)``, descending) and the columns of ``V`` are the
    eigenpairs of the covariance (divisor ``N - 1``) of the fitted cells. ``z``'s first coordinate is the
    first principal component; each eigenvector's entry of largest magnitude is positive, so the
    transform is deterministic. On the fitted cells ``z`` has mean 0 and identity covariance.
    """

    mean: Tensor
    matrix: Tensor
    inverse: Tensor
    eigenvalues: Tensor

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    @property
    def log_abs_det(self) -> float:
        """``log |det matrix|``: ``log p_x(x) = log p_z(z) + log_abs_det``."""
        return float(-0.5 * self.eigenvalues.log().sum())

    def apply(self, x: Tensor) -> Tensor:
        """``(N, D)`` data → ``(N, D)`` whitened coordinates."""
        return (x - self.mean.to(x)) @ self.matrix.to(x)

    def invert(self, z: Tensor) -> Tensor:
        """``(N, D)`` whitened coordinates → ``(N, D)`` data."""
        return z @ self.inverse.to(z) + self.mean.to(z)


# ---------------------------------------------------------------------------------- Snapshots


class Snapshots:
    """``K`` unpaired population snapshots ``samples[k]: (n_k, D)`` observed at ``times[k]``.

    Args:
        times: ``(K,)`` strictly increasing times (data units), ``K >= 2``.
        samples: ``K`` arrays/tensors ``(n_k, D)`` with ``n_k >= 1`` and one common ``D >= 1``.
        name: short data set name (used in error messages and as the points' ``source``).
        source: where the data came from (file paths or generator and its parameters).
        span: ``(t0, t1)`` returned by :meth:`time_map`; default ``(times[0], times[-1])``.
            :meth:`leave_out` passes the parent's span on, so a held-out time keeps its place.

    Attributes: ``times: (K,)`` float64 tensor, ``samples``: list of ``K`` float64 tensors ``(n_k, D)``.

    Raises ``ValueError`` for ``K < 2``, a count mismatch, a duplicate or unsorted time, an empty
    snapshot (naming its index and time), a wrong shape or a ``D`` differing from snapshot 0 (naming
    the index), and a NaN/inf entry (naming the snapshot, row and column); ``TypeError`` for
    non-numeric input.
    """

    times: Tensor
    samples: list[Tensor]
    name: str
    source: str

    def __init__(
        self,
        times: ArrayLike,
        samples: Sequence[ArrayLike],
        *,
        name: str = "snapshots",
        source: str = "<arrays>",
        span: Optional[tuple[float, float]] = None,
        _min_snapshots: int = 2,
    ) -> None:
        self.name, self.source = str(name), str(source)
        where = self.name
        t = _as_float64(times, "times", where)
        if t.dim() != 1:
            raise ValueError(f"times must have shape (K,); got {tuple(t.shape)} ({where})")
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0, 0])
            raise ValueError(f"times contains {'NaN' if bool(torch.isnan(t[i])) else 'inf'} at index {i} ({where})")
        k_count = int(t.shape[0])
        if k_count < _min_snapshots:
            raise ValueError(f"need at least {_min_snapshots} snapshots (K >= {_min_snapshots}), got K = {k_count} ({where})")
        if isinstance(samples, (Tensor, np.ndarray)) or not isinstance(samples, Sequence):
            raise TypeError(f"samples must be a list of K arrays (n_k, D), got {type(samples).__name__} ({where})")
        if len(samples) != k_count:
            raise ValueError(f"samples has {len(samples)} snapshots but times has {k_count} ({where})")
        tl = t.tolist()
        for i in range(1, k_count):
            for j in range(i):
                if tl[j] == tl[i]:
                    raise ValueError(f"duplicate time {_fmt(tl[i])} at indices {j} and {i}; times must be strictly increasing ({where})")
        for i in range(1, k_count):
            if tl[i] < tl[i - 1]:
                raise ValueError(
                    f"times must be strictly increasing, but times[{i}] = {_fmt(tl[i])} < times[{i - 1}] = {_fmt(tl[i - 1])} ({where})"
                )
        xs: list[Tensor] = []
        for k, s in enumerate(samples):
            at = f"snapshot {k} (t={_fmt(tl[k])})"
            x = _as_float64(s, at, where)
            if x.dim() != 2 or x.shape[1] < 1:
                raise ValueError(f"{at} must have shape (n, D) with D >= 1; got {tuple(x.shape)} ({where})")
            if x.shape[0] == 0:
                raise ValueError(f"{at} is empty (0 cells) in {where}")
            if xs and x.shape[1] != xs[0].shape[1]:
                raise ValueError(f"{at} has D = {x.shape[1]} but snapshot 0 has D = {xs[0].shape[1]} ({where})")
            bad = ~torch.isfinite(x)
            if bool(bad.any()):
                r, c = torch.nonzero(bad)[0].tolist()
                what = "NaN" if bool(torch.isnan(x[r, c])) else "inf"
                raise ValueError(f"{at} contains {what} at row {r} (column {c}) of {where}")
            xs.append(x)
        self.times, self.samples = t, xs
        self._span = self._check_span(span)

    def _check_span(self, span: Optional[tuple[float, float]]) -> tuple[float, float]:
        lo, hi = float(self.times[0]), float(self.times[-1])
        if span is None:
            return (lo, hi) if hi > lo else (lo, lo + 1.0)
        a, b = float(span[0]), float(span[1])
        if not (math.isfinite(a) and math.isfinite(b) and a < b and a <= lo and hi <= b):
            raise ValueError(f"span must be finite (t0, t1) with t0 < t1 containing every time [{_fmt(lo)}, {_fmt(hi)}]; "
                             f"got ({_fmt(a)}, {_fmt(b)}) ({self.name})")
        return (a, b)

    @classmethod
    def _trusted(cls, times: Tensor, samples: list[Tensor], name: str, source: str, span: tuple[float, float]) -> Snapshots:
        """No validation: for results of methods on an already validated object."""
        obj = cls.__new__(cls)
        obj.times, obj.samples, obj.name, obj.source, obj._span = times, samples, name, source, span
        return obj

    @classmethod
    def from_labels(
        cls,
        x: ArrayLike,
        labels: ArrayLike,
        times: Optional[ArrayLike] = None,
        *,
        name: str = "snapshots",
        source: str = "<arrays>",
    ) -> Snapshots:
        """Group the rows of ``x: (N, D)`` by ``labels: (N,)`` (one snapshot per distinct label, sorted).

        ``times: (K,)`` gives the time of each sorted distinct label (default: the labels themselves).
        Rows keep their order within a snapshot.
        """
        xa = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x)
        la = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, Tensor) else labels)
        if la.ndim != 1 or xa.ndim < 1 or la.shape[0] != xa.shape[0]:
            raise ValueError(f"labels must have shape (N,) matching x's {xa.shape[0] if xa.ndim else 0} rows; got {la.shape} ({name})")
        if la.dtype.kind not in "biuf":
            raise TypeError(f"labels must be numeric, got dtype {la.dtype} ({name})")
        if la.dtype.kind == "f" and not np.isfinite(la).all():
            raise ValueError(f"labels contain NaN/inf at row {int(np.nonzero(~np.isfinite(la))[0][0])} ({name})")
        uniq = np.unique(la)
        t = uniq.astype(np.float64) if times is None else times
        tn = np.asarray(t.detach().cpu().numpy() if isinstance(t, Tensor) else t)
        if tn.shape != (len(uniq),):
            raise ValueError(f"times must give one time per distinct label ({len(uniq)}: {uniq.tolist()}); got shape {tn.shape} ({name})")
        return cls(tn, [xa[la == u] for u in uniq], name=name, source=source)

    # ---------------------------------------------------------------- basic properties

    def __len__(self) -> int:
        """``K``, the number of snapshots."""
        return int(self.times.shape[0])

    @property
    def dim(self) -> int:
        """``D``, the spatial dimension."""
        return int(self.samples[0].shape[1])

    @property
    def sizes(self) -> tuple[int, ...]:
        """``(n_0, ..., n_{K-1})``, cells per snapshot."""
        return tuple(int(s.shape[0]) for s in self.samples)

    @property
    def n_cells(self) -> int:
        """``sum_k n_k``."""
        return sum(self.sizes)

    def time_map(self) -> tuple[float, float]:
        """``(t0, t1)`` that the :class:`~probflux.normalize.Normalizer` maps to ``[0, 1]``.

        The first and last snapshot times, except after :meth:`leave_out`, which keeps the parent's
        interval (so a held-out endpoint is an extrapolation outside ``[0, 1]`` and a held-out
        interior time maps inside).
        """
        return self._span

    def pooled(self) -> Tensor:
        """All cells stacked: ``(sum_k n_k, D)``."""
        return torch.cat(self.samples, 0)

    def to_points(self) -> TemporalPoints:
        """A :class:`TemporalPoints` with ``t = times[k]`` for every row of ``samples[k]``; ``x: (sum n_k, D)``."""
        t = torch.cat([torch.full((n,), float(tk), dtype=torch.float64, device=s.device)
                       for n, tk, s in zip(self.sizes, self.times.tolist(), self.samples)])
        return TemporalPoints._unchecked(t.to(self.samples[0].dtype), self.pooled(), None, self.name)

    def to(self, dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None) -> Snapshots:
        """Copy with every tensor converted to ``dtype`` and/or moved to ``device``."""
        conv = lambda v: v.to(dtype=dtype or v.dtype, device=device if device is not None else v.device)  # noqa: E731
        return Snapshots._trusted(conv(self.times), [conv(s) for s in self.samples], self.name, self.source, self._span)

    def select(self, rows: Sequence[Union[Tensor, np.ndarray, Sequence[int]]]) -> Snapshots:
        """Keep rows ``rows[k]`` (integer indices) of snapshot ``k``; every snapshot must keep a row."""
        if len(rows) != len(self):
            raise ValueError(f"rows must give indices for each of the {len(self)} snapshots, got {len(rows)} ({self.name})")
        out = []
        for k, (s, r) in enumerate(zip(self.samples, rows)):
            idx = torch.as_tensor(np.asarray(r), dtype=torch.long).reshape(-1)
            if idx.numel() == 0:
                raise ValueError(f"snapshot {k} (t={_fmt(self.times[k])}) would be empty (0 cells) in {self.name}")
            out.append(s[idx])
        return Snapshots._trusted(self.times, out, self.name, self.source, self._span)

    def __repr__(self) -> str:
        times = ", ".join(_fmt(t) for t in self.times.tolist())
        return f"Snapshots(name={self.name!r}, K={len(self)}, dim={self.dim}, times=[{times}], sizes={list(self.sizes)})"

    # ---------------------------------------------------------------- leave-one-out

    def leave_out(self, k: int, *, allow_endpoints: bool = False) -> tuple[Snapshots, float, Tensor]:
        """Hold out snapshot ``k``: ``(the other K-1 snapshots, times[k], samples[k] (n_k, D))``.

        ``k`` must be an interior index ``1 .. K-2`` (interpolation); ``allow_endpoints=True`` also
        accepts ``0`` and ``K-1`` (extrapolation). The held-out cells are a copy and appear nowhere in the
        returned :class:`Snapshots`, which keeps this object's :meth:`time_map`. The result may have a
        single snapshot (``K = 2`` with ``allow_endpoints``).
        """
        n = len(self)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int snapshot index, got {k!r}")
        k = int(k)
        lo, hi = (0, n - 1) if allow_endpoints else (1, n - 2)
        if not lo <= k <= hi:
            if lo > hi:
                raise ValueError(f"cannot leave out snapshot {k}: {self.name} has K = {n} snapshots, so none is interior "
                                 "(use allow_endpoints=True to hold out an endpoint)")
            what = ("a snapshot index" if allow_endpoints
                    else "an interior snapshot index (the endpoints 0 and K-1 need allow_endpoints=True)")
            raise ValueError(f"cannot leave out snapshot {k}: must be {what} in {lo}..{hi}; {self.name} has K = {n} snapshots")
        keep = [i for i in range(n) if i != k]
        rest = Snapshots._trusted(self.times[keep].clone(), [self.samples[i] for i in keep], self.name, self.source, self._span)
        return rest, float(self.times[k]), self.samples[k].clone()

    # ---------------------------------------------------------------- normalisation

    def _mapped(self, fn: Callable[[Tensor], Tensor]) -> Snapshots:
        return Snapshots._trusted(self.times, [fn(s) for s in self.samples], self.name, self.source, self._span)

    def standardize(self, stats: Optional[Union[Standardization, tuple[ArrayLike, ArrayLike]]] = None) -> tuple[Snapshots, Standardization]:
        """Standardised copy ``(x - shift) / scale`` and its :class:`Standardization` ``(shift, scale)``.

        Without ``stats`` they are the mean and standard deviation (divisor ``N - 1``, as in
        :meth:`Normalizer.fit`) over all cells pooled; a zero deviation becomes 1. Given ``stats``
        (e.g. from training cells) they are applied unchanged.
        """
        st = Standardization.fit(self.pooled()) if stats is None else Standardization.coerce(stats, self.dim, self.name)
        return self._mapped(st.apply), st

    def whiten(self, stats: Optional[Whitening] = None, *, eps: float = 1e-10) -> tuple[Snapshots, Whitening]:
        """PCA-whitened copy ``(x - mean) @ matrix`` and its :class:`Whitening`.

        Without ``stats`` the mean and covariance are those of all cells pooled; raises ``ValueError``
        if the covariance is singular (smallest eigenvalue ``<= eps *`` largest). Given ``stats`` they
        are applied unchanged (``stats.dim`` must equal ``D``).
        """
        if stats is None:
            x = self.pooled()
            if x.shape[0] < 2:
                raise ValueError(f"cannot whiten {self.name}: need at least 2 cells, got {x.shape[0]}")
            mean = x.mean(0)
            xc = x - mean
            cov = xc.T @ xc / (x.shape[0] - 1)
            lam, vec = torch.linalg.eigh(cov)
            lam, vec = lam.flip(0), vec.flip(1)  # descending: first coordinate = first principal component
            if not float(lam[-1]) > eps * max(float(lam[0]), 0.0) or not float(lam[0]) > 0:
                raise ValueError(
                    f"cannot whiten {self.name}: the covariance of its {x.shape[0]} cells is singular "
                    f"(eigenvalues from {_fmt(lam[0])} down to {_fmt(lam[-1])})"
                )
            rows = vec.abs().argmax(0)
            vec = vec * torch.sign(vec[rows, torch.arange(vec.shape[1])])
            st = Whitening(mean, vec / lam.sqrt(), (vec * lam.sqrt()).T.contiguous(), lam)
        else:
            if not isinstance(stats, Whitening):
                raise TypeError(f"stats must be a Whitening, got {type(stats).__name__}")
            if stats.dim != self.dim:
                raise ValueError(f"stats were fitted in D = {stats.dim} but {self.name} has D = {self.dim}")
            st = stats
        return self._mapped(st.apply), st


# ------------------------------------------------------------------------------------ real data

_DATA_HINT = "set PROBFLUX_DATA to the folder that holds single_cell/ (see docs/data_sources.md §2)"


def data_root_candidates() -> list[Path]:
    """Where the shared data may live, in order: ``$PROBFLUX_DATA`` (if set), ``<repo>/../shared/data``.

    ``<repo>`` is three folders above this file (``src/probflux/data/snapshots.py``).
    """
    out = []
    env = os.environ.get("PROBFLUX_DATA")
    if env:
        out.append(Path(env).expanduser())
    out.append(Path(os.path.normpath(Path(__file__).resolve().parents[3] / ".." / "shared" / "data")))
    return out


def data_root() -> Path:
    """The first existing folder of :func:`data_root_candidates`; ``FileNotFoundError`` naming all tried."""
    tried = data_root_candidates()
    for root in tried:
        if root.is_dir():
            return root
    raise FileNotFoundError(f"no data folder found; tried {', '.join(repr(str(p)) for p in tried)} ({_DATA_HINT})")


def _data_file(relative: str, hint: str = _DATA_HINT) -> Path:
    """``root / relative`` for the first candidate root that has the file; else ``FileNotFoundError``."""
    tried = [root / relative for root in data_root_candidates()]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{relative} not found; tried {', '.join(repr(str(p)) for p in tried)} ({hint})")


def _load_labelled_npz(relative: str, times: Sequence[float], name: str, dim: int) -> Snapshots:
    path = _data_file(relative)
    with np.load(path, allow_pickle=False) as z:
        if "X" not in z.files or "time_index" not in z.files:
            raise ValueError(f"{path}: expected arrays 'X' and 'time_index', found {list(z.files)}")
        x, idx = z["X"], z["time_index"]
    if x.ndim != 2 or x.shape[1] != dim or idx.shape != (x.shape[0],):
        raise ValueError(f"{path}: expected X of shape (N, {dim}) and time_index (N,), got {x.shape} and {idx.shape}")
    if sorted(np.unique(idx).tolist()) != list(range(len(times))):
        raise ValueError(f"{path}: expected time_index values 0..{len(times) - 1}, got {np.unique(idx).tolist()}")
    return Snapshots.from_labels(x, idx, np.asarray(times, dtype=np.float64), name=name, source=str(path))


CITE_DAYS = (2, 3, 4, 7)


def cite(pcs: int = 5, days: Sequence[int] = CITE_DAYS) -> Snapshots:
    """CITE-seq (NeurIPS 2022 multimodal challenge): the first ``pcs`` of 50 PCs on days ``days``.

    Reads ``single_cell/cite_msci_pca50/full_cite_pcas_50_day_{d}.npy``; times are the days
    (``2, 3, 4, 7``), sizes ``6071 / 7643 / 8485 / 7195`` cells, ``D = pcs`` in ``1..50``. The PCs are
    not whitened (PC1 std ~ 40).
    """
    if isinstance(pcs, bool) or not isinstance(pcs, (int, np.integer)) or not 1 <= pcs <= 50:
        raise ValueError(f"pcs must be an int in 1..50, got {pcs!r}")
    days = [int(d) for d in days]
    bad = [d for d in days if d not in CITE_DAYS]
    if bad:
        raise ValueError(f"cite: no data for day(s) {bad}; available days: {', '.join(map(str, CITE_DAYS))}")
    paths = [_data_file(f"single_cell/cite_msci_pca50/full_cite_pcas_50_day_{d}.npy") for d in days]
    xs = []
    for p in paths:
        a = np.load(p, allow_pickle=False)
        if a.ndim != 2 or a.shape[1] != 50:
            raise ValueError(f"{p}: expected an array of shape (n, 50), got {a.shape}")
        xs.append(np.ascontiguousarray(a[:, :pcs], dtype=np.float64))
    folder = str(paths[0].parent) if paths else "single_cell/cite_msci_pca50"
    return Snapshots(np.asarray(days, dtype=np.float64), xs, name="cite", source=f"{folder} ({pcs} PCs, days {', '.join(map(str, days))})")


EMT_TIMES = (0.0, 1.0 / 3.0, 1.0, 3.0, 7.0)


def emt_3d() -> Snapshots:
    """A549 TGF-beta1 EMT (TIGON), 3-D autoencoder embedding; times in days ``0, 1/3 (8 h), 1, 3, 7``.

    Reads ``single_cell/tigon/emt_a549_3d.npz``; sizes ``577 / 885 / 788 / 754 / 129``.
    """
    return _load_labelled_npz("single_cell/tigon/emt_a549_3d.npz", EMT_TIMES, "emt", 3)


def weinreb_2d() -> Snapshots:
    """Mouse haematopoiesis lineage tracing (Weinreb et al. 2020, TIGON), 2-D; days ``2, 4, 6``.

    Reads ``single_cell/tigon/lineage_weinreb_2d.npz``; sizes ``1429 / 3781 / 5788``.
    """
    return _load_labelled_npz("single_cell/tigon/lineage_weinreb_2d.npz", (2.0, 4.0, 6.0), "weinreb", 2)


def emt_10d() -> Snapshots:
    """A549 EMT (DeepRUOT), 10-D embedding with values in ``[0, 1]``; times = labels ``0, 1, 2, 3``.

    Reads ``single_cell/deepruot/emt_10d.csv`` (header ``samples,x1..x10``); sizes ``577 / 885 / 788 / 883``
    (the last two TIGON time points are merged into label 3).
    """
    path = _data_file("single_cell/deepruot/emt_10d.csv")
    with open(path, encoding="utf-8") as fh:
        header = [h.strip().strip('"') for h in fh.readline().strip().split(",")]
    want = ["samples"] + [f"x{i}" for i in range(1, 11)]
    if header != want:
        raise ValueError(f"{path}: expected the header {','.join(want)}, got {','.join(header)}")
    a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    labels = a[:, 0]
    if not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{path}: the 'samples' column must hold integer time labels")
    return Snapshots.from_labels(a[:, 1:], labels, name="emt10", source=str(path))


# ------------------------------------------------------------------------------------ user files


def snapshots_from_file(data: DataFile) -> Snapshots:
    """The :class:`Snapshots` of a :class:`~probflux.data.files.DataFile`: one snapshot per distinct label of a
    ``snapshots`` layout (``X`` + ``time_index`` [+ ``times``], or a CSV ``time_index``/``day`` column), or per
    distinct time of a table read as ``data.kind: snapshots``. Times are ``times[k]`` for the ``k``-th sorted label
    when the file has ``times``, else the labels themselves."""
    if data.layout not in ("snapshots", "table"):
        raise ValueError(f"{data.describe()} cannot be read as population snapshots (data.kind: snapshots); read it as data.kind: events")
    if data.context is not None or data.sequence is not None:
        raise ValueError(f"{data.name}: population snapshots take no context or sequence column ({data.columns})")
    labels = np.asarray(data.t)
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        row = int(np.nonzero(~np.isfinite(labels))[0][0])
        raise ValueError(f"{data.name}: the snapshot time/label of row {row} is {labels[row]} ({data.columns})")
    try:
        return Snapshots.from_labels(data.x, labels, data.times, name=os.path.splitext(data.name)[0], source=data.path)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{data.name}: {e}") from None


def read_snapshots(path: Union[str, os.PathLike], columns: Any = None) -> Snapshots:
    """Population snapshots from a file (:func:`probflux.data.files.read_file`, then :func:`snapshots_from_file`):
    an ``.npz`` with ``X (N, D)``, ``time_index (N,)`` [, ``times (K,)``], a CSV/TSV with a ``time_index``/``day``
    (or ``t``) column and coordinate columns, or an ``(N, 1 + D)`` array ``[t, x..]`` grouped by ``t``."""
    return snapshots_from_file(read_file(path, columns))


# ------------------------------------------------------------------------------- synthetic data


def _vector(v: Optional[Sequence[float]], default: np.ndarray, name: str) -> np.ndarray:
    if v is None:
        return default
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != default.shape or not np.isfinite(a).all():
        raise ValueError(f"{name} must be {default.shape[0]} finite numbers (one per dimension), got {v!r}")
    return a


def _positive(v: float, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def _two_times(times: Sequence[float]) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.shape != (2,):
        raise ValueError(f"times must be two numbers (t_source, t_target), got {times!r}")
    return t


def gaussian_to_gaussian(
    n: int = 2000,
    seed: int = 0,
    *,
    dim: int = 2,
    m0: Optional[Sequence[float]] = None,
    m1: Optional[Sequence[float]] = None,
    s0: float = 0.5,
    s1: float = 1.0,
    times: Sequence[float] = (0.0, 1.0),
) -> Snapshots:
    """Two snapshots: ``N(m0, s0^2 I)`` at ``times[0]`` and ``N(m1, s1^2 I)`` at ``times[1]``, ``n`` cells each.

    Defaults: ``m0 = -2 e_1``, ``m1 = +2 e_1`` (``e_1`` the first unit vector of ``R^dim``), ``s0 = 0.5``,
    ``s1 = 1``, times ``(0, 1)``. The W2-optimal (and entropic) interpolations are closed form, which
    makes this the sanity check for bridge/OT methods. Returns ``(n, dim)`` per snapshot.
    """
    _check_n_seed(n, seed)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    e1 = np.zeros(dim)
    e1[0] = 1.0
    mu0, mu1 = _vector(m0, -2.0 * e1, "m0"), _vector(m1, 2.0 * e1, "m1")
    sd0, sd1 = _positive(s0, "s0"), _positive(s1, "s1")
    rng = np.random.default_rng(seed)
    x0 = mu0 + sd0 * rng.standard_normal((n, dim))
    x1 = mu1 + sd1 * rng.standard_normal((n, dim))
    return Snapshots(_two_times(times), [x0, x1], name="gaussians", source=f"gaussian_to_gaussian(n={n}, seed={seed}, dim={dim})")


_8_CENTRES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)], dtype=np.float64)
_8_CENTRES[4:] /= math.sqrt(2.0)


def gaussian_to_8gaussians(n: int = 2000, seed: int = 0, *, radius: float = 5.0, std: float = 0.1 ** 0.25,
                           times: Sequence[float] = (0.0, 1.0)) -> Snapshots:
    """TorchCFM's benchmark pair: ``N(0, I)`` at ``times[0]``, eight Gaussians at ``times[1]``; ``n`` cells each.

    The target follows TorchCFM's ``sample_8gaussians`` (``eight_normal_sample(n, 2, scale=5, var=0.1)``):
    equally weighted components centred on the circle of radius ``radius = 5`` at angles ``k * 45``
    degrees. TorchCFM passes ``sqrt(var) * I`` as the *covariance*, so its component std is
    ``0.1 ** 0.25 ~ 0.562`` — the default ``std`` here. Returns ``(n, 2)`` per snapshot.
    """
    _check_n_seed(n, seed)
    r, sd = _positive(radius, "radius"), _positive(std, "std")
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((n, 2))
    comp = rng.integers(0, 8, n)
    x1 = r * _8_CENTRES[comp] + sd * rng.standard_normal((n, 2))
    return Snapshots(_two_times(times), [x0, x1], name="8gaussians",
                     source=f"gaussian_to_8gaussians(n={n}, seed={seed}, radius={r:g}, std={sd:.4g})")


def moons(n: int = 2000, seed: int = 0, *, noise: float = 0.1, times: Sequence[float] = (0.0, 1.0)) -> Snapshots:
    """``N(0, I)`` at ``times[0]`` and two interleaved half-moons at ``times[1]``; ``n`` cells each.

    Two snapshots only (no intermediate one). The moons are scikit-learn's ``make_moons`` shape (outer
    arc ``(cos a, sin a)``, inner arc ``(1 - cos a, 1/2 - sin a)``, ``a ~ U(0, pi)``, arm chosen with
    probability 1/2) with isotropic Gaussian noise of std ``noise``, then mapped by ``3 x - 1`` as in
    TorchCFM's ``sample_moons``, so they lie within about ``[-4, 5] x [-3, 2]``. Returns ``(n, 2)``.
    """
    _check_n_seed(n, seed)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((n, 2))
    a = rng.uniform(0.0, math.pi, n)
    inner = rng.integers(0, 2, n).astype(bool)
    arc = np.where(inner[:, None], np.stack([1.0 - np.cos(a), 0.5 - np.sin(a)], 1), np.stack([np.cos(a), np.sin(a)], 1))
    x1 = 3.0 * (arc + noise * rng.standard_normal((n, 2))) - 1.0
    return Snapshots(_two_times(times), [x0, x1], name="moons", source=f"moons(n={n}, seed={seed}, noise={noise:g})")


TREE_TIMES = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)


def branching_tree(n: int = 2000, seed: int = 0, *, std: float = 0.3) -> Snapshots:
    """A 2-D population that splits into 2 and then 4 branches; 4 snapshots at ``t = 0, 1/3, 2/3, 1``.

    Every cell draws a lineage ``(b1, b2)`` in ``{-1, +1}^2`` uniformly and independently per snapshot
    (snapshots are unpaired) and sits at ``centre(t, b1, b2) + std * N(0, I)``. The horizontal
    coordinate of every centre is ``-3 + 6 t``; the vertical one is ``0`` at ``t = 0`` (one blob),
    ``1.5 b1`` at ``t = 1/3`` (two branches), ``2 b1 + 0.9 b2`` at ``t = 2/3`` (four branches) and
    ``2.5 b1 + 1.8 b2`` at ``t = 1`` (the four branches fan out). Returns ``(n, 2)`` per snapshot.
    """
    _check_n_seed(n, seed)
    sd = _positive(std, "std")
    rng = np.random.default_rng(seed)
    level_y = (lambda b1, b2: 0.0 * b1, lambda b1, b2: 1.5 * b1, lambda b1, b2: 2.0 * b1 + 0.9 * b2, lambda b1, b2: 2.5 * b1 + 1.8 * b2)
    xs = []
    for t, fy in zip(TREE_TIMES, level_y):
        b = rng.choice(np.array([-1.0, 1.0]), size=(n, 2))
        centre = np.stack([np.full(n, -3.0 + 6.0 * t), fy(b[:, 0], b[:, 1])], 1)
        xs.append(centre + sd * rng.standard_normal((n, 2)))
    return Snapshots(np.asarray(TREE_TIMES), xs, name="tree", source=f"branching_tree(n={n}, seed={seed}, std={sd:g})")


# ------------------------------------------------------------------------------------- registry

SNAPSHOTS: dict[str, Callable[..., Snapshots]] = {
    "cite": cite,
    "emt": emt_3d,
    "emt10": emt_10d,
    "weinreb": weinreb_2d,
    "gaussians": gaussian_to_gaussian,
    "8gaussians": gaussian_to_8gaussians,
    "moons": moons,
    "tree": branching_tree,
}
"""Population-snapshot data sets by ``data.name``: real (``cite``, ``emt``, ``emt10``, ``weinreb``) and
synthetic (``gaussians``, ``8gaussians``, ``moons``, ``tree``; these take ``n`` and ``seed``)."""

SYNTHETIC = frozenset({"gaussians", "8gaussians", "moons", "tree"})

for _name, _loader in SNAPSHOTS.items():
    register(_name, "snapshots", _loader, "synthetic snapshots" if _name in SYNTHETIC else "single-cell snapshots")


def snapshot_set(name: str, **kwargs: Any) -> Snapshots:
    """The snapshot data set ``name`` of :data:`SNAPSHOTS`, built with ``kwargs``."""
    if name not in SNAPSHOTS:
        raise ValueError(f"unknown snapshot data set {name!r}; valid names: {', '.join(SNAPSHOTS)}")
    return SNAPSHOTS[name](**kwargs)


# ------------------------------------------------------------------------- config integration


@dataclass
class SnapshotSplit:
    """Everything :func:`load_data` / :func:`load_snapshots` derive from a snapshot ``DataConfig``.

    All cells are in the returned coordinates: data units, or whitened coordinates with ``data.whiten``.
    ``transform`` is the whitening applied (``None`` without it).
    """

    full: Snapshots
    train: Snapshots
    val: TemporalPoints
    test: TemporalPoints
    test_time: Optional[float]
    test_cells: Optional[Tensor]
    normalizer: Normalizer
    transform: Optional[Whitening]


def _split_rows(data: Snapshots, val_fraction: float, test_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per snapshot, seeded ``(train, val, test)`` row indices (each sorted): ``round(n_k * fraction)``
    rows to val and test, at least one row kept for training."""
    for key, f in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise ValueError(f"{key} must lie in [0, 1), got {f!r}")
    rng = np.random.default_rng(seed)
    out = []
    for k, n in enumerate(data.sizes):
        n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
        if n - n_val - n_test < 1:
            raise ValueError(f"snapshot {k} (t={_fmt(data.times[k])}) of {data.name} has {n} cells: too few to keep a training cell "
                             f"after taking {n_val} for validation and {n_test} for test")
        perm = rng.permutation(n)
        val, test, train = np.split(perm, [n_val, n_val + n_test])
        out.append((np.sort(train), np.sort(val), np.sort(test)))
    return out


def _points(times: Sequence[float], cells: Sequence[Tensor], source: str, dim: int) -> TemporalPoints:
    parts = [c for c in cells if c.shape[0]]
    if not parts:
        return TemporalPoints._unchecked(torch.zeros(0, dtype=torch.float64), torch.zeros(0, dim, dtype=torch.float64), None, source)
    t = torch.cat([torch.full((c.shape[0],), float(tk), dtype=torch.float64) for tk, c in zip(times, cells) if c.shape[0]])
    return TemporalPoints._unchecked(t, torch.cat(parts, 0), None, source)


def _build(cfg: Any, seed: int) -> Snapshots:
    name = cfg.name
    if name == "file":
        if not getattr(cfg, "path", None):
            raise ValueError("data.path is required when data.name is 'file'")
        return read_snapshots(cfg.path, getattr(cfg, "columns", None))
    if name not in SNAPSHOTS:
        raise ValueError(f"unknown snapshot data set {name!r}; valid names: {', '.join(SNAPSHOTS)}")
    if name == "cite":
        return cite(pcs=int(getattr(cfg, "pcs", 5)))
    if name in SYNTHETIC:
        return SNAPSHOTS[name](n=cfg.n, seed=seed)
    return SNAPSHOTS[name]()


def split_snapshots(cfg: Any, seed: int, data: Optional[Snapshots] = None) -> SnapshotSplit:
    """Build, split and normalise the snapshot data set of a ``DataConfig`` (see :func:`load_snapshots`);
    ``data``: the snapshots to use instead of building ``cfg.name`` (e.g. read from ``data.path``)."""
    full = _build(cfg, seed) if data is None else data
    if cfg.t0 is not None and cfg.t1 is not None and not float(cfg.t0) < float(cfg.t1):
        raise ValueError(f"data.t0 must be < data.t1, got [{_fmt(cfg.t0)}, {_fmt(cfg.t1)}]")
    span0, span1 = full.time_map()
    lo = span0 if cfg.t0 is None else float(cfg.t0)
    hi = span1 if cfg.t1 is None else float(cfg.t1)
    for k, tk in enumerate(full.times.tolist()):
        if not lo <= tk <= hi:
            given = ", ".join(key for key, v in (("data.t0", cfg.t0), ("data.t1", cfg.t1)) if v is not None)
            raise ValueError(f"snapshot {k} of {full.name} at t = {_fmt(tk)} is outside the data interval "
                             f"[{_fmt(lo)}, {_fmt(hi)}] ({given})")
    leave = getattr(cfg, "leave_out", None)
    if leave is not None:
        kk = len(full)
        if isinstance(leave, bool) or not isinstance(leave, (int, np.integer)) or not 1 <= leave <= kk - 2:
            times = ", ".join(_fmt(t) for t in full.times.tolist())
            allowed = f"an interior snapshot index in 1..{kk - 2}" if kk > 2 else "none (only interior snapshots can be held out)"
            raise ValueError(f"data.leave_out: {full.name} has K = {kk} snapshots at t = {times}; allowed: {allowed}; got {leave!r}")
        kept, test_time, test_cells = full.leave_out(int(leave))
        rows = _split_rows(kept, cfg.val_fraction, 0.0, seed)
    else:
        kept, test_time, test_cells = full, None, None
        rows = _split_rows(kept, cfg.val_fraction, cfg.test_fraction, seed)
    times = kept.times.tolist()
    train = kept.select([r[0] for r in rows])
    val_cells = [s[r[1]] for s, r in zip(kept.samples, rows)]
    test_parts = [test_cells] if test_cells is not None else [s[r[2]] for s, r in zip(kept.samples, rows)]
    test_times = [test_time] if test_time is not None else times
    identity = (torch.zeros(full.dim, dtype=torch.float64), torch.ones(full.dim, dtype=torch.float64))
    transform: Optional[Whitening] = None
    source = train.source
    if getattr(cfg, "whiten", False):
        train, transform = train.whiten()
        val_cells = [transform.apply(c) for c in val_cells]
        test_parts = [transform.apply(c) for c in test_parts]
        if test_cells is not None:
            test_cells = test_parts[0]
        source += ", whitened with the training cells' mean and covariance"
        normalizer = Normalizer(lo, hi, *identity)
    elif cfg.standardize:
        _, st = train.standardize()
        normalizer = Normalizer(lo, hi, st.shift, st.scale)
    else:
        normalizer = Normalizer(lo, hi, *identity)
    train = Snapshots._trusted(train.times, train.samples, train.name, source, (lo, hi))
    val = _points(times, val_cells, full.name, full.dim)
    test = _points(test_times, test_parts, full.name, full.dim)  # type: ignore[arg-type]
    return SnapshotSplit(full, train, val, test, test_time, test_cells, normalizer, transform)


def load_snapshots(cfg: Any, seed: int) -> tuple[Snapshots, Optional[float], Optional[Tensor], Normalizer]:
    """``(train_snapshots, test_time, test_cells, normalizer)`` for a snapshot ``DataConfig``.

    Exactly the data of :func:`~probflux.data.load_data` (same ``seed``, same split):

    * ``train_snapshots`` — the training cells of every kept snapshot (each snapshot ``k`` loses
      ``round(n_k * data.val_fraction)`` seeded random cells to validation, and, without
      ``data.leave_out``, ``round(n_k * data.test_fraction)`` to test); its :meth:`~Snapshots.time_map`
      is the normaliser's ``(t0, t1)``.
    * ``test_time`` (data units), ``test_cells: (n_k, D)`` — the held-out snapshot ``data.leave_out``
      (all its cells), or ``None, None`` without ``data.leave_out``.
    * ``normalizer`` — ``t0, t1`` are ``data.t0`` / ``data.t1`` or else the first/last time of the FULL
      data set (a held-out interior time maps inside ``[0, 1]``); ``shift/scale`` are the mean/std of
      the training cells (``data.standardize``), or the identity with ``data.whiten``, in which case
      every cell returned is in the whitened coordinates of the training cells.
    """
    s = split_snapshots(cfg, seed)
    return s.train, s.test_time, s.test_cells, s.normalizer
