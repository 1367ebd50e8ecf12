r"""The EarthquakeNPP continuous protocol: one test period of ONE catalog scored event by event, each event
conditioned on ALL strictly earlier events of the whole catalog (training and validation periods included).

The catalog is a :class:`probflux.data.events.EventCatalog` (``t: (N,)`` days, ``x: (N, D)`` km, period
boundaries; :func:`probflux.data.events.earthquakenpp_catalog` loads Japan_25, ComCat_25 or any file in that
layout). Event ``i`` of the scored period has the history ``H_i = {j : t_j < t_i}`` (strictly earlier in time:
events that share a time share a history and never see each other).

Per-event scores (the conventions of EarthquakeNPP's ETAS evaluation, ss15859/EarthquakeNPP
``Experiments/ETAS``; docs/events.md states them):

* spatial: ``log f*(x_i | t_i, H_i)`` — log density per unit area of ``x`` (per km^2 for km coordinates);
  :func:`spatial_scores`, mean = ``test_spatial_ll_per_event_km2``;
* temporal: ``[sum_i log lambda*(t_i | H_i) - int_{T_start}^{t_n} lambda*(s) ds] / n`` — the integral from the
  period start to the period's LAST event, as EarthquakeNPP sums ``int_{t_{i-1}}^{t_i}`` over the test events;
  :func:`temporal_scores` (``until="end"`` integrates to the period end instead), = ``test_temporal_ll_per_event``.

Models plug in through two small protocols; anything with the method (or a plain callable for the spatial part)
works — the kernel baseline (``benchmarks/peers/kernel_stpp.py``), the temporal models of
:mod:`probflux.stpp.temporal` and learned densities:

``SpatialModel.spatial_log_prob(t, x, history) -> (Q,)``
    ``t: (Q,)`` query times, ``x: (Q, D)`` query locations (catalog units), ``history``: a :class:`History` whose
    arrays ``history.t: (H,)``, ``history.x: (H, D)`` are a prefix of the catalog and ``history.n: (Q,)`` int64
    counts: query ``q`` may use rows ``[0, n_q)`` and nothing else (exactly the events with ``t_j < t_q``).
    :meth:`History.mask` and :meth:`History.last` give the visible rows. Return the log density of ``x_q``.
    The protocol calls it on chunks of queries (``chunk``), so memory stays bounded by the model's own work.

``TemporalModel.log_intensity(t, history) -> (Q,)`` and ``TemporalModel.integral(a, b, t_events) -> float``
    ``log lambda*(t_q)`` given rows ``[0, n_q)`` of ``history``; ``integral`` = ``int_a^b lambda*(s) ds`` where
    ``lambda*(s)`` is conditioned on the events ``t_events[j] < s`` (``t_events: (H,)`` sorted: every catalog event
    before ``b``). A model with ``needs_locations = True`` gets their locations too: ``integral(a, b, t_events,
    x_events)`` with ``x_events: (H, D)``.

Use :func:`evaluate` for both at once; :class:`StandardizedSpatial` adapts a model that works in standardised
coordinates (``z = (x - mean) / std``) to catalog units (adds ``-sum log std``, so the scores are per km^2).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Protocol, Union, runtime_checkable

import torch
from torch import Tensor

from ..data.events import EventCatalog

__all__ = ["History", "SpatialModel", "TemporalModel", "StandardizedSpatial", "SpatialMixture", "mixture_log_prob",
           "spatial_scores", "temporal_scores", "TemporalScores", "ContinuousResult", "evaluate", "history_counts"]


class History(NamedTuple):
    """The strictly earlier events visible to each query of a chunk.

    ``t: (H,)``, ``x: (H, D)``: a prefix of the catalog (sorted by time); ``n: (Q,)`` int64: query ``q`` sees rows
    ``[0, n_q)`` — the events with ``t_j < t_q`` — and must not use the others (rows ``>= n_q`` are later queries of
    the same chunk or ties).
    """

    t: Tensor
    x: Tensor
    n: Tensor

    def mask(self) -> Tensor:
        """``(Q, H)`` bool: row ``j`` visible to query ``q``."""
        return torch.arange(self.t.shape[0], device=self.n.device)[None, :] < self.n[:, None]

    def last(self, k: int) -> tuple[Tensor, Tensor]:
        """The newest ``k`` visible events of each query, newest first: ``(index (Q, k) int64, valid (Q, k) bool)``;
        invalid slots (fewer than ``k`` earlier events) hold index 0."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}")
        idx = self.n[:, None] - torch.arange(1, k + 1, device=self.n.device)[None, :]
        valid = idx >= 0
        return idx.clamp_min(0), valid


@runtime_checkable
class SpatialModel(Protocol):
    def spatial_log_prob(self, t: Tensor, x: Tensor, history: History) -> Tensor: ...


@runtime_checkable
class TemporalModel(Protocol):
    def log_intensity(self, t: Tensor, history: History) -> Tensor: ...

    def integral(self, a: float, b: float, t_events: Tensor) -> float: ...


