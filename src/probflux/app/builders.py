"""From config sections to library objects: the model, the objective and the data splits.

:func:`build_dynamics` and :func:`build_objective` turn ``model`` / ``objective`` sections into a
:class:`~probflux.Dynamics` and an objective; :func:`load_data` turns a ``data`` section into
``(train, val, test, normalizer)`` by the kind the data set is registered with in
:mod:`probflux.data.registry` (points, population snapshots or events; for ``data.name: file`` the kind of the
file at ``data.path``: ``data.kind`` or the file's layout, :func:`probflux.data.files.resolve_kind`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from ..data.checks import checked
from ..data.events import EventSplits, event_file_splits, event_splits
from ..data.files import read_file, resolve_kind
from ..data.points import TemporalPoints, _fmt, builtin, points_from_file, split
from ..data.registry import dataset, names
from ..data.snapshots import snapshots_from_file, split_snapshots
from ..densities.anchored import AnchoredMixture
from ..densities.autoregressive import AutoregressiveMixture
from ..densities.conditioned import Conditioned
from ..densities.factorized import FactorizedMixture
from ..densities.flow import FlowDensity
from ..divfree import DivergenceFree
from ..dynamics import Dynamics
from ..normalize import Normalizer
from ..objectives import DriftEnergy, EndpointLikelihood, JacobianSymmetry, KineticEnergy, NegativeLogLikelihood, Objective, Staged, Sum
from ..stpp.history import HistoryEncoder, history_context
from .config import ModelConfig, ObjectiveConfig

__all__ = ["build_dynamics", "build_objective", "load_data", "HISTORY_FEATURES"]

HISTORY_FEATURES = 64  # width of the history encoding an event model's density sees


def build_dynamics(cfg: ModelConfig, dim: int, context_dim: int = 0, history: Optional[int] = None,
                   train: Optional[TemporalPoints] = None, state: Optional[dict] = None) -> Dynamics:
    """The :class:`Dynamics` described by ``cfg`` for ``dim``-dimensional points.

    ``type: anchored`` is built from ``train`` (the training snapshots in model coordinates: one snapshot per
    distinct ``t``) by :meth:`AnchoredMixture.from_snapshots`; without ``train`` (a run reloaded from its
    checkpoint) it is an empty model shaped like ``state`` (the checkpoint's model weights), which it then loads.

    With ``history = k`` (event data with ``data.history``) the context is the raw history features of
    :func:`probflux.stpp.history_context` (``context_dim = 2 + k (dim + 2)``) and the density is wrapped in
    :class:`~probflux.Conditioned` with a :class:`~probflux.stpp.HistoryEncoder` (64 features)."""
    encoder = None
    if history is not None:
        encoder = HistoryEncoder(dim, events=history, hidden=HISTORY_FEATURES, out_features=HISTORY_FEATURES)
        if context_dim != encoder.in_features:
            raise ValueError(f"history={history} needs context_dim={encoder.in_features} for dim={dim}; got {context_dim}")
    inner_context = context_dim if encoder is None else encoder.out_features  # the family sees the encoding
    if cfg.type == "factorized":
        density = FactorizedMixture(dim, components=cfg.components, hidden=cfg.hidden, family=cfg.family,
                                    context_dim=inner_context, flux=cfg.flux, layers=cfg.layers, max_frequency=cfg.time_frequency)
    elif cfg.type == "autoregressive":
        density = AutoregressiveMixture(dim, components=cfg.components, hidden=cfg.hidden, layers=cfg.layers,
                                        flux=cfg.flux, context_dim=inner_context, max_frequency=cfg.time_frequency)
    elif cfg.type == "flow":
        density = FlowDensity(dim, transforms=cfg.transforms, hidden=cfg.hidden, context_dim=inner_context,
                              coupling=cfg.coupling, layers=cfg.layers, max_frequency=cfg.time_frequency)
    elif cfg.type == "anchored":
        density = _anchored(cfg, dim, context_dim, train, state)
    else:
        raise ValueError(f"model.type must be factorized, autoregressive, flow or anchored; got {cfg.type!r}")
    if encoder is not None:
        density = Conditioned(density, encoder)
    divfree = None
    if cfg.divergence_free:
        if dim < 2:
            raise ValueError("model.divergence_free needs dim >= 2")
        divfree = DivergenceFree(dim, hidden=cfg.divfree_hidden, context_dim=context_dim, max_frequency=cfg.time_frequency)
    return Dynamics(density, diffusion=cfg.diffusion, divergence_free=divfree)


def _anchored(cfg: ModelConfig, dim: int, context_dim: int, train: Optional[TemporalPoints], state: Optional[dict]) -> AnchoredMixture:
    if context_dim:
        raise ValueError(f"model.type=anchored takes no context (the data has context_dim={context_dim})")
    if train is None:
        return AnchoredMixture(dim, cfg.kernels, bridge=cfg.bridge).adopt_shapes(state or {}, "density.")
    times = sorted(set(train.t.tolist()))
    if len(times) < 2:
        raise ValueError(f"model.type=anchored needs population snapshots (at least 2 training times); the training data has "
                         f"{len(times)} distinct time(s)")
    cells = [train.x[train.t == t] for t in times]
    return AnchoredMixture.from_snapshots(times, cells, components=cfg.kernels, bridge=cfg.bridge, time_map=cfg.time_map,
                                          select=None if cfg.select == "none" else cfg.select)


def build_objective(cfg: ObjectiveConfig, times: Optional[Sequence[float]] = None) -> Objective:
    """The weighted sum ``cfg`` describes (terms with weight 0 are left out).

    ``likelihood="snapshots"`` uses :class:`EndpointLikelihood` at ``times`` (the training snapshot
    times, model units); the path terms (kinetic, drift energy, Jacobian symmetry) are wrapped in
    :class:`Staged` when ``kinetic_start``/``kinetic_ramp`` are set.
    """
    parts: list[Objective] = []
    if cfg.nll > 0:
        if cfg.likelihood == "snapshots":
            if not times:
                raise ValueError("objective.likelihood=snapshots needs the snapshot times of the training data")
            parts.append(EndpointLikelihood(times, weight=cfg.nll))
        else:
            parts.append(NegativeLogLikelihood(cfg.nll))
    path: list[Objective] = []
    if cfg.kinetic > 0:
        path.append(KineticEnergy(cfg.kinetic, samples=cfg.kinetic_samples))
    if cfg.drift_energy > 0:
        path.append(DriftEnergy(cfg.drift_energy, samples=cfg.kinetic_samples))
    if cfg.jacobian_symmetry > 0:
        path.append(JacobianSymmetry(cfg.jacobian_symmetry, samples=min(cfg.kinetic_samples, 128)))
    if path and (cfg.kinetic_start or cfg.kinetic_ramp):
        path = [Staged(path[0] if len(path) == 1 else Sum(*path), start=cfg.kinetic_start, ramp=cfg.kinetic_ramp)]
    parts += path
    if not parts:
        raise ValueError("objective: every weight is 0 (set objective.nll or objective.kinetic > 0)")
    return parts[0] if len(parts) == 1 else Sum(*parts)



def _event_points(cfg: Any, splits: EventSplits) -> tuple[TemporalPoints, TemporalPoints, TemporalPoints, Normalizer]:
    """Pooled events of event ``splits``; context = history features when ``cfg.history``. The time map spans the
    windows of all three splits (for windows cut from a catalog: one window length)."""
    stats = splits.train.spatial_stats()
    history = getattr(cfg, "history", None)

    def points(seqs: Any) -> TemporalPoints:
        e = seqs.events()
        ctx = None if history is None else history_context(seqs.standardize(stats), history)
        return TemporalPoints(e.t, e.x, ctx, source=f"{seqs.name} ({splits.note})")

    t0 = min(p.window[0] for p in (splits.train, splits.val, splits.test))
    t1 = max(p.window[1] for p in (splits.train, splits.val, splits.test))
    normalizer = Normalizer(t0, t1, stats.shift, stats.scale) if cfg.standardize else Normalizer.identity(splits.train.dim, t0, t1)
    return points(splits.train), points(splits.val), points(splits.test), normalizer


@checked  # degenerate times, extreme outliers, one-point splits (probflux.data.checks)
def load_data(cfg: Any, seed: int) -> tuple[TemporalPoints, TemporalPoints, TemporalPoints, Normalizer]:
    """Points for a :class:`~probflux.app.config.DataConfig`: ``(train, val, test, normalizer)``.

    The normaliser's ``x`` shift/scale is fitted on the training split. Its time interval is
    ``[data.t0, data.t1]``; a bound left unset is the min/max time over ALL points, so validation
    and test times also map into the model's ``[0, 1]``. Raises ``ValueError`` naming the first
    row whose time lies outside the given bounds.

    Population-snapshot data sets (``data.name`` registered as ``snapshots``) are
    split per snapshot (seeded; ``round(n_k * fraction)`` cells of snapshot ``k`` go to val/test, so
    every time point keeps training cells); every cell's ``t`` is its snapshot time. With
    ``data.leave_out = k`` the test split is exactly snapshot ``k`` (``data.test_fraction`` is
    ignored) and ``[t0, t1]`` still spans the full set. With ``data.whiten`` every split is returned
    in the PCA-whitened coordinates of the training cells and the normaliser's ``x`` map is the
    identity. Synthetic snapshot sets get ``data.n`` cells per snapshot; real ones use all cells.
    See :func:`~probflux.data.snapshots.load_snapshots` for the same data as :class:`Snapshots`.

    Event data (a built-in event set, or a file read as events) is pooled per split
    (:func:`~probflux.data.events.event_splits`, :func:`~probflux.data.events.event_file_splits` with
    ``data.val_fraction``/``test_fraction``/``cuts``/``window``/``stride``/``t0``/``t1``); with ``data.history`` the
    context is the history features of each event in its own sequence.
    """
    kind = dataset(cfg.name).kind
    file = None
    if kind == "file":
        if not cfg.path:
            raise ValueError("data.path is required when data.name is 'file'")
        file = read_file(cfg.path, getattr(cfg, "columns", None))
        event_options = any(getattr(cfg, k, None) is not None for k in ("history", "window", "stride", "cuts"))
        snapshot_options = any(getattr(cfg, k, None) not in (None, False) for k in ("leave_out", "whiten"))
        kind = resolve_kind(file, getattr(cfg, "kind", None), event_options=event_options, snapshot_options=snapshot_options)
    if kind == "events":
        if file is None:
            return _event_points(cfg, event_splits(cfg.name))
        return _event_points(cfg, event_file_splits(file, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, cuts=cfg.cuts,
                                                    window=cfg.window, stride=cfg.stride, seed=seed, t0=cfg.t0, t1=cfg.t1,
                                                    partial_windows=cfg.partial_windows))
    where = f"data.name={cfg.name!r}" if file is None else f"{file.name} read as data.kind={kind!r}"
    if getattr(cfg, "history", None) is not None:
        raise ValueError(f"data.history is only available for event data sets ({', '.join(names('events'))}, or event files), not {where}")
    for key in ("window", "stride", "cuts"):
        if getattr(cfg, key, None) is not None:
            raise ValueError(f"data.{key} is only available for event files, not {where}")
    if kind == "snapshots":
        s = split_snapshots(cfg, seed, data=None if file is None else snapshots_from_file(file))
        return s.train.to_points(), s.val, s.test, s.normalizer
    for key in ("leave_out", "whiten"):
        if getattr(cfg, key, None) not in (None, False):
            raise ValueError(f"data.{key} is only available for population-snapshot data sets ({', '.join(names('snapshots'))}, "
                             f"or snapshot files), not {where}")
    if file is not None:
        points = points_from_file(file)
    else:
        points = builtin(cfg.name, cfg.n, seed)
    if cfg.t0 is not None and cfg.t1 is not None and not float(cfg.t0) < float(cfg.t1):
        raise ValueError(f"data.t0 must be < data.t1, got [{_fmt(cfg.t0)}, {_fmt(cfg.t1)}]")
    t = points.t
    lo = float(t.min()) if cfg.t0 is None else float(cfg.t0)
    hi = float(t.max()) if cfg.t1 is None else float(cfg.t1)
    outside = (t < lo) | (t > hi)
    if bool(outside.any()):
        row = int(torch.nonzero(outside)[0, 0])
        given = " and ".join(k for k, v in (("data.t0", cfg.t0), ("data.t1", cfg.t1)) if v is not None)
        raise ValueError(
            f"t = {_fmt(t[row])} at row {row} of {points.source} is outside the data interval "
            f"[{_fmt(lo)}, {_fmt(hi)}] ({given.replace(' and ', ', ')})"
        )
    train, val, test = split(points, cfg.val_fraction, cfg.test_fraction, seed)
    normalizer = Normalizer.fit(train.t, train.x, t0=lo, t1=hi, standardize=cfg.standardize)
    return train, val, test, normalizer
