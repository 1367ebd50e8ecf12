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
  its parts :func:`snapshot_pair` (the cells compared) and :func:`sample_distances` (``W_1``/``W_2`` of any predicted
  cells, e.g. a baseline's transported cells, against held-out ones), and :func:`sampling_floor` (what a perfect
  model scores with finite samples);
* :func:`kinetic_over_ot` — a snapshot model's path energy over the discrete optimal-transport lower bound;
* :func:`evaluate` — all of the first four, as ``probflux fit`` writes them into ``metrics.json``.
"""
from __future__ import annotations

import copy
import time
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from ._random import seeded
from .checks import continuity_residual
from .data.points import TemporalPoints
from .dynamics import Dynamics
from .metrics import ot_cost, wasserstein
from .normalize import Normalizer
from .simulate import simulate

__all__ = [
    "to_model_coordinates",
    "mean_nll",
    "heldout_nll",
    "continuity_check",
    "simulation_distances",
    "subsample",
    "SnapshotPair",
    "snapshot_pair",
    "sample_distances",
    "sampling_floor",
    "heldout_snapshot_scores",
    "kinetic_over_ot",
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


def _device(dynamics: Dynamics) -> torch.device:
    return next(dynamics.parameters()).device


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
    with seeded(seed, _device(dynamics)):
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


def subsample(x: Tensor, cells: int, seed: int = 0) -> Tensor:
    """At most ``cells`` rows of ``x: (N, D)``: all of them (in order) when ``N <= cells``, else the first
    ``cells`` of a random permutation drawn from a fresh generator seeded with ``seed`` (the same rows for the
    same ``N`` and ``seed``)."""
    if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
        raise ValueError(f"cells must be a positive integer, got {cells!r}")
    if len(x) <= cells:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:cells]]


class SnapshotPair(NamedTuple):
    """The cells a held-out snapshot score compares, in data units.

    ``t_prev``: the last training snapshot time before ``t_held``; ``start: (m, D)`` training cells at
    ``t_prev``; ``target: (n, D)`` held-out cells at ``t_held`` (each side at most ``cells`` rows).
    """

    t_prev: float
    t_held: float
    start: Tensor
    target: Tensor


def snapshot_pair(train: TemporalPoints, held: TemporalPoints, *, cells: int = 2000, seed: int = 0) -> SnapshotPair:
    """The start cells (training snapshot just before the held-out time) and the target (held-out) cells of a
    leave-one-time-out score, each side subsampled by :func:`subsample` with ``seed``.

    ``train``/``held``: :class:`~probflux.data.TemporalPoints` in data units; ``held`` must share one time.
    """
    if not len(held):
        raise ValueError("snapshot_pair: no held-out points")
    t_k = float(held.t[0])
    if not bool((held.t == t_k).all()):
        raise ValueError("snapshot_pair: the held-out points must share one time")
    earlier = train.t[train.t < t_k]
    if not len(earlier):
        raise ValueError(f"snapshot_pair: no training snapshot before t = {t_k:g}")
    t_prev = float(earlier.max())
    return SnapshotPair(t_prev, t_k, subsample(train.x[train.t == t_prev], cells, seed), subsample(held.x, cells, seed))


def sample_distances(predicted: Tensor, target: Tensor) -> dict[str, float]:
    """``{"w1", "w2"}``: exact (EMD) ``W_1`` and ``W_2`` between the uniform measures on ``predicted: (N, D)``
    (a model's samples or transported cells, any method's) and ``target: (M, D)``, in their common units."""
    predicted, target = predicted.detach().double(), target.detach().double()
    return {"w1": wasserstein(predicted, target, p=1), "w2": wasserstein(predicted, target, p=2)}


def sampling_floor(cells: Tensor, *, size: int = 2000, seed: int = 0) -> dict[str, float]:
    """:func:`sample_distances` between two disjoint random halves of ``cells: (N, D)`` (``min(size, N // 2)``
    rows each, permutation seeded with ``seed``): what a perfect model scores against ``size`` finite samples."""
    m = min(size, len(cells) // 2)
    if m < 1:
        raise ValueError(f"sampling_floor: needs at least 2 cells, got {len(cells)}")
    perm = torch.randperm(len(cells), generator=torch.Generator().manual_seed(seed))
    return sample_distances(cells[perm[:m]], cells[perm[m:2 * m]])


def heldout_snapshot_scores(dynamics: Dynamics, normalizer: Normalizer, train: TemporalPoints, held: TemporalPoints, *,
                            cells: int = 2000, steps: int = 100, seed: int = 0, method: Optional[str] = None) -> dict[str, float]:
    """Leave-one-time-out scores at the held-out snapshot time ``t_k`` (data units, exact EMD on at most
    ``cells`` cells per side, picked with ``seed``):

    * ``heldout_w1_density`` / ``heldout_w2_density``: exact samples of ``rho_{t_k}`` vs the held-out cells;
    * ``heldout_w1_transport`` / ``heldout_w2_transport``: the training cells of the last earlier snapshot
      pushed to ``t_k`` by ``method`` (a :func:`~probflux.simulate` method) in ``steps`` steps — TorchCFM's metric.
      Default (``None``): ``"kernel_paths"`` for an :class:`~probflux.AnchoredMixture` without diffusion or
      divergence-free term (each cell follows a kernel drawn by responsibility, exact in law; Euler multiplies a
      cell's offset from its kernel by a stiff ``s'/s``), else the SDE (Euler–Maruyama) when the model's
      diffusion is > 0, else the probability-flow ODE by Euler. Pass ``method="euler"`` for the plain ODE.
    """
    pair = snapshot_pair(train, held, cells=cells, seed=seed)
    dtype = _dtype(dynamics)
    s_prev, s_k = float(normalizer.t_to_model(pair.t_prev)), float(normalizer.t_to_model(pair.t_held))
    if method is None:
        from .densities.anchored import AnchoredMixture

        g_k = dynamics.diffusion(torch.tensor([s_prev, s_k], dtype=dtype))
        if bool((g_k > 0).any()):
            method = "euler_maruyama"
        elif isinstance(dynamics.density, AnchoredMixture) and dynamics.divergence_free is None:
            method = "kernel_paths"
        else:
            method = "euler"
    with seeded(seed, _device(dynamics)):
        with torch.no_grad():
            direct = dynamics.density.sample(torch.full((len(pair.target),), s_k, dtype=dtype))
        moved = simulate(dynamics, normalizer.x_to_model(pair.start.to(dtype)), s_prev, s_k, steps=steps, method=method)[-1]
    density = sample_distances(normalizer.x_to_data(direct.double()), pair.target)
    transport = sample_distances(normalizer.x_to_data(moved.double()), pair.target)
    return {"heldout_time": pair.t_held, "heldout_cells": len(held),
            "heldout_w1_density": density["w1"], "heldout_w2_density": density["w2"],
            "heldout_w1_transport": transport["w1"], "heldout_w2_transport": transport["w2"]}


def kinetic_over_ot(dynamics: Dynamics, train: TemporalPoints, *, samples: int = 8192, cells: int = 2000,
                    seed: int = 0) -> dict[str, float]:
    """The learned path's kinetic energy over its optimal-transport lower bound, in model coordinates.

    ``train``: the training snapshots in MODEL coordinates (``t`` in ``[0, 1]``, standardised ``x``; e.g.
    :func:`to_model_coordinates`). Returns

    * ``kinetic_energy``: ``int_0^1 E_{rho_t}|u_t|^2 dt`` by Monte Carlo (``samples`` uniform times, one exact
      sample each, seeded with ``seed``);
    * ``ot_bound``: ``sum_k W_2^2(rho_k, rho_{k+1}) / (t_{k+1} - t_k)`` (:func:`~probflux.metrics.ot_cost`, exact
      discrete OT between consecutive snapshots, at most ``cells`` cells each by :func:`subsample`) — Benamou–Brenier;
    * ``kinetic_over_ot``: their ratio. The discrete cost between finite samples overestimates ``W_2^2`` (its
      bias grows with ``D``), so the ratio can fall below 1.
    """
    times = torch.unique(train.t).tolist()
    if len(times) < 2:
        raise ValueError(f"kinetic_over_ot: needs at least 2 training snapshot times, got {len(times)}")
    snaps = [subsample(train.x[train.t == tk], cells, seed) for tk in times]
    bound = sum(ot_cost(snaps[i], snaps[i + 1]) / (times[i + 1] - times[i]) for i in range(len(times) - 1))
    dtype = _dtype(dynamics)
    t = torch.rand(samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    with seeded(seed, _device(dynamics)):
        x = dynamics.density.sample(t)
    with torch.no_grad():
        energy = float(dynamics.velocity(t, x).double().pow(2).sum(-1).mean())
    return {"kinetic_energy": energy, "ot_bound": bound, "kinetic_over_ot": energy / bound}
