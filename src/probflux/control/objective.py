r"""The simulation-free control objective: an objective callable for :func:`probflux.train.fit`.

Every term is an expectation under the model's own exact marginals (docs/mathematics.md §7): times ``t ~ U[0, 1]``,
``x ~ rho_t`` by implicit reparameterisation — no SDE is simulated. In physical units (``s = T t``)

* ``control  = T E_t E_{rho_t}[lambda_s |b_m/T - v(s, x)|^2]``   (``b_m`` the model's SDE drift),
* ``state    = T E_t E_{rho_t}[V(s, x) + obstacle penalties]``,
* ``<mf>     = T E_t E_{rho_t}[mean-field integrand]``            (``log rho_t`` exact; pairs drawn at the same ``t``),
* ``terminal = E_{rho_1}[G]``,
* ``initial_nll = E_{q0}[-log rho_0]``, ``target_nll = E_{q1}[-log rho_1]`` on the batch rows at ``t = 0`` / ``t = 1``
  (a log-density law enters as ``KL(rho || q)`` from model samples instead; a :class:`PinnedMixture` drops
  ``initial_nll``, its ``rho_0`` being exact, and the bridges of :mod:`~probflux.control.bridge` drop both terms
  they pin).

The running costs can be switched on in stages (the paper's schedule): endpoint likelihoods from step 0,
the control term from ``control_start``, state/mean-field/terminal costs from ``running_start``, each
ramped in linearly over ``ramp`` steps.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from .._random import draw_seed, seeded
from ..dynamics import Dynamics
from ..objectives import Batch, Terms, ramp_factor, sample_path_points
from .bridge import pins
from .costs import Obstacle, mean_field_values, smooth_obstacles
from .laws import LogDensity
from .problem import ControlProblem

__all__ = ["ControlObjective", "endpoint_points", "check_dynamics"]


def check_dynamics(problem: ControlProblem, dynamics: Dynamics) -> None:
    """Raise if ``dynamics`` does not have the problem's dimension and model diffusion ``g_m``."""
    if not isinstance(dynamics, Dynamics):
        raise TypeError(f"dynamics must be a probflux.Dynamics (see ControlProblem.dynamics); got {type(dynamics).__name__}")
    if dynamics.dim != problem.dim:
        raise ValueError(f"dynamics has dim={dynamics.dim} but the problem has dim={problem.dim}")
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    want, got = problem.model_diffusion(t), dynamics.diffusion(t)
    if not torch.allclose(want, got.to(want), rtol=1e-6, atol=1e-9):
        raise ValueError(f"dynamics has diffusion {got.tolist()} at t={t.tolist()}, but the problem's model diffusion "
                         f"sqrt(T) g(T t) is {want.tolist()}; build it with problem.dynamics(density)")


def endpoint_points(problem: ControlProblem, n: int, generator: Optional[torch.Generator] = None):
    """Training points for :func:`probflux.train.fit`: ``n`` samples of ``initial`` at ``t = 0`` and of
    ``target`` at ``t = 1`` (laws that can be sampled). With none, ``n`` placeholder rows at ``t = 0`` whose
    positions are never read (the objective then draws everything from the model)."""
    from types import SimpleNamespace

    ts, xs = [], []
    for time, law in ((0.0, problem.initial), (1.0, problem.target)):
        if law is not None and law.can_sample:
            xs.append(law.sample(n, generator))
            ts.append(torch.full((n,), time, dtype=torch.float64))
    if not xs:
        return SimpleNamespace(t=torch.zeros(n, dtype=torch.float64), x=torch.zeros(n, problem.dim, dtype=torch.float64), context=None)
    return SimpleNamespace(t=torch.cat(ts), x=torch.cat(xs), context=None)


