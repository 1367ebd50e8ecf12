"""Pictures of a model: density snapshots with the velocity field, trajectories, GIFs, loss curves.

Every function builds a :class:`matplotlib.figure.Figure` directly (Agg canvas, no ``pyplot`` state), so
it works headless and from threads, and leaves the user's backend alone. Functions that take ``path``
save a PNG there (parent folders created) and return the figure.

Times are given in the model's coordinates (``s in [0, 1]``). With a
:class:`~probflux.normalize.Normalizer` the model still works in ``(s, z)`` but the pictures show
data coordinates ``(t, x)``: densities, velocities, axes, bounds, titles and observed ``data`` are all
in data units.

Shapes: ``D`` is the model's dimension. ``D == 2`` shows heat maps of ``rho_t`` on a grid; ``D == 1``
density curves; ``D > 2`` shows 2-D histograms of exact samples projected on their first two
principal components (fitted once on samples pooled over all times).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import matplotlib
import numpy as np
import torch
from matplotlib import animation, rcParams
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

from ._random import seeded
from .dynamics import Dynamics
from .normalize import Normalizer

__all__ = ["density_snapshots", "trajectories", "animate", "loss_curves", "snapshot_paths"]

PathLike = Union[str, "os.PathLike[str]"]
Bounds = Sequence[Sequence[float]]

DPI = 120
CHUNK = 8192
VELOCITY_KINDS = ("stream", "quiver")
TRAJECTORY_METHODS = {"ode": "euler", "sde": "euler_maruyama"}
#: keys of a metrics record that are bookkeeping, not curves (``step`` is the x axis).
NON_CURVE_KEYS = frozenset({"step", "epoch", "time", "wall_time", "elapsed", "elapsed_s", "seconds"})

_DENSITY_CMAP = "viridis"
_PATH_CMAP = "plasma"


# ---------------------------------------------------------------------------------------------- checks
def _check_times(times: Any) -> list[float]:
    if isinstance(times, Tensor):
        times = times.detach().reshape(-1).tolist()
    elif isinstance(times, numbers.Real) and not isinstance(times, bool):
        times = [times]
    elif isinstance(times, (str, bytes)):
        raise ValueError(f"times must be a sequence of numbers in the model's time interval [0, 1]; got {times!r}")
    try:
        out = [float(t) for t in times]
        ok = all(not isinstance(t, bool) for t in times)
    except (TypeError, ValueError):
        raise ValueError(f"times must be a sequence of numbers in the model's time interval [0, 1]; got {times!r}") from None
    if not ok or not out:
        raise ValueError(f"times must be a non-empty sequence of numbers in [0, 1]; got {times!r}")
    bad = [t for t in out if not (0.0 <= t <= 1.0)]
    if bad:
        raise ValueError(f"times must lie in the model's time interval [0, 1] (model coordinates); got {bad[0]!r}")
    return out


def _check_time(v: Any, name: str) -> float:
    if isinstance(v, Tensor) and v.dim() == 0:
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= float(v) <= 1.0):
        raise ValueError(f"{name} must be a number in the model's time interval [0, 1]; got {v!r}")
    return float(v)


def _check_int(v: Any, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return int(v)


def _check_bounds(bounds: Any, dim: int) -> Optional[np.ndarray]:
    """``None`` or a ``(2, 2)`` float array ``[[xmin, xmax], [ymin, ymax]]``; with ``dim == 1`` a
    single pair ``(xmin, xmax)`` is accepted too (then ``[[xmin, xmax], [nan, nan]]``)."""
    if bounds is None:
        return None
    msg = "bounds must be ((xmin, xmax), (ymin, ymax)) with finite numbers and min < max"
    try:
        b = np.asarray(bounds, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{msg}; got {bounds!r}") from None
    if dim == 1 and b.shape == (2,):
        b = np.stack([b, [np.nan, np.nan]])
        check = b[:1]
    elif b.shape == (2, 2):
        check = b
    else:
        raise ValueError(f"{msg}; got shape {b.shape}")
    if not np.isfinite(check).all() or not (check[:, 0] < check[:, 1]).all():
        raise ValueError(f"{msg}; got {bounds!r}")
    return b


def _check_velocity(velocity: Any) -> Optional[str]:
    if velocity is not None and velocity not in VELOCITY_KINDS:
        raise ValueError(f"velocity must be one of {VELOCITY_KINDS} or None; got {velocity!r}")
    return velocity


def _check_methods(methods: Any) -> list[str]:
    if isinstance(methods, str):
        methods = (methods,)
    try:
        out = list(methods)
    except TypeError:
        raise ValueError(f"methods must be a sequence drawn from {tuple(TRAJECTORY_METHODS)}; got {methods!r}") from None
    if not out:
        raise ValueError("methods must not be empty; use ('ode',), ('sde',) or both")
    for m in out:
        if m not in TRAJECTORY_METHODS:
            raise ValueError(f"methods entries must be one of {tuple(TRAJECTORY_METHODS)}; got {m!r}")
    return out


def _check_normalizer(normalizer: Any, dim: int) -> Optional[Normalizer]:
    if normalizer is None:
        return None
    if not isinstance(normalizer, Normalizer):
        raise TypeError(f"normalizer must be a probflux.normalize.Normalizer; got {type(normalizer).__name__}")
    if normalizer.dim != dim:
        raise ValueError(f"normalizer has dim={normalizer.dim} but the model has dim={dim}")
    return normalizer


def _check_data(data: Any, dim: int) -> Optional[tuple[Tensor, Tensor]]:
    if data is None:
        return None
    msg = f"data must be a pair (t, x) of tensors with shapes (N,) and (N, {dim})"
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{msg}; got {type(data).__name__}")
    try:
        t = torch.as_tensor(data[0], dtype=torch.float64).detach().cpu()
        x = torch.as_tensor(data[1], dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(msg) from None
    if x.dim() == 1 and dim == 1:
        x = x.unsqueeze(-1)
    if t.dim() != 1 or x.dim() != 2 or x.shape[1] != dim or x.shape[0] != t.shape[0]:
        raise ValueError(f"{msg}; got shapes {tuple(t.shape)} and {tuple(x.shape)}")
    return t, x


# ---------------------------------------------------------------------------------------------- model access
def _dim(model: Any) -> int:
    dim = getattr(model, "dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise TypeError(f"model must have an integer attribute dim >= 1 (a TimeDensity or Dynamics); got {type(model).__name__}")
    return dim


def _sampler(model: Any) -> Any:
    """The object with ``sample``: the model itself, or ``model.density`` for a :class:`Dynamics`."""
    if hasattr(model, "sample"):
        return model
    density = getattr(model, "density", None)
    if density is not None and hasattr(density, "sample"):
        return density
    raise TypeError(f"model must provide sample(t, n) (directly or through .density); got {type(model).__name__}")


def _dtype_device(model: Any) -> tuple[torch.dtype, torch.device]:
    try:
        p = next(iter(model.parameters()))
    except (AttributeError, StopIteration, TypeError):
        return torch.get_default_dtype(), torch.device("cpu")
    return p.dtype, p.device


def _call(fn: Any, t: Any, x: Tensor, context: Optional[Tensor]) -> Tensor:
    return fn(t, x) if context is None else fn(t, x, context)


def _log_prob(model: Any, t: Union[float, Tensor], z: Tensor, context: Optional[Tensor]) -> Tensor:
    """``log rho_t(z)`` in model coordinates, chunked, without gradients; float64 on the CPU."""
    out = []
    with torch.no_grad():
        for i in range(0, z.shape[0], CHUNK):
            tt = t[i : i + CHUNK] if isinstance(t, Tensor) and t.dim() == 1 else t
            out.append(_call(model.log_prob, tt, z[i : i + CHUNK], context).detach().to("cpu", torch.float64))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _velocity(model: Any, t: float, z: Tensor, context: Optional[Tensor]) -> Tensor:
    """``u_t(z)`` in model coordinates, chunked, without a graph to the parameters (fields that need
    autograd in ``x`` enable it themselves)."""
    out = []
    with torch.no_grad():
        for i in range(0, z.shape[0], CHUNK):
            out.append(_call(model.velocity, t, z[i : i + CHUNK], context).detach().to("cpu", torch.float64))
    return torch.cat(out) if out else torch.zeros(0, z.shape[1], dtype=torch.float64)


def _sample(model: Any, t: float, n: int, context: Optional[Tensor]) -> Tensor:
    with torch.no_grad():
        x = _sampler(model).sample(t, n) if context is None else _sampler(model).sample(t, n, context)
    return x.detach()


def _has_diffusion(model: Any, t0: float, t1: float, steps: int, dtype: torch.dtype, device: torch.device) -> bool:
    if not isinstance(model, Dynamics):
        return False
    ts = torch.linspace(min(t0, t1), max(t0, t1), steps + 1, dtype=dtype, device=device)
    return bool((model.diffusion(ts) != 0).any())


class _Coords:
    """Model ↔ shown (data) coordinates; the identity without a normalizer."""

    def __init__(self, normalizer: Optional[Normalizer], dtype: torch.dtype, device: torch.device) -> None:
        self.n = normalizer
        self.dtype, self.device = dtype, device

    def x_to_model(self, x: Tensor) -> Tensor:
        x = x.to(torch.float64)
        z = x if self.n is None else self.n.x_to_model(x)
        return z.to(device=self.device, dtype=self.dtype)

    def x_to_data(self, z: Tensor) -> Tensor:
        z = z.detach().to("cpu", torch.float64)
        return z if self.n is None else self.n.x_to_data(z)

    def logp(self, lp: Tensor) -> Tensor:
        return lp if self.n is None else self.n.log_prob_to_data(lp)

    def vel(self, u: Tensor) -> Tensor:
        return u if self.n is None else self.n.velocity_to_data(u)

    def t_data(self, s: float) -> float:
        return float(s) if self.n is None else float(self.n.t_to_data(float(s)))

    def t_model(self, t: Tensor) -> Tensor:
        return t if self.n is None else self.n.t_to_model(t)


class _PCA:
    """Projection on the first two principal components (fitted once, via ``torch.linalg.svd``)."""

    def __init__(self, x: Tensor) -> None:
        x = x.to(torch.float64)
        self.mean = x.mean(0)
        _, svals, vh = torch.linalg.svd(x - self.mean, full_matrices=False)
        v = vh[:2].T.clone()  # (D, 2)
        # deterministic signs: the largest loading of each component is positive
        lead = v[v.abs().argmax(0), torch.arange(v.shape[1])]
        v = v * torch.where(lead < 0, -1.0, 1.0).to(v.dtype)
        self.v = v
        var = svals**2
        self.explained = (var[:2] / var.sum().clamp_min(1e-300)).tolist()

    def points(self, x: Tensor) -> Tensor:
        return (x.to(torch.float64) - self.mean) @ self.v

    def vectors(self, u: Tensor) -> Tensor:
        return u.to(torch.float64) @ self.v

    def labels(self) -> tuple[str, str]:
        return tuple(f"PC{i + 1} ({100 * e:.0f}%)" for i, e in enumerate(self.explained))  # type: ignore[return-value]


def _auto_bounds(points: np.ndarray) -> np.ndarray:
    """0.1%/99.9% quantiles per column of ``points: (N, 2)``, padded by 10% of the range."""
    points = points[np.isfinite(points).all(1)]
    if points.shape[0] == 0:
        return np.array([[-1.0, 1.0], [-1.0, 1.0]])
    lo, hi = np.quantile(points, 0.001, axis=0), np.quantile(points, 0.999, axis=0)
    width = hi - lo
    pad = np.where(width > 0, 0.1 * width, np.maximum(1.0, np.abs(lo) * 0.1))
    return np.stack([lo - pad, hi + pad], axis=1)


# ---------------------------------------------------------------------------------------------- figure helpers
def _figure(n: int, ncols: int, panel: tuple[float, float] = (3.4, 3.1)) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(n, ncols))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _save(fig: Figure, path: Optional[PathLike]) -> None:
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=DPI, format=p.suffix[1:].lower() or "png")


def _grid(bounds: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, Tensor]:
    xs = np.linspace(bounds[0, 0], bounds[0, 1], n)
    ys = np.linspace(bounds[1, 0], bounds[1, 1], n)
    xx, yy = np.meshgrid(xs, ys)  # (n, n): rows are y
    pts = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))
    return xs, ys, pts


def _density_grid(model: Any, s: float, bounds: np.ndarray, n: int, coords: _Coords,
                  context: Optional[Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rho`` in data coordinates on an ``n x n`` grid over ``bounds`` (rows = y)."""
    xs, ys, pts = _grid(bounds, n)
    rho = coords.logp(_log_prob(model, s, coords.x_to_model(pts), context)).exp().numpy().reshape(n, n)
    return xs, ys, np.nan_to_num(rho, nan=0.0, posinf=0.0)


