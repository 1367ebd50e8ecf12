"""Train a probflux model on a control problem with the generic trainer :func:`probflux.train.fit`.

``fit`` is data-driven; here its "data" are the endpoint samples (``initial`` at ``t = 0``, ``target`` at
``t = 1``), which is exactly what the endpoint-likelihood terms consume, while the path terms draw their
own exact samples of ``rho_t``. So the control solver inherits the trainer's schedule, clipping, EMA,
determinism, checkpoints and ``max_seconds`` budget instead of duplicating them.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import torch

from ..densities.factorized import FactorizedMixture
from ..train import FitResult, TrainConfig, fit
from .laws import Gaussian, GaussianMixture
from .objective import ControlObjective, endpoint_points
from .pinned import PinnedMixture
from .problem import ControlProblem

__all__ = ["default_density", "solve", "farthest_points"]


def _diagonal(law: Any) -> bool:
    if not isinstance(law, (Gaussian, GaussianMixture)):
        return False
    covs = law.components[2]
    return bool((covs - torch.diag_embed(torch.diagonal(covs, dim1=-2, dim2=-1))).abs().max() <= 1e-12)


def farthest_points(x: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` rows of ``x: (N, D)`` by farthest-point sampling from the row nearest the mean (covers separated modes)."""
    idx = [int((x - x.mean(0)).norm(dim=-1).argmin())]
    d = (x - x[idx[0]]).norm(dim=-1)
    for _ in range(k - 1):
        idx.append(int(d.argmax()))
        d = torch.minimum(d, (x - x[idx[-1]]).norm(dim=-1))
    return x[idx]


def default_density(problem: ControlProblem, components: int = 8, hidden: int = 64, layers: int = 3,
                    loc_scale: float = 1.0, pin: bool = True, max_frequency: float = 8.0, target_init: bool = True,
                    seed: int = 0, **kwargs: Any):
    """A :class:`PinnedMixture` (exact ``rho_0``) when the initial law is a diagonal Gaussian (mixture) and
    ``pin``, else a Gaussian :class:`~probflux.FactorizedMixture` (``rho_0`` then learned from ``initial_nll``).
    With ``target_init`` and a target that can be sampled, the pinned components start on straight lines to
    ``K`` farthest-point samples of the target (an initialisation only; the objective decides the paths)."""
    if pin and _diagonal(problem.initial):
        K0 = problem.initial.components[1].shape[0]
        K = max(K0, components - components % K0)
        model = PinnedMixture(problem.initial, components=K, hidden=hidden, layers=layers, loc_scale=loc_scale,
                              max_frequency=max_frequency, **kwargs)
        if target_init and problem.target is not None and problem.target.can_sample:
            pts = problem.target.sample(2000, torch.Generator().manual_seed(seed))
            model.init_endpoints(farthest_points(pts, K) if K > 1 else pts.mean(0, keepdim=True))
        return model
    return FactorizedMixture(problem.dim, components=components, hidden=hidden, layers=layers, family="gaussian",
                             max_frequency=max_frequency, **kwargs)


def solve(problem: ControlProblem, density: Optional[Any] = None, *, objective: Optional[ControlObjective] = None,
          config: Optional[TrainConfig] = None, seed: int = 0, endpoint_samples: int = 20000,
          max_seconds: Optional[float] = None, progress: bool = False, callback: Any = None, clock: Any = None,
          time_schedule: bool = False, **train_overrides: Any) -> FitResult:
    """Fit ``density`` (default :func:`default_density`) to ``problem``; returns :class:`probflux.train.FitResult`
    whose ``model`` is a :class:`probflux.Dynamics` with the problem's model diffusion.

    ``train_overrides`` replace fields of ``config`` (default ``TrainConfig(device="cpu")``), e.g. ``steps=500, lr=3e-3``.
    ``time_schedule`` (with ``max_seconds``): the warm-up + cosine learning-rate schedule runs over the time budget
    (``probflux.train.fit``), so a budget-limited run anneals instead of stopping at the schedule's start.
    """
    torch.manual_seed(seed)
    if density is None:
        density = default_density(problem)
    dynamics = problem.dynamics(density)
    objective = objective or ControlObjective(problem)
    cfg = replace(config or TrainConfig(device="cpu"), **train_overrides)
    data = endpoint_points(problem, endpoint_samples, torch.Generator().manual_seed(seed))
    cfg = replace(cfg, batch_size=min(cfg.batch_size, data.t.shape[0]))
    extra = {} if clock is None else {"clock": clock}  # e.g. time.process_time: a CPU-time budget on a shared machine
    return fit(dynamics, objective, data, config=cfg, seed=seed, progress=progress, max_seconds=max_seconds, callback=callback,
               time_schedule=time_schedule, **extra)