class ControlObjective:
    """``objective(dynamics, batch) -> terms`` for :func:`probflux.train.fit` (module doc).

    Args:
        problem: the :class:`ControlProblem`.
        samples: ``(t, x)`` draws per step for the path terms. terminal_samples: draws of ``rho_1`` for ``G``.
        train_obstacles: obstacles used in training (default: each of the problem's obstacles as a
            ``softplus`` surrogate of the same region; a hard indicator has zero gradient).
        endpoint_weight: weight of ``initial_nll`` and ``target_nll``.
        control_start, running_start, ramp: the staged schedule, in optimiser steps.
    """

    def __init__(self, problem: ControlProblem, samples: int = 256, terminal_samples: Optional[int] = None, *,
                 train_obstacles: Optional[Sequence[Obstacle]] = None, endpoint_weight: float = 1.0,
                 control_start: int = 0, running_start: int = 0, ramp: int = 0) -> None:
        if not isinstance(problem, ControlProblem):
            raise TypeError(f"problem must be a ControlProblem; got {type(problem).__name__}")
        for name, v in (("samples", samples), ("terminal_samples", terminal_samples or 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        for name, v in (("control_start", control_start), ("running_start", running_start), ("ramp", ramp)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0; got {v!r}")
        if not float(endpoint_weight) >= 0:
            raise ValueError(f"endpoint_weight must be >= 0; got {endpoint_weight!r}")
        self.problem, self.samples = problem, samples
        self.terminal_samples = terminal_samples or samples
        self.train_obstacles = smooth_obstacles(problem.obstacles) if train_obstacles is None else list(train_obstacles)
        self.endpoint_weight = float(endpoint_weight)
        self.control_start, self.running_start, self.ramp = control_start, running_start, ramp
        self._checked: set[int] = set()

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        if id(dynamics) not in self._checked:
            check_dynamics(self.problem, dynamics)
            self._checked.add(id(dynamics))
        P, T = self.problem, self.problem.horizon
        f_control = ramp_factor(batch.step, self.control_start, self.ramp)
        f_running = ramp_factor(batch.step, self.running_start, self.ramp)
        zero = batch.x.new_zeros(())
        terms: Terms = {}
        loss = zero

        # endpoint laws
        pinned = pins(dynamics.density)
        for (name, time, law), exact in zip((("initial_nll", 0.0, P.initial), ("target_nll", 1.0, P.target)), pinned):
            if law is None or exact:  # a pinned endpoint is the law itself: its NLL is a constant
                continue
            if isinstance(law, LogDensity):  # KL(rho || q) from exact model samples
                with seeded(draw_seed(batch.generator), batch.x.device):
                    x = dynamics.density.rsample(time, self.terminal_samples)
                tt = torch.full((x.shape[0],), time, dtype=x.dtype)
                value = (dynamics.log_prob(tt, x) - law.log_prob(x)).mean()
                name = name.replace("_nll", "_kl")
            else:
                rows = (batch.t - time).abs() < 1e-9
                if not bool(rows.any()):
                    continue
                value = -dynamics.log_prob(batch.t[rows], batch.x[rows]).mean()
            terms[name] = value.detach()
            loss = loss + self.endpoint_weight * value

        # path terms from exact samples of rho_t
        if f_control > 0 or f_running > 0:
            t, x, _ = sample_path_points(dynamics, batch, self.samples)
            s = T * t
            if f_control > 0:
                b = dynamics.drift(t, x) / T
                control = T * P.control_cost(s, x, b).mean()
                terms["control"] = control.detach()
                loss = loss + f_control * control
            if f_running > 0:
                if P.running_cost is not None or self.train_obstacles:
                    state = T * P.state_cost(s, x, self.train_obstacles).mean()
                    terms["state"] = state.detach()
                    loss = loss + f_running * state
                def pairs() -> torch.Tensor:  # a second exact sample at the same times
                    with seeded(draw_seed(batch.generator), batch.x.device):
                        return dynamics.density.rsample(t)

                for key, v in mean_field_values(P.mean_field, x, lambda: dynamics.log_prob(t, x), pairs).items():
                    value = T * v.mean()
                    terms[key] = value.detach()
                    loss = loss + f_running * value
                if P.terminal_cost is not None:
                    with seeded(draw_seed(batch.generator), batch.x.device):
                        x1 = dynamics.density.rsample(1.0, self.terminal_samples)
                    terminal = P.terminal_cost(x1).mean()
                    terms["terminal"] = terminal.detach()
                    loss = loss + f_running * terminal
        terms["loss"] = loss
        return terms

    def __repr__(self) -> str:
        return (f"ControlObjective(samples={self.samples}, control_start={self.control_start}, "
                f"running_start={self.running_start}, ramp={self.ramp})")