def _check_catalog(catalog: Any) -> EventCatalog:
    if not isinstance(catalog, EventCatalog):
        raise TypeError(f"catalog must be an EventCatalog (probflux.data.events.earthquakenpp_catalog); got {type(catalog).__name__}")
    return catalog


def history_counts(catalog: EventCatalog, t: Tensor) -> Tensor:
    """``(Q,)`` int64: how many catalog events lie strictly before each time ``t: (Q,)``."""
    return torch.searchsorted(catalog.t, t.to(catalog.t.dtype).contiguous(), right=False)


def _spatial_fn(model: Any) -> Callable[[Tensor, Tensor, History], Tensor]:
    if hasattr(model, "spatial_log_prob"):
        return model.spatial_log_prob
    if callable(model):
        return model
    raise TypeError(f"spatial model must have spatial_log_prob(t, x, history) or be a callable; got {type(model).__name__}")


def spatial_scores(catalog: EventCatalog, model: Any, *, period: str = "test", chunk: int = 1024,
                   rows: Optional[Tensor] = None) -> Tensor:
    """``(n,)`` float64: ``log f*(x_i | t_i, H_i)`` of every event of ``period``, ``H_i`` = all catalog events with
    ``t_j < t_i``. The model is called on chunks of ``chunk`` queries, each with the catalog prefix up to its last
    query and the per-query counts (:class:`History`); no gradient. ``rows: (n,)`` int64 (sorted) scores those catalog
    events instead of a period (e.g. a random subset of one, for tuning), each still with all its earlier events."""
    catalog = _check_catalog(catalog)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    fn = _spatial_fn(model)
    if rows is None:
        sl = catalog.indices(period)
        if sl.stop <= sl.start:
            raise ValueError(f"period {period!r} of {catalog.name} has no events")
        idx = torch.arange(sl.start, sl.stop)
    else:
        idx = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
        if idx.shape[0] == 0 or bool((idx[1:] < idx[:-1]).any()) or int(idx.min()) < 0 or int(idx.max()) >= catalog.t.shape[0]:
            raise ValueError(f"rows must be sorted, non-empty catalog row indices in [0, {catalog.t.shape[0]})")
    out = []
    with torch.no_grad():
        for i in range(0, idx.shape[0], chunk):
            j = min(i + chunk, idx.shape[0])
            tq, xq = catalog.t[idx[i:j]], catalog.x[idx[i:j]]
            n = history_counts(catalog, tq)
            h = int(n.max())
            lp = fn(tq, xq, History(catalog.t[:h], catalog.x[:h], n))
            lp = torch.as_tensor(lp).reshape(-1).double()
            if lp.shape[0] != j - i:
                raise ValueError(f"spatial_log_prob returned {lp.shape[0]} values for {j - i} queries")
            out.append(lp)
    res = torch.cat(out)
    if not bool(torch.isfinite(res).all()):
        bad = int((~torch.isfinite(res)).nonzero()[0, 0])
        raise FloatingPointError(f"the spatial log-likelihood of event {int(idx[bad])} of {catalog.name} is not finite")
    return res


@dataclass(frozen=True)
class TemporalScores:
    """``log_intensity: (n,)`` = ``log lambda*(t_i | H_i)``; ``integral`` = ``int_a^b lambda*``; ``a, b`` its limits;
    ``ll_per_event`` = ``(sum log_intensity - integral) / n``."""

    log_intensity: Tensor
    integral: float
    a: float
    b: float

    @property
    def ll_per_event(self) -> float:
        return (float(self.log_intensity.sum()) - self.integral) / int(self.log_intensity.shape[0])


def temporal_scores(catalog: EventCatalog, model: Any, *, period: str = "test", until: str = "last_event") -> TemporalScores:
    """Temporal scores of ``period``: ``log lambda*(t_i | H_i)`` per event and ``int_a^b lambda*(s) ds`` with ``a`` the
    period start and ``b`` its last event (``until="last_event"``, EarthquakeNPP's convention) or its end
    (``until="end"``). The model is called once with every query of the period (one recursion over the catalog)."""
    catalog = _check_catalog(catalog)
    if not (hasattr(model, "log_intensity") and hasattr(model, "integral")):
        raise TypeError(f"temporal model must have log_intensity(t, history) and integral(a, b, t_events); got {type(model).__name__}")
    if until not in ("last_event", "end"):
        raise ValueError(f"until must be 'last_event' or 'end'; got {until!r}")
    sl = catalog.indices(period)
    if sl.stop <= sl.start:
        raise ValueError(f"period {period!r} of {catalog.name} has no events")
    a, end = catalog.span(period)
    tq = catalog.t[sl]
    b = float(tq[-1]) if until == "last_event" else end
    with torch.no_grad():
        n = history_counts(catalog, tq)
        h = int(n.max())
        li = torch.as_tensor(model.log_intensity(tq, History(catalog.t[:h], catalog.x[:h], n))).reshape(-1).double()
        if li.shape[0] != tq.shape[0]:
            raise ValueError(f"log_intensity returned {li.shape[0]} values for {tq.shape[0]} queries")
        nb = int(torch.searchsorted(catalog.t, torch.tensor(b, dtype=catalog.t.dtype), right=False))
        if getattr(model, "needs_locations", False):  # e.g. CountETASTemporal: productivity from nearby events
            integral = float(model.integral(a, b, catalog.t[:nb], catalog.x[:nb]))
        else:
            integral = float(model.integral(a, b, catalog.t[:nb]))
    if not (bool(torch.isfinite(li).all()) and integral == integral and abs(integral) != float("inf")):
        raise FloatingPointError(f"the temporal log-likelihood of {catalog.name} ({period}) is not finite")
    return TemporalScores(li, integral, a, b)