def _heat(ax: Axes, img: np.ndarray, bounds: np.ndarray, cmap: str = _DENSITY_CMAP, **kw: Any) -> Any:
    vmax = float(img.max()) if img.size and img.max() > 0 else 1.0
    return ax.imshow(img, origin="lower", extent=(bounds[0, 0], bounds[0, 1], bounds[1, 0], bounds[1, 1]), aspect="auto",
                     cmap=cmap, vmin=0.0, vmax=vmax, interpolation="bilinear", **kw)


def _field_2d(ax: Axes, model: Any, s: float, bounds: np.ndarray, kind: str, coords: _Coords, context: Optional[Tensor]) -> None:
    """Streamlines or arrows of the data-coordinate velocity; hidden where ``rho < 1e-3 max rho``."""
    n = 36 if kind == "stream" else 18
    xs, ys, pts = _grid(bounds, n)
    z = coords.x_to_model(pts)
    rho = coords.logp(_log_prob(model, s, z, context)).exp().numpy().reshape(n, n)
    u = coords.vel(_velocity(model, s, z, context)).numpy()
    U, V = u[:, 0].reshape(n, n).copy(), u[:, 1].reshape(n, n).copy()
    rho = np.nan_to_num(rho, nan=0.0)
    rmax = rho.max() if rho.max() > 0 else 1.0
    low = (rho < 1e-3 * rmax) | ~np.isfinite(U) | ~np.isfinite(V)
    if low.all():
        return
    U[low], V[low] = np.nan, np.nan
    if kind == "stream":
        lw = 0.4 + 1.2 * np.sqrt(rho / rmax)
        ax.streamplot(xs, ys, U, V, color="white", linewidth=lw, density=1.1, arrowsize=0.8, broken_streamlines=True)
    else:
        xx, yy = np.meshgrid(xs, ys)
        keep = ~low
        ax.quiver(xx[keep], yy[keep], U[keep], V[keep], color="white", angles="xy", width=0.004, alpha=0.9)


