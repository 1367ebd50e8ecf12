r"""The honest check: simulate the controlled SDE and compute every cost term by Monte Carlo.

:func:`monte_carlo_cost` runs Euler–Maruyama (:func:`probflux.simulate.euler_maruyama`, the package's one
integrator) in physical time ``s in [0, T]`` from samples of the *true*
initial law with any drift ``b(s, x)`` (the learned probflux drift ``b_m(s/T, x)/T`` or a baseline policy)
and accumulates, per particle, ``sum_k [lambda |b - v|^2 + V + obstacles + mean-field] ds + G(X_T)``
(left-point rule). Obstacles are the problem's own (DeepGSB's hard ``1500 * indicator``). Mean-field
terms need ``log rho_s`` at the particles: from ``log_density(s, x)`` when given (the model's exact one),
otherwise from a Gaussian kernel estimate on the particle cloud (the same estimator for every method);
interaction kernels pair each particle with another one of the cloud.

:func:`simulation_free_cost` estimates the same path cost from the model's exact marginals (stratified
times, exact samples, no SDE): the two agree within Monte Carlo and time-step error when the model's
``rho_0`` is the initial law (``tests/test_control.py``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

from .._random import draw_seed, seeded
from ..dynamics import Dynamics
from ..simulate import euler_maruyama
from .costs import kde_log_density, mean_field_values
from .problem import ControlProblem

__all__ = ["monte_carlo_cost", "simulation_free_cost", "model_drift", "model_log_density", "mean_and_error"]

Drift = Callable[[Tensor, Tensor], Tensor]


def mean_and_error(v: Tensor) -> tuple[float, float]:
    """Mean and standard error of per-particle values ``(N,)``."""
    return float(v.mean()), float(v.std() / math.sqrt(v.shape[0])) if v.shape[0] > 1 else float("nan")


def model_drift(problem: ControlProblem, dynamics: Dynamics) -> Drift:
    """The physical drift ``b(s, x) = b_m(s / T, x) / T`` of a probflux model (``(N,), (N, D) -> (N, D)``)."""
    T = problem.horizon

    dtype = dynamics.density._dtype

    def drift(s: Tensor, x: Tensor) -> Tensor:
        with torch.enable_grad():
            b = dynamics.drift((s / T).clamp(0, 1).to(dtype), x.to(dtype)).detach() / T
        return b.to(x.dtype)

    return drift


def model_log_density(problem: ControlProblem, dynamics: Dynamics) -> Callable[[Tensor, Tensor], Tensor]:
    """``log rho_s(x) = log rho^model_{s/T}(x)`` (no gradient), for the mean-field terms of :func:`monte_carlo_cost`."""
    T, dtype = problem.horizon, dynamics.density._dtype

    def log_density(s: Tensor, x: Tensor) -> Tensor:
        with torch.no_grad():
            return dynamics.log_prob((s / T).clamp(0, 1).to(dtype), x.to(dtype)).to(x.dtype)

    return log_density


@torch.no_grad()
def monte_carlo_cost(problem: ControlProblem, drift: Drift, n: int = 2000, steps: int = 200, *, seed: int = 0,
                     log_density: Optional[Callable[[Tensor, Tensor], Tensor]] = None, x0: Optional[Tensor] = None,
                     target_samples: Optional[Tensor] = None, keep: int = 0, w2: bool = True,
                     max_drift: Optional[float] = None, w2_method: str = "exact") -> dict:
    r"""Simulate ``dX = b(s, X) ds + g(s) dW`` on ``[0, T]`` with ``steps`` Euler–Maruyama steps; Monte Carlo cost.

    Args:
        drift: physical drift ``(N,), (N, D) -> (N, D)``.
        n: particles from ``problem.initial`` (or ``x0: (n, D)``). log_density: ``log rho_s(x)`` for mean-field terms.
        target_samples: ``(M, D)`` samples of the target for ``W2`` (default: ``n`` fresh ones when there is a target).
        w2_method: ``"exact"`` (default; POT network simplex, ~1 s at 2000 x 2000) or ``"sinkhorn"``
            (:func:`probflux.metrics.wasserstein`). Log-domain Sinkhorn with its default ``reg`` needed >10^4
            iterations (minutes, GBs) when a few simulated particles lay far from the target.
        keep: keep this many particle paths at 11 times for plots.
        max_drift: if given, the applied control is ``b`` rescaled to norm ``<= max_drift`` (non-finite ``b`` → 0),
            a safeguard against a drift that explodes off the data; costs are those of the *applied* control,
            and ``clipped`` reports the fraction of particle-steps affected.

    Returns a dict: ``terms`` (name → (mean, std error)), ``cost`` and ``cost_se`` (the path cost
    ``control + state + mean-field + terminal``), ``w2`` (``W2(X_T, target)`` by ``w2_method``, or None),
    ``violation`` (fraction of particles inside an obstacle at some step), ``violation_time`` (mean fraction
    inside over the steps), ``clipped``, ``final`` (``X_T``), ``path`` (``(11, keep, D)`` or None) and
    ``per_particle`` (``(n,)`` path costs; the same ``seed`` and ``n`` give the same initial points and Brownian
    increments, so two drifts can be compared with common random numbers).
    """
    P, T = problem, problem.horizon
    gen = torch.Generator().manual_seed(seed)
    if x0 is None:
        if not P.initial.can_sample:
            raise ValueError("monte_carlo_cost: the initial law cannot be sampled; pass x0")
        x0 = P.initial.sample(n, gen)
    x = x0.to(torch.float64)
    n = x.shape[0]
    ds = T / steps
    totals: dict[str, Tensor] = {"control": x.new_zeros(n)}
    if P.running_cost is not None or P.obstacles:
        totals["state"] = x.new_zeros(n)
    ever = torch.zeros(n, dtype=torch.bool)
    inside_time = clipped = 0.0
    snaps = [x[:keep].clone()] if keep else []
    snap_at = {round(steps * k / 10) for k in range(1, 11)}

    def applied(s: Tensor, x: Tensor) -> Tensor:  # the drift after the max_drift safeguard
        nonlocal clipped
        b = drift(s, x)
        if max_drift is not None:
            bad = ~torch.isfinite(b).all(-1)
            b = torch.where(bad[:, None], torch.zeros_like(b), b)
            norm = b.norm(dim=-1, keepdim=True)
            over = norm[:, 0] > max_drift
            b = torch.where(over[:, None], b * (max_drift / norm.clamp_min(1e-300)), b)
            clipped += float((bad | over).double().mean()) / steps
        return b

    def running(s: Tensor, x: Tensor, b: Tensor, dt: Tensor) -> None:  # left-point rule, then the obstacle tally
        nonlocal ever, inside_time
        totals["control"] += P.control_cost(s, x, b) * dt
        if "state" in totals:
            totals["state"] += P.state_cost(s, x) * dt
        density = (lambda: log_density(s, x)) if log_density is not None else (lambda: kde_log_density(x))
        pairs = lambda: x[torch.randperm(n, generator=gen)]
        for key, v in mean_field_values(P.mean_field, x, density, pairs).items():
            totals[key] = totals.get(key, x.new_zeros(n)) + v * dt
        if P.obstacles:
            inside = P.inside_obstacle(x)
            ever |= inside
            inside_time += float(inside.double().mean()) / steps

    s_k, ds_k = ds * torch.arange(steps, dtype=x.dtype), torch.full((steps,), ds, dtype=x.dtype)
    for k, x_k in enumerate(euler_maruyama(x, applied, P.diffusion, s_k, ds_k, generator=gen, observe=running)):
        x = x_k
        if keep and (k + 1) in snap_at:
            snaps.append(x[:keep].clone())
    if P.obstacles:
        ever |= P.inside_obstacle(x)
    if P.terminal_cost is not None:
        totals["terminal"] = P.terminal_cost(x)
    per_particle = sum(totals.values())
    cost, cost_se = mean_and_error(per_particle)
    dist = None
    if w2 and P.target is not None:
        from ..metrics import wasserstein

        ref = target_samples if target_samples is not None else P.target.sample(n, gen)
        dist = wasserstein(x, ref, 2, method=w2_method)
    return {
        "terms": {k: mean_and_error(v) for k, v in totals.items()},
        "cost": cost, "cost_se": cost_se, "w2": dist,
        "violation": float(ever.double().mean()) if P.obstacles else 0.0,
        "violation_time": inside_time, "clipped": clipped,
        "final": x, "path": torch.stack(snaps) if keep else None, "per_particle": per_particle,
    }


def simulation_free_cost(problem: ControlProblem, dynamics: Dynamics, n: int = 4096, *, seed: int = 0) -> dict:
    r"""The same path cost as :func:`monte_carlo_cost`, from the model's exact marginals — no SDE.

    Stratified times ``t_i = (i + U_i)/n`` on ``[0, 1]``, ``x_i ~ rho_{t_i}``; ``T * mean`` of the running
    integrands (problem's own obstacles, model ``log rho`` for mean-field terms, a second sample at the same
    times for interaction kernels) plus ``E_{rho_1}[G]`` from ``n`` samples. Returns ``terms``
    (name → (mean, std error; conservative under stratification)), ``cost``, ``cost_se``.
    """
    P, T = problem, problem.horizon
    gen = torch.Generator().manual_seed(seed)
    dtype = dynamics.density._dtype
    t = ((torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=gen, dtype=torch.float64)) / n).to(dtype)
    with seeded(draw_seed(gen)):
        x = dynamics.density.sample(t)
        y = dynamics.density.sample(t)
        x1 = dynamics.density.sample(1.0, n)
    s = T * t
    with torch.enable_grad():
        b = dynamics.drift(t, x).detach() / T
    with torch.no_grad():
        s, x, y, x1, b = (v.double() for v in (s, x, y, x1, b))
        vals: dict[str, Tensor] = {"control": T * P.control_cost(s, x, b)}
        if P.running_cost is not None or P.obstacles:
            vals["state"] = T * P.state_cost(s, x)
        density = lambda: dynamics.log_prob(t, x.to(dtype)).double()
        for key, v in mean_field_values(P.mean_field, x, density, lambda: y).items():
            vals[key] = T * v
        if P.terminal_cost is not None:
            vals["terminal"] = P.terminal_cost(x1)
    terms = {k: mean_and_error(v.double()) for k, v in vals.items()}
    cost = sum(m for m, _ in terms.values())
    cost_se = math.sqrt(sum(e**2 for _, e in terms.values()))
    return {"terms": terms, "cost": cost, "cost_se": cost_se}