class ContinuousResult(NamedTuple):
    """Per-event means over the ``n_events`` of the scored period (``None`` for a part not scored) and the raw scores."""

    spatial_ll_per_event: Optional[float]
    temporal_ll_per_event: Optional[float]
    n_events: int
    spatial: Optional[Tensor]
    temporal: Optional[TemporalScores]


def evaluate(catalog: EventCatalog, spatial: Any = None, temporal: Any = None, *, period: str = "test", chunk: int = 1024,
             until: str = "last_event") -> ContinuousResult:
    """Spatial and/or temporal log-likelihood per event of ``period`` under the continuous protocol."""
    catalog = _check_catalog(catalog)
    if spatial is None and temporal is None:
        raise ValueError("evaluate needs a spatial model, a temporal model or both")
    sl = catalog.indices(period)
    sp = None if spatial is None else spatial_scores(catalog, spatial, period=period, chunk=chunk)
    tp = None if temporal is None else temporal_scores(catalog, temporal, period=period, until=until)
    return ContinuousResult(None if sp is None else float(sp.mean()), None if tp is None else tp.ll_per_event,
                            sl.stop - sl.start, sp, tp)


class StandardizedSpatial:
    """A spatial model in standardised coordinates ``z = (x - mean) / std`` seen in catalog units:
    ``log f_x(x | t, H) = log f_z(z | t, H_z) - sum_d log std_d`` (``H_z``: the history with standardised locations).

    ``model``: anything :func:`spatial_scores` accepts, working on ``z``; ``mean, std: (D,)``.
    """

    def __init__(self, model: Any, mean: Union[Tensor, Any], std: Union[Tensor, Any]) -> None:
        self.fn = _spatial_fn(model)
        self.mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if self.mean.shape != self.std.shape or not bool((self.std > 0).all()):
            raise ValueError(f"mean and std must have one shape (D,) with std > 0; got {tuple(self.mean.shape)}, {tuple(self.std.shape)}")
        self.log_det = float(torch.log(self.std).sum())

    def spatial_log_prob(self, t: Tensor, x: Tensor, history: History) -> Tensor:
        z = (x - self.mean.to(x)) / self.std.to(x)
        hz = History(history.t, (history.x - self.mean.to(history.x)) / self.std.to(history.x), history.n)
        return torch.as_tensor(self.fn(t, z, hz)).reshape(-1) - self.log_det


def mixture_log_prob(log_probs: Tensor, weights: Union[Tensor, Any]) -> Tensor:
    """``log sum_i w_i f_i`` from the components' log densities ``log_probs: (K, Q)`` and weights ``(K,)`` (-> ``(Q,)``)
    or a batch of weight vectors ``(L, K)`` (-> ``(L, Q)``), each non-negative and summing to 1 (a zero weight drops its
    component exactly). The one mixing formula of :class:`SpatialMixture` and of tuning a mixture weight."""
    lw = torch.log(torch.as_tensor(weights, dtype=log_probs.dtype))
    return torch.logsumexp(lw.unsqueeze(-1) + log_probs, dim=-2)


class SpatialMixture:
    """A constant-weight mixture of spatial models: ``f(x | t, H) = sum_i w_i f_i(x | t, H)`` (``weights`` positive,
    normalised here). Each ``f_i`` with an exact flux between events gives the mixture the exact flux
    ``sum_i w_i j_i`` (the continuity equation is linear). Components with weight 0 are skipped (never called)."""

    def __init__(self, models: list[Any], weights: list[float]) -> None:
        if len(models) == 0 or len(models) != len(weights):
            raise ValueError(f"models and weights must be non-empty lists of one length; got {len(models)} and {len(weights)}")
        w = torch.as_tensor(weights, dtype=torch.float64)
        if not (bool(torch.isfinite(w).all()) and bool((w >= 0).all()) and float(w.sum()) > 0):
            raise ValueError(f"weights must be finite, non-negative and not all zero; got {list(weights)}")
        keep = (w > 0).nonzero().reshape(-1).tolist()
        self.fns = [_spatial_fn(models[i]) for i in keep]
        self.weights = (w / w.sum())[keep]

    def spatial_log_prob(self, t: Tensor, x: Tensor, history: History) -> Tensor:
        parts = torch.stack([torch.as_tensor(fn(t, x, history)).reshape(-1).double() for fn in self.fns])
        return mixture_log_prob(parts, self.weights)