def _data_windows(times: list[float]) -> list[tuple[float, float]]:
    """For each snapshot time ``s_k`` the window ``s_k ± half the spacing to its neighbours``."""
    order = sorted(set(times))
    out = []
    for s in times:
        i = order.index(s)
        left = (s - order[i - 1]) / 2 if i > 0 else None
        right = (order[i + 1] - s) / 2 if i + 1 < len(order) else None
        if left is None and right is None:
            out.append((-math.inf, math.inf))
            continue
        left = right if left is None else left
        right = left if right is None else right
        out.append((s - left, s + right))  # type: ignore[operator]
    return out


def _overlay_data(ax: Axes, pts: np.ndarray, one_d: bool = False) -> None:
    if pts.shape[0] == 0:
        return
    if pts.shape[0] > 3000:
        pts = pts[np.random.default_rng(0).choice(pts.shape[0], 3000, replace=False)]
    if one_d:
        ax.plot(pts[:, 0], np.zeros(pts.shape[0]), "|", color="tab:red", ms=8, alpha=0.6, label="data")
    else:
        ax.scatter(pts[:, 0], pts[:, 1], s=7, c="#ff2a2a", alpha=0.8, edgecolors="k", linewidths=0.25, label="data", zorder=3)


# ---------------------------------------------------------------------------------------------- 1. snapshots
def density_snapshots(
    model: Any,
    times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    *,
    path: Optional[PathLike] = None,
    bounds: Optional[Bounds] = None,
    grid: int = 160,
    velocity: Optional[str] = "stream",
    data: Optional[tuple[Tensor, Tensor]] = None,
    context: Optional[Tensor] = None,
    normalizer: Optional[Normalizer] = None,
    title: Optional[str] = None,
    seed: int = 0,
) -> Figure:
    """One panel per time: ``rho_t`` with its probability-flow velocity ``u_t``.

    Args:
        model: a :class:`~probflux.TimeDensity` or :class:`~probflux.Dynamics` (``log_prob``, ``velocity``,
            ``dim`` and ``sample`` directly or through ``.density``).
        times: snapshot times in model coordinates, each in ``[0, 1]``.
        path: save a PNG here. bounds: ``((xmin, xmax), (ymin, ymax))`` in the shown coordinates (data
            coordinates with a normalizer, principal-component coordinates for ``D > 2``; for ``D == 1``
            ``(xmin, xmax)`` or ``((xmin, xmax), (ymin, ymax))`` with y the density). Default: the
            0.1%/99.9% quantiles of samples pooled over ``times``, padded by 10%.
        grid: heat-map resolution (``grid x grid`` points, ``D == 2``; bins per axis for ``D > 2``).
        velocity: ``"stream"`` (streamlines), ``"quiver"`` (arrows) or ``None``; for ``D > 2`` both draw
            the projected velocity as arrows at 150 samples.
        data: observed ``(t: (N,), x: (N, D))`` in data coordinates; points whose time is within half the
            spacing to the neighbouring snapshot times are drawn as red dots.
        context: ``(C,)`` conditioning vector for models with ``context_dim > 0``.
        normalizer: show data coordinates of a model trained on normalised ``(s, z)``.
        title: figure title. seed: seed for the samples (the caller's RNG state is kept).

    Returns:
        the figure, with ``len(times)`` axes.
    """
    dim = _dim(model)
    times_l = _check_times(times)
    velocity = _check_velocity(velocity)
    b = _check_bounds(bounds, dim)
    grid = _check_int(grid, "grid", 2)
    normalizer = _check_normalizer(normalizer, dim)
    obs = _check_data(data, dim)
    dtype, device = _dtype_device(model)
    coords = _Coords(normalizer, dtype, device)
    fig, axes = _figure(len(times_l), ncols=5)

    obs_s = obs_x = None
    windows = _data_windows(times_l)
    if obs is not None:
        obs_s, obs_x = coords.t_model(obs[0]).numpy(), obs[1]

    with seeded(seed, device):
        if dim == 2:
            if b is None:
                pooled = torch.cat([coords.x_to_data(_sample(model, s, 2000, context)) for s in times_l])
                b = _auto_bounds(pooled.numpy())
            for ax, s, (lo, hi) in zip(axes, times_l, windows):
                _, _, rho = _density_grid(model, s, b, grid, coords, context)
                _heat(ax, rho, b)
                if velocity is not None:
                    _field_2d(ax, model, s, b, velocity, coords, context)
                if obs_s is not None:
                    sel = (obs_s >= lo) & (obs_s <= hi)
                    _overlay_data(ax, obs_x.numpy()[sel])
                ax.set_xlim(*b[0])
                ax.set_ylim(*b[1])
                ax.set_xlabel("x1")
                ax.set_ylabel("x2")
                ax.set_title(f"t = {coords.t_data(s):.3g}")
        elif dim == 1:
            if b is None or not np.isfinite(b[0]).all():
                pooled = torch.cat([coords.x_to_data(_sample(model, s, 2000, context)) for s in times_l]).numpy()
                xb = _auto_bounds(np.concatenate([pooled, pooled], 1))[0]
                b = np.stack([xb, [np.nan, np.nan]]) if b is None else np.stack([xb, b[1]])
            xs = np.linspace(b[0, 0], b[0, 1], max(grid, 200))
            xt = torch.from_numpy(xs).unsqueeze(-1)
            for ax, s, (lo, hi) in zip(axes, times_l, windows):
                z = coords.x_to_model(xt)
                rho = np.nan_to_num(coords.logp(_log_prob(model, s, z, context)).exp().numpy())
                ax.fill_between(xs, rho, color="tab:blue", alpha=0.3)
                ax.plot(xs, rho, color="tab:blue", lw=1.5)
                if velocity is not None:
                    xv = torch.from_numpy(np.linspace(b[0, 0], b[0, 1], 17)[1:-1]).unsqueeze(-1)
                    zv = coords.x_to_model(xv)
                    u = coords.vel(_velocity(model, s, zv, context)).numpy()[:, 0]
                    rv = coords.logp(_log_prob(model, s, zv, context)).exp().numpy()
                    keep = (rv > 1e-3 * max(rho.max(), 1e-300)) & np.isfinite(u)
                    if keep.any():
                        ax.quiver(xv.numpy()[keep, 0], np.zeros(int(keep.sum())), u[keep], np.zeros(int(keep.sum())),
                                  color="k", angles="xy", width=0.006, alpha=0.7)
                if obs_s is not None:
                    sel = (obs_s >= lo) & (obs_s <= hi)
                    _overlay_data(ax, obs_x.numpy()[sel], one_d=True)
                ax.set_xlim(*b[0])
                if np.isfinite(b[1]).all():
                    ax.set_ylim(*b[1])
                else:
                    ax.set_ylim(bottom=-0.03 * max(float(rho.max()), 1e-12))
                ax.set_xlabel("x")
                ax.set_ylabel("density")
                ax.set_title(f"t = {coords.t_data(s):.3g}")
        else:
            n = 4000
            samples = [_sample(model, s, n, context) for s in times_l]  # model coordinates
            shown = [coords.x_to_data(z) for z in samples]
            pca = _PCA(torch.cat(shown))
            proj = [pca.points(x).numpy() for x in shown]
            if b is None:
                b = _auto_bounds(np.concatenate(proj))
            bins = min(grid, 80)
            m = 150
            for ax, s, z, p, (lo, hi) in zip(axes, times_l, samples, proj, windows):
                h, _, _ = np.histogram2d(p[:, 0], p[:, 1], bins=bins, range=b)
                _heat(ax, h.T, b)
                if velocity is not None:
                    u = pca.vectors(coords.vel(_velocity(model, s, z[:m], context))).numpy()
                    ok = np.isfinite(u).all(1)
                    ax.quiver(p[:m][ok, 0], p[:m][ok, 1], u[ok, 0], u[ok, 1], color="white", angles="xy", width=0.004, alpha=0.9)
                if obs_s is not None:
                    sel = (obs_s >= lo) & (obs_s <= hi)
                    _overlay_data(ax, pca.points(obs_x[torch.from_numpy(sel)]).numpy())
                ax.set_xlim(*b[0])
                ax.set_ylim(*b[1])
                ax.set_xlabel(pca.labels()[0])
                ax.set_ylabel(pca.labels()[1])
                ax.set_title(f"t = {coords.t_data(s):.3g}")
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------- 2. trajectories
def trajectories(
    dynamics: Any,
    *,
    n: int = 200,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    methods: Sequence[str] = ("ode", "sde"),
    path: Optional[PathLike] = None,
    bounds: Optional[Bounds] = None,
    normalizer: Optional[Normalizer] = None,
    seed: int = 0,
    context: Optional[Tensor] = None,
) -> Figure:
    """Simulated paths from ``x0 ~ rho_{t0}``: one panel per method, paths coloured by time.

    ``"ode"`` integrates the probability-flow ODE ``dx = u dt`` (Euler), ``"sde"`` the SDE
    ``dX = b dt + g dW`` (Euler–Maruyama; with ``g = 0`` it coincides with the ODE and the title says so).
    Background: ``rho_{t1}`` (``D == 2``), a histogram of its projected samples (``D > 2``), or for
    ``D == 1`` the density over ``(t, x)`` with time on the horizontal axis.

    Args:
        dynamics: a :class:`~probflux.Dynamics` or :class:`~probflux.TimeDensity` (``g = 0``).
        n: number of paths. steps: integration steps. t0, t1: model times in ``[0, 1]``.
        methods: entries from ``("ode", "sde")``. path: save a PNG here.
        bounds: ``((xmin, xmax), (ymin, ymax))`` in the shown coordinates (``D == 1``: ``((t, t), (x, x))``).
        normalizer: show data coordinates. seed: seed for ``x0`` and the noise. context: ``(C,)``.

    Returns:
        the figure: ``len(methods)`` panels plus a time colour bar. Paths are ``(steps+1, n, D)``.
    """
    from .simulate import simulate

    dim = _dim(dynamics)
    n = _check_int(n, "n")
    steps = _check_int(steps, "steps")
    t0, t1 = _check_time(t0, "t0"), _check_time(t1, "t1")
    methods_l = _check_methods(methods)
    b = _check_bounds(bounds, dim if dim != 1 else 2)
    normalizer = _check_normalizer(normalizer, dim)
    dtype, device = _dtype_device(dynamics)
    coords = _Coords(normalizer, dtype, device)
    noisy = _has_diffusion(dynamics, t0, t1, steps, dtype, device)

    with seeded(seed, device):
        x0 = _sample(dynamics, t0, n, context)
        paths = {}
        for m in methods_l:
            if m not in paths:
                raw = simulate(dynamics, x0, t0, t1, steps, method=TRAJECTORY_METHODS[m], context=context)
                paths[m] = coords.x_to_data(raw.reshape(-1, dim)).reshape(steps + 1, n, dim)
        ts_data = np.array([coords.t_data(s) for s in np.linspace(t0, t1, steps + 1)])

        pca = None
        if dim == 1:
            shown = {m: np.stack([np.broadcast_to(ts_data[:, None], p.shape[:2]), p[..., 0].numpy()], -1) for m, p in paths.items()}
        elif dim == 2:
            shown = {m: p.numpy() for m, p in paths.items()}
        else:
            pca = _PCA(torch.cat([p.reshape(-1, dim) for p in paths.values()]))
            shown = {m: pca.points(p.reshape(-1, dim)).reshape(steps + 1, n, 2).numpy() for m, p in paths.items()}
        if b is None:
            pts = np.concatenate([v.reshape(-1, 2) for v in shown.values()])
            b = _auto_bounds(pts)
            if dim == 1:
                b[0] = [min(ts_data[0], ts_data[-1]), max(ts_data[0], ts_data[-1])] if t0 != t1 else b[0]

        # background
        if dim == 2:
            _, _, bg = _density_grid(dynamics, t1, b, 120, coords, context)
        elif dim == 1:
            nt, nx = 100, 120
            s_grid = np.linspace(t0, t1, nt) if t0 != t1 else np.full(nt, t0)
            tb = np.array([coords.t_data(s) for s in s_grid])
            order = np.argsort(tb)
            xs = np.linspace(b[1, 0], b[1, 1], nx)
            ss = torch.from_numpy(np.repeat(s_grid[order], nx)).to(device=device, dtype=dtype)
            z = coords.x_to_model(torch.from_numpy(np.tile(xs, nt)).unsqueeze(-1))
            bg = np.nan_to_num(coords.logp(_log_prob(dynamics, ss, z, context)).exp().numpy()).reshape(nt, nx).T
            bg_extent = np.array([[tb.min(), tb.max() if tb.max() > tb.min() else tb.min() + 1e-9], b[1]])
        else:
            zs = _sample(dynamics, t1, 4000, context)
            pz = pca.points(coords.x_to_data(zs)).numpy()  # type: ignore[union-attr]
            h, _, _ = np.histogram2d(pz[:, 0], pz[:, 1], bins=80, range=b)
            bg = h.T

    fig, axes = _figure(len(methods_l), ncols=len(methods_l), panel=(4.2, 3.8))
    norm = Normalize(vmin=min(ts_data[0], ts_data[-1]), vmax=max(ts_data[0], ts_data[-1]) + (1e-12 if t0 == t1 else 0.0))
    for ax, m in zip(axes, methods_l):
        if dim == 1:
            _heat(ax, bg, bg_extent, cmap="Greys", alpha=0.8)
        else:
            _heat(ax, bg, b, cmap="Greys", alpha=0.8)
        v = shown[m]  # (S+1, n, 2)
        segs = np.stack([v[:-1], v[1:]], axis=2).transpose(1, 0, 2, 3).reshape(-1, 2, 2)  # (n*S, 2, 2)
        colours = np.tile(ts_data[:-1], n)
        ok = np.isfinite(segs).all((1, 2))
        lc = LineCollection(segs[ok], cmap=_PATH_CMAP, norm=norm, linewidths=0.6, alpha=0.75)
        lc.set_array(colours[ok])
        ax.add_collection(lc)
        ax.scatter(v[0, :, 0], v[0, :, 1], s=6, c="k", linewidths=0, label=f"start (t={ts_data[0]:.3g})", zorder=3)
        ax.scatter(v[-1, :, 0], v[-1, :, 1], s=8, c="tab:red", linewidths=0, label=f"end (t={ts_data[-1]:.3g})", zorder=3)
        ax.set_xlim(*b[0])
        ax.set_ylim(*b[1])
        if dim == 1:
            ax.set_xlabel("t")
            ax.set_ylabel("x")
        elif dim == 2:
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
        else:
            ax.set_xlabel(pca.labels()[0])  # type: ignore[union-attr]
            ax.set_ylabel(pca.labels()[1])  # type: ignore[union-attr]
        if m == "ode":
            ax.set_title("ODE: probability flow (Euler)")
        elif noisy:
            ax.set_title("SDE: Euler–Maruyama")
        else:
            ax.set_title("SDE: g = 0, identical to the ODE")
        ax.legend(loc="upper right", fontsize=7, markerscale=2, framealpha=0.7)
    fig.colorbar(ScalarMappable(norm=norm, cmap=_PATH_CMAP), ax=axes, label="t", shrink=0.9)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------- 3. animation
