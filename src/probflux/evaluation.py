"""The one evaluation path: every score a run, the CLI or a benchmark reports is computed here.

Each function takes ``(dynamics, normalizer, data)``: a model in model coordinates (``t in [0, 1]``,
standardised ``x``), the :class:`~probflux.normalize.Normalizer` that maps data units there, and
:class:`~probflux.data.TemporalPoints` in data units. Distances are reported in data units.

* :func:`mean_nll` — ``-mean log rho_t(x)`` in chunks (model units; the training loop's validation too);
* :func:`heldout_nll` — the same in data units, ``+ log|det|`` of the normaliser;
* :func:`continuity_check` — the float64 continuity residual at model samples;
* :func:`simulation_distances` — ``W_1`` between SDE/ODE particles and exact ``rho_1`` samples, with the
  sampling floor;
* :func:`heldout_snapshot_scores` — leave-one-time-out ``W_1``/``W_2`` of the exact density and of transport;
* :func:`evaluate` — all of the first four, as ``probflux fit`` writes them into ``metrics.json``.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Optional

import torch
from torch import Tensor

from .checks import continuity_residual
from .data.points import TemporalPoints
from .dynamics import Dynamics
from .metrics import wasserstein
from .normalize import Normalizer
from .simulate import simulate

__all__ = [
    "to_model_coordinates",
    "mean_nll",
    "heldout_nll",
    "continuity_check",
    "simulation_distances",
    "heldout_snapshot_scores",
    "evaluate",
]


def to_model_coordinates(points: TemporalPoints, normalizer: Normalizer) -> TemporalPoints:
    """``points`` mapped by ``normalizer``: ``t -> s in [0, 1]`` (clamped against rounding), ``x -> z``; context kept."""
    s = normalizer.t_to_model(points.t)
    s = s.clamp(0.0, 1.0) if len(s) else s
    return TemporalPoints._unchecked(s, normalizer.x_to_model(points.x), points.context, points.source)


def mean_nll(model: Any, t: Tensor, x: Tensor, ctx: Optional[Tensor] = None, limit: Optional[int] = None, chunk: int = 8192) -> float:
    """``-mean log rho_t(x)`` over the first ``limit`` points (all when None), in chunks, without a graph.

    Sums in float64. ``model``: a :class:`Dynamics` or a :class:`~probflux.TimeDensity` (anything with
    ``log_prob(t, x, context)``); ``t: (N,)``, ``x: (N, D)``, ``ctx: (N, C) | None``.
    """
    n = t.shape[0] if limit is None else min(limit, t.shape[0])
    if n < 1:
        raise ValueError("mean_nll: no points")
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            c = None if ctx is None else ctx[i:j]
            total += float(-model.log_prob(t[i:j], x[i:j], c).double().sum())
    return total / n


def _dtype(dynamics: Dynamics) -> torch.dtype:
    return next(dynamics.parameters()).dtype


def heldout_nll(dynamics: Dynamics, normalizer: Normalizer, points: TemporalPoints) -> dict[str, float]:
    """``test_nll`` (nats per point, data units: ``test_nll_model + log|det|`` of the normaliser) and
    ``test_nll_model`` (standardised units) over ``points``."""
    pts = to_model_coordinates(points.to(dtype=_dtype(dynamics)), normalizer)
    nll_model = mean_nll(dynamics, pts.t, pts.x, pts.context)
    return {"test_nll_model": nll_model, "test_nll": nll_model + normalizer.log_det}


def continuity_check(dynamics: Dynamics, points: int = 256, context: Optional[Tensor] = None) -> dict[str, float]:
    """Max and median over ``points`` model samples at uniform times of ``|d_t rho + div j| / scale``
    (:func:`~probflux.continuity_residual` on a float64 copy): the exactness of the density–flux pair."""
    d64 = copy.deepcopy(dynamics).double()
    t = torch.rand(points, dtype=torch.float64)
    c = None if context is None else context[:points].double()
    x = d64.density.sample(t, context=c)
    res = continuity_residual(d64, t, x, c).relative
    return {"continuity_residual_max": float(res.max()), "continuity_residual_median": float(res.median())}


def simulation_distances(dynamics: Dynamics, normalizer: Normalizer, *, particles: int = 1000, steps: int = 200,
                         context: Optional[Tensor] = None) -> dict[str, float]:
    """Fokker–Planck consistency: ``particles`` SDE (Euler–Maruyama, the model's diffusion) and ODE (Euler)
    particles from ``rho_0`` samples integrated to ``t = 1`` in ``steps`` steps, against fresh ``rho_1`` samples.

    Returns ``w1_sde_vs_model``, ``w1_ode_vs_model`` and ``w1_model_vs_model`` (two independent ``rho_1``
    draws of the same size: the sampling floor the first two are read against), data units, plus
    ``simulation_seconds``, ``particles`` and ``simulation_steps``.
    """
    dtype = _dtype(dynamics)
    cp = None if context is None else context[:particles]
    x0 = dynamics.density.sample(torch.zeros(particles, dtype=dtype), context=cp)
    ref1 = normalizer.x_to_data(dynamics.density.sample(torch.ones(particles, dtype=dtype), context=cp))
    ref2 = normalizer.x_to_data(dynamics.density.sample(torch.ones(particles, dtype=dtype), context=cp))
    start = time.perf_counter()
    sde = simulate(dynamics, x0, 0.0, 1.0, steps=steps, method="euler_maruyama", context=cp)[-1]
    ode = simulate(dynamics, x0, 0.0, 1.0, steps=steps, method="euler", context=cp)[-1]
    seconds = time.perf_counter() - start
    w1 = lambda a, b: wasserstein(a, b, p=1)  # noqa: E731
    return {"w1_sde_vs_model": w1(normalizer.x_to_data(sde), ref1), "w1_ode_vs_model": w1(normalizer.x_to_data(ode), ref1),
            "w1_model_vs_model": w1(ref1, ref2), "simulation_seconds": seconds, "particles": particles, "simulation_steps": steps}


def evaluate(dynamics: Dynamics, normalizer: Normalizer, test: Optional[TemporalPoints], *, particles: int = 1000, steps: int = 200,
             seed: int = 0, residual_points: int = 256) -> dict[str, Any]:
    """Held-out likelihood, exactness and Fokker–Planck consistency of a model (what ``metrics.json`` holds).

    ``test_nll``/``test_nll_model`` (:func:`heldout_nll`, when ``test`` has points),
    ``continuity_residual_max``/``_median`` (:func:`continuity_check`) and the ``w1_*`` distances of
    :func:`simulation_distances`; ``particles = 0`` skips the simulation. A context model is evaluated at
    the contexts of randomly picked ``test`` points. Seeded by ``seed``; the global RNG state is restored.
    """
    n_test = 0 if test is None else len(test)
    out: dict[str, Any] = {"dim": dynamics.dim, "test_points": n_test}
    if n_test:
        out.update(heldout_nll(dynamics, normalizer, test))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ctx = None
        if dynamics.context_dim:
            if not n_test:
                raise ValueError("evaluate: the model takes a context; pass test points that carry one")
            pick = torch.randint(n_test, (max(particles, residual_points),))
            ctx = test.context[pick].to(_dtype(dynamics))
        if residual_points:
            out.update(continuity_check(dynamics, residual_points, ctx))
        if particles:
            out.update(simulation_distances(dynamics, normalizer, particles=particles, steps=steps, context=ctx))
    return out


def heldout_snapshot_scores(dynamics: Dynamics, normalizer: Normalizer, train: TemporalPoints, held: TemporalPoints, *,
                            cells: int = 2000, steps: int = 100, seed: int = 0, method: Optional[str] = None) -> dict[str, float]:
    """Leave-one-time-out scores at the held-out snapshot time ``t_k`` (data units, exact EMD on at most
    ``cells`` cells per side, picked with ``seed``):

    * ``heldout_w1_density`` / ``heldout_w2_density``: exact samples of ``rho_{t_k}`` vs the held-out cells;
    * ``heldout_w1_transport`` / ``heldout_w2_transport``: the training cells of the last earlier snapshot
      pushed to ``t_k`` by ``method`` (default: the SDE when the model's diffusion is > 0, else the
      probability-flow ODE by Euler) in ``steps`` steps — TorchCFM's metric.
    """
    t_k = float(held.t[0])
    if not bool((held.t == t_k).all()):
        raise ValueError("heldout_snapshot_scores: the held-out points must share one time")
    earlier = train.t[train.t < t_k]
    if not len(earlier):
        raise ValueError(f"heldout_snapshot_scores: no training snapshot before t = {t_k:g}")
    t_prev = float(earlier.max())
    g = torch.Generator().manual_seed(seed)
    pick = lambda x: x[torch.randperm(len(x), generator=g)[:cells]]  # noqa: E731
    dtype = _dtype(dynamics)
    target = pick(held.x)
    start = pick(train.x[train.t == t_prev])
    s_prev, s_k = float(normalizer.t_to_model(t_prev)), float(normalizer.t_to_model(t_k))
    if method is None:
        g_k = dynamics.diffusion(torch.tensor([s_prev, s_k], dtype=dtype))
        method = "euler_maruyama" if bool((g_k > 0).any()) else "euler"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            direct = dynamics.density.sample(torch.full((len(target),), s_k, dtype=dtype))
        moved = simulate(dynamics, normalizer.x_to_model(start.to(dtype)), s_prev, s_k, steps=steps, method=method)[-1]
    direct, moved = normalizer.x_to_data(direct.double()), normalizer.x_to_data(moved.double())
    return {"heldout_time": t_k, "heldout_cells": len(held),
            "heldout_w1_density": wasserstein(direct, target, p=1), "heldout_w2_density": wasserstein(direct, target, p=2),
            "heldout_w1_transport": wasserstein(moved, target, p=1), "heldout_w2_transport": wasserstein(moved, target, p=2)}
