r"""The simulation-based baseline: a neural policy trained by back-propagating through SDE rollouts.

``b_theta(s, x)`` is an MLP of ``(s / T, x)``. Each step simulates ``n`` particles from the initial law with
``steps`` Euler–Maruyama steps (the standard "direct" / adjoint-free method, as in DeepGSB's comparisons and
torchsde-based solvers) and minimises the Monte Carlo cost of the same problem:
``mean_i [sum_k (lambda |b - v|^2 + V + smooth obstacles + mean-field) ds + G(X_T)]
+ sinkhorn_weight * S_eps(X_T, target)``, where mean-field densities are Gaussian kernel estimates on the
particle cloud (a simulation-based method has no density) and ``S_eps`` is the debiased Sinkhorn divergence
(POT, log-domain, ``eps = blur * median squared distance``) when the problem has a target.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from ..nn import MLP
from ..simulate import euler_maruyama
from .costs import Obstacle, kde_log_density, mean_field_values, smooth_obstacles
from .problem import ControlProblem

__all__ = ["NeuralPolicy", "sinkhorn_divergence", "train_baseline"]


class NeuralPolicy(nn.Module):
    """``b_theta(s, x) = scale * MLP(s / T, x)`` in physical units; ``s: (N,)``, ``x: (N, D) -> (N, D)``."""

    def __init__(self, dim: int, horizon: float, hidden: int = 128, layers: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        self.net = MLP(dim + 1, dim, hidden, layers, last_init_scale=1.0)
        self.horizon, self.scale = float(horizon), float(scale)

    def forward(self, s: Tensor, x: Tensor) -> Tensor:
        return self.scale * self.net(torch.cat([(s / self.horizon).unsqueeze(-1), x], -1))


def sinkhorn_divergence(x: Tensor, y: Tensor, blur: float = 0.05, iters: int = 100) -> Tensor:
    r"""Debiased entropic OT ``S(x, y) = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2`` (squared Euclidean cost,
    POT ``sinkhorn2``/``sinkhorn_log``, differentiable in ``x``); ``eps = blur * median |x_i - y_j|^2``."""
    import ot

    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype)
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=x.dtype)
    Mxy = torch.cdist(x, y).pow(2)
    eps = blur * float(Mxy.detach().median()) + 1e-8

    def ot_eps(p: Tensor, q: Tensor, M: Tensor) -> Tensor:
        return ot.sinkhorn2(p, q, M, eps, method="sinkhorn_log", numItermax=iters, stopThr=1e-6)

    return ot_eps(a, b, Mxy) - 0.5 * ot_eps(a, a, torch.cdist(x, x).pow(2)) - 0.5 * ot_eps(b, b, torch.cdist(y, y).pow(2))


def rollout_loss(problem: ControlProblem, policy: NeuralPolicy, n: int, steps: int, generator: torch.Generator,
                 train_obstacles: Sequence[Obstacle], sinkhorn_weight: float, dtype: torch.dtype) -> tuple[Tensor, dict[str, float]]:
    """One Euler–Maruyama rollout of ``n`` particles and its differentiable Monte Carlo cost."""
    P, T = problem, problem.horizon
    ds = T / steps
    x = P.initial.sample(n, generator).to(dtype)
    total = x.new_zeros(n)

    def running(s: Tensor, x: Tensor, b: Tensor, dt: Tensor) -> None:  # left-point rule
        nonlocal total
        run = P.control_cost(s, x, b) + P.state_cost(s, x, train_obstacles)
        pairs = lambda: x[torch.randperm(n, generator=generator)]
        for v in mean_field_values(P.mean_field, x, lambda: kde_log_density(x), pairs).values():
            run = run + v
        total = total + run * dt

    s_k = (ds * torch.arange(steps, dtype=torch.float64)).to(dtype)
    for x_k in euler_maruyama(x, policy, P.diffusion, s_k, torch.full((steps,), ds, dtype=torch.float64),
                              generator=generator, observe=running):
        x = x_k
    if P.terminal_cost is not None:
        total = total + P.terminal_cost(x)
    loss = total.mean()
    info = {"path_cost": float(loss.detach())}
    if P.target is not None and sinkhorn_weight > 0:
        sd = sinkhorn_divergence(x, P.target.sample(n, generator).to(dtype))
        loss = loss + sinkhorn_weight * sd
        info["sinkhorn"] = float(sd.detach())
    return loss, info


def train_baseline(problem: ControlProblem, *, steps: int = 2000, particles: int = 256, sde_steps: int = 50,
                   lr: float = 1e-3, hidden: int = 128, layers: int = 3, scale: float = 1.0,
                   sinkhorn_weight: float = 10.0, train_obstacles: Optional[Sequence[Obstacle]] = None,
                   seed: int = 0, max_seconds: Optional[float] = None, dtype: torch.dtype = torch.float32,
                   clock: Callable[[], float] = time.perf_counter,
                   clip: float = 1.0, time_schedule: bool = False) -> tuple[NeuralPolicy, dict]:
    """Train :class:`NeuralPolicy` by back-propagation through rollouts (Adam, cosine decay, gradient clipping).

    Returns the policy and ``{"steps", "seconds", "history"}`` (seconds by ``clock``, which also times ``max_seconds``:
    ``time.process_time`` for a CPU-time budget). ``train_obstacles`` defaults to softplus
    surrogates of the problem's obstacles (the same as :class:`ControlObjective`'s). ``time_schedule`` (with
    ``max_seconds``): the warm-up + cosine schedule runs over the time budget (position ``steps * elapsed / max_seconds``,
    as ``probflux.train.fit(time_schedule=True)``), so a budget-limited run anneals; ``steps`` then only caps the steps.
    """
    from ..train import lr_factor

    if time_schedule and max_seconds is None:
        raise ValueError("time_schedule=True needs max_seconds (the schedule runs over that time)")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    policy = NeuralPolicy(problem.dim, problem.horizon, hidden, layers, scale).to(dtype)
    if train_obstacles is None:
        train_obstacles = smooth_obstacles(problem.obstacles)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    history, start, step = [], clock(), 0

    def position(k: int) -> int:
        return min(int(steps * (clock() - start) / max_seconds), steps) if time_schedule else k

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(position(k), steps, min(100, steps // 10), 0.05))
    while step < steps:
        loss, info = rollout_loss(problem, policy, particles, sde_steps, gen, train_obstacles, sinkhorn_weight, dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), clip)
        opt.step()
        sched.step()
        step += 1
        if step % 50 == 0:
            history.append({"step": step, "loss": float(loss.detach()), **info})
        if max_seconds is not None and clock() - start >= max_seconds:
            break
    return policy, {"steps": step, "seconds": clock() - start, "history": history}