def animate(
    model: Any,
    path: PathLike,
    *,
    frames: int = 30,
    n_particles: int = 300,
    fps: float = 10,
    bounds: Optional[Bounds] = None,
    normalizer: Optional[Normalizer] = None,
    seed: int = 0,
    context: Optional[Tensor] = None,
) -> Path:
    """GIF of ``rho_t`` for ``t`` from 0 to 1 with particles transported by the dynamics.

    Particles start at ``rho_0`` samples and follow the SDE (Euler–Maruyama) when ``model`` is a
    :class:`~probflux.Dynamics` with nonzero diffusion, else the probability-flow ODE (Euler), with
    ``frames - 1`` steps. Background: density heat map (``D == 2``, 80 x 80 grid), density curve
    (``D == 1``) or histogram of 2000 projected samples per frame (``D > 2``).

    Args:
        model: :class:`~probflux.TimeDensity` or :class:`~probflux.Dynamics`. path: output ``.gif``.
        frames: number of frames (>= 2). n_particles: particles drawn. fps: frames per second.
        bounds: ``((xmin, xmax), (ymin, ymax))`` in the shown coordinates. normalizer: show data coordinates.
        seed: seed for particles and samples. context: ``(C,)``.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    from .simulate import simulate

    dim = _dim(model)
    p = Path(path)
    if p.suffix.lower() != ".gif":
        raise ValueError(f"path must end in .gif; got {str(path)!r}")
    frames = _check_int(frames, "frames", 2)
    n_particles = _check_int(n_particles, "n_particles")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (0 < float(fps) < math.inf):
        raise ValueError(f"fps must be a positive number; got {fps!r}")
    b = _check_bounds(bounds, dim)
    normalizer = _check_normalizer(normalizer, dim)
    dtype, device = _dtype_device(model)
    coords = _Coords(normalizer, dtype, device)
    method = "euler_maruyama" if _has_diffusion(model, 0.0, 1.0, frames - 1, dtype, device) else "euler"
    s_frames = np.linspace(0.0, 1.0, frames)

    with seeded(seed, device):
        x0 = _sample(model, 0.0, n_particles, context)
        raw = simulate(model, x0, 0.0, 1.0, frames - 1, method=method, context=context)
        parts = coords.x_to_data(raw.reshape(-1, dim)).reshape(frames, n_particles, dim)
        pca = None
        if dim == 2:
            shown = parts.numpy()
            if b is None:
                b = _auto_bounds(shown.reshape(-1, 2))
            gn = 80
            backs = [_density_grid(model, float(s), b, gn, coords, context)[2] for s in s_frames]
        elif dim == 1:
            if b is None or not np.isfinite(b[0]).all():
                flat = parts.reshape(-1, 1).numpy()
                xb = _auto_bounds(np.concatenate([flat, flat], 1))[0]
                b = np.stack([xb, [np.nan, np.nan]]) if b is None else np.stack([xb, b[1]])
            xs = np.linspace(b[0, 0], b[0, 1], 200)
            z = coords.x_to_model(torch.from_numpy(xs).unsqueeze(-1))
            backs = [np.nan_to_num(coords.logp(_log_prob(model, float(s), z, context)).exp().numpy()) for s in s_frames]
            top = max(float(r.max()) for r in backs) * 1.1 or 1.0
            if not np.isfinite(b[1]).all():
                b[1] = [-0.05 * top, top]
            jitter = np.random.default_rng(seed).uniform(0.0, 0.05 * top, n_particles)
            shown = np.stack([parts[..., 0].numpy(), np.broadcast_to(jitter, (frames, n_particles))], -1)
        else:
            samples = [coords.x_to_data(_sample(model, float(s), 2000, context)) for s in s_frames]
            pca = _PCA(torch.cat(samples))
            proj = [pca.points(x).numpy() for x in samples]
            shown = pca.points(parts.reshape(-1, dim)).reshape(frames, n_particles, 2).numpy()
            if b is None:
                b = _auto_bounds(np.concatenate(proj))
            backs = [np.histogram2d(q[:, 0], q[:, 1], bins=60, range=b)[0].T for q in proj]

    fig, (ax,) = _figure(1, 1, panel=(4.6, 4.0))
    if dim == 1:
        (line,) = ax.plot(xs, backs[0], color="tab:blue", lw=1.5)
        artist = line
        ax.set_xlabel("x")
        ax.set_ylabel("density")
    else:
        artist = _heat(ax, backs[0], b)
        if dim == 2:
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
        else:
            ax.set_xlabel(pca.labels()[0])  # type: ignore[union-attr]
            ax.set_ylabel(pca.labels()[1])  # type: ignore[union-attr]
    dots = ax.scatter(shown[0, :, 0], shown[0, :, 1], s=5, c="tab:red" if dim == 1 else "white", edgecolors="none", alpha=0.9)
    ax.set_xlim(*b[0])
    ax.set_ylim(*b[1])
    label = "SDE particles" if method == "euler_maruyama" else "ODE particles"
    head = ax.set_title("")

    def update(k: int) -> tuple[Any, ...]:
        if dim == 1:
            artist.set_ydata(backs[k])
        else:
            artist.set_data(backs[k])
            artist.set_clim(0.0, float(backs[k].max()) if backs[k].max() > 0 else 1.0)
        dots.set_offsets(shown[k])
        head.set_text(f"t = {coords.t_data(float(s_frames[k])):.3g}   ({label})")
        return artist, dots, head

    update(0)
    anim = animation.FuncAnimation(fig, update, frames=frames, interval=1000.0 / float(fps), blit=False, repeat=True)
    p.parent.mkdir(parents=True, exist_ok=True)
    anim.save(str(p), writer=animation.PillowWriter(fps=float(fps)), dpi=80)
    return p


# ---------------------------------------------------------------------------------------------- 4. losses
def snapshot_paths(
    dynamics: Any,
    times: Sequence[float],
    cells: Sequence[Tensor],
    *,
    heldout: Optional[tuple[float, Tensor]] = None,
    n: int = 150,
    steps: int = 100,
    path: Optional[PathLike] = None,
    normalizer: Optional[Normalizer] = None,
    seed: int = 0,
    title: Optional[str] = None,
) -> Figure:
    """Population snapshots with trajectories of the learned dynamics through them (docs/populations.md).

    Left: the observed cells of every snapshot (``times: (K,)`` data units, ``cells[k]: (n_k, D)`` data
    coordinates), coloured by time, with ``n`` cells of the first snapshot carried through all times by the
    probability-flow ODE (the SDE when the dynamics has diffusion). Right (with ``heldout = (t, cells)``):
    held-out cells against exact samples of ``rho_t`` and the transported cells of the previous snapshot.
    For ``D > 2`` everything is projected on the first two principal components of the pooled cells.
    """
    if len(times) != len(cells) or len(times) < 1:
        raise ValueError(f"times and cells must have the same non-zero length; got {len(times)} and {len(cells)}")
    dim = _dim(dynamics)
    for k, c in enumerate(cells):
        if c.dim() != 2 or c.shape[1] != dim:
            raise ValueError(f"cells[{k}] must have shape (n, {dim}); got {tuple(c.shape)}")
    n = _check_int(n, "n")
    steps = _check_int(steps, "steps")
    dtype, device = _dtype_device(dynamics)
    coords = _Coords(_check_normalizer(normalizer, dim), dtype, device)
    pooled = torch.cat([c.to(torch.float64) for c in cells])
    pca = _PCA(pooled) if dim > 2 else None
    show = (lambda x: pca.points(x)) if pca is not None else (lambda x: x.to(torch.float64))
    order = sorted(range(len(times)), key=lambda k: float(times[k]))
    ts = [float(times[k]) for k in order]
    s = [float(coords.t_model(torch.tensor(t, dtype=torch.float64))) for t in ts]
    ncols = 2 if heldout is not None else 1
    fig, axes = _figure(ncols, ncols, panel=(4.6, 4.2))
    cmap = matplotlib.colormaps["viridis"]
    tmin, tmax = ts[0], ts[-1] if ts[-1] > ts[0] else ts[0] + 1.0
    colour = lambda t: cmap((t - tmin) / (tmax - tmin))
    ax = axes[0]
    for k, t in zip(order, ts):
        pts = show(cells[k]).numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.25, color=colour(t), rasterized=True, label=f"t = {t:g} ({len(pts)})")
    g = torch.Generator().manual_seed(seed)
    start = cells[order[0]][torch.randperm(len(cells[order[0]]), generator=g)[:n]]
    z = coords.x_to_model(start)
    method = "euler_maruyama" if _has_diffusion(dynamics, s[0], s[-1], steps, dtype, device) else "euler"
    from .simulate import simulate

    with seeded(seed, device), torch.no_grad():
        paths = simulate(dynamics, z, s[0], s[-1], steps=steps, method=method)
    shown = torch.stack([show(coords.x_to_data(p)) for p in paths]).numpy()  # (steps+1, n, 2)
    tt = np.linspace(tmin, ts[-1], steps + 1)
    for i in range(shown.shape[1]):
        ax.plot(shown[:, i, 0], shown[:, i, 1], color="k", lw=0.4, alpha=0.35)
    ax.scatter(shown[-1, :, 0], shown[-1, :, 1], s=6, color="k", marker="x", lw=0.6, label=f"transported to t = {tt[-1]:g}")
    ax.legend(fontsize=7, markerscale=3, loc="best")
    ax.set_title(title or f"snapshots and {'SDE' if method == 'euler_maruyama' else 'ODE'} paths")
    if heldout is not None:
        t_h, held = float(heldout[0]), heldout[1]
        s_h = float(coords.t_model(torch.tensor(t_h, dtype=torch.float64)))
        earlier = [k for k, t in zip(order, ts) if t < t_h]
        ax2 = axes[1]
        hp = show(held).numpy()
        ax2.scatter(hp[:, 0], hp[:, 1], s=3, alpha=0.3, color="tab:red", rasterized=True, label=f"held-out cells, t = {t_h:g}")
        with seeded(seed, device), torch.no_grad():
            direct = coords.x_to_data(_sample(dynamics, s_h, min(len(held), 2000), None))
        dp = show(direct).numpy()
        ax2.scatter(dp[:, 0], dp[:, 1], s=3, alpha=0.3, color="tab:blue", rasterized=True, label="samples of rho_t (exact)")
        if earlier:
            k = earlier[-1]
            prev = cells[k][torch.randperm(len(cells[k]), generator=g)[:min(len(cells[k]), 1000)]]
            s_prev = float(coords.t_model(torch.tensor(float(times[k]), dtype=torch.float64)))
            with seeded(seed, device), torch.no_grad():
                moved = simulate(dynamics, coords.x_to_model(prev), s_prev, s_h, steps=steps, method=method)[-1]
            mp = show(coords.x_to_data(moved)).numpy()
            ax2.scatter(mp[:, 0], mp[:, 1], s=3, alpha=0.3, color="tab:green", rasterized=True,
                        label=f"cells of t = {float(times[k]):g} transported")
        ax2.legend(fontsize=7, markerscale=3, loc="best")
        ax2.set_title(f"held-out time t = {t_h:g}")
    for a in axes:
        if pca is not None:
            a.set_xlabel(pca.labels()[0]), a.set_ylabel(pca.labels()[1])
        else:
            a.set_xlabel("x1"), a.set_ylabel("x2")
    _save(fig, path)
    return fig


def _read_records(records: Any) -> list[Mapping[str, Any]]:
    if isinstance(records, (str, os.PathLike)):
        with open(records) as f:
            records = [json.loads(line) for line in f if line.strip()]
    try:
        out = list(records)
    except TypeError:
        raise ValueError(f"records must be a list of dicts (or a path to a metrics.jsonl); got {type(records).__name__}") from None
    if not out:
        raise ValueError("records is empty: nothing to plot")
    for i, r in enumerate(out):
        if not isinstance(r, Mapping):
            raise ValueError(f"records[{i}] must be a dict; got {type(r).__name__}")
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def loss_curves(records: Union[Iterable[Mapping[str, Any]], PathLike], path: Optional[PathLike] = None, *,
                title: Optional[str] = None) -> Figure:
    """Training curves: one line per numeric key against ``step`` on one axes.

    Args:
        records: list of dicts as in a ``metrics.jsonl`` (``{"step": 10, "loss": ..., "val_nll": ...}``),
            or the path of such a file. Keys in :data:`NON_CURVE_KEYS` (``step``, ``epoch``, ``time``, ...)
            are not curves; records without ``step`` use their index. ``val_<name>`` is drawn dashed in
            the colour of ``<name>``. Non-finite values are skipped.
        path: save a PNG here. title: axes title.

    Returns:
        the figure (one axes; log-scaled y when every plotted value is positive).
    """
    recs = _read_records(records)
    has_step = any(_is_number(r.get("step")) for r in recs)
    keys: list[str] = []
    for r in recs:
        for k, v in r.items():
            if k not in NON_CURVE_KEYS and k not in keys and _is_number(v):
                keys.append(k)
    if not keys:
        raise ValueError("records has no numeric keys besides step/epoch/time to plot")

    fig, (ax,) = _figure(1, 1, panel=(6.0, 4.0))
    colours: dict[str, Any] = {}
    palette = [c["color"] for c in rcParams["axes.prop_cycle"]] or ["C0"]
    base_of = {k: (k[4:] if k.startswith("val_") else k) for k in keys}
    for k in keys:
        colours.setdefault(base_of[k], palette[len(colours) % len(palette)])
    all_vals = []
    for k in keys:
        xs, ys = [], []
        for i, r in enumerate(recs):
            v = r.get(k)
            if not _is_number(v) or not math.isfinite(float(v)):
                continue
            x = r.get("step") if has_step else i
            if not _is_number(x):
                continue
            xs.append(float(x))
            ys.append(float(v))
        if not ys:
            continue
        all_vals.extend(ys)
        val = k.startswith("val_")
        sparse = len(ys) < 30
        ax.plot(xs, ys, color=colours[base_of[k]], ls="--" if val else "-", lw=1.4,
                marker=("o" if val else ".") if sparse else None, ms=4, label=k)
    if all_vals and min(all_vals) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step" if has_step else "record")
    ax.set_ylabel("value")
    ax.grid(True, alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)
    return fig
