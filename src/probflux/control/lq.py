r"""Linear-quadratic control with a closed form (Riccati), the exactness benchmark.

``dX = b ds + g dW`` on ``[0, T]``, cost ``E[int_0^T (1/2)|b|^2 + (q/2)|X|^2 ds + (r/2)|X_T|^2]``, ``X_0 ~ N(0, sigma0^2 I_D)``.
With ``V(s, x) = (1/2) P(s) |x|^2 + c(s)`` the HJB equation
``-dV/ds = min_b [(1/2)|b|^2 + b . grad V] + (q/2)|x|^2 + (g^2/2) lap V`` gives ``b* = -P x`` and

.. math:: -P' = q - P^2,\quad P(T) = r;\qquad -c' = (g^2 D / 2) P,\quad c(T) = 0,

so the optimal cost is ``(1/2) P(0) E|X_0|^2 + (g^2 D / 2) int_0^T P ds``. In backward time ``tau = T - s``,
with ``k = sqrt(q)``: ``P = k (r + k tanh(k tau)) / (k + r tanh(k tau))`` and
``int_0^T P ds = log(cosh(k T) + (r / k) sinh(k T))`` (``q = 0``: ``P = r / (1 + r tau)``, integral ``log(1 + r T)``).
The optimal marginals are ``N(0, Sigma(s) I)`` with ``Sigma' = -2 P Sigma + g^2``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .laws import Gaussian
from .problem import ControlProblem

__all__ = ["riccati", "riccati_integral", "lq_optimal_cost", "lq_problem"]


def _check(q: float, r: float) -> None:
    if not (q >= 0 and r >= 0 and math.isfinite(q) and math.isfinite(r)):
        raise ValueError(f"q and r must be finite and >= 0; got q={q!r}, r={r!r}")


def riccati(s: Tensor, q: float, r: float, horizon: float = 1.0) -> Tensor:
    """``P(s)`` solving ``-P' = q - P^2``, ``P(T) = r``, at physical times ``s`` (any shape)."""
    _check(q, r)
    tau = horizon - s
    if q == 0:
        return r / (1 + r * tau)
    k = math.sqrt(q)
    th = torch.tanh(k * tau)
    return k * (r + k * th) / (k + r * th)


def riccati_integral(q: float, r: float, horizon: float = 1.0) -> float:
    """``int_0^T P(s) ds``."""
    _check(q, r)
    if q == 0:
        return math.log1p(r * horizon)
    k = math.sqrt(q)
    return math.log(math.cosh(k * horizon) + (r / k) * math.sinh(k * horizon))


def lq_optimal_cost(dim: int, g: float = 1.0, q: float = 1.0, r: float = 3.0, sigma0: float = 1.0, horizon: float = 1.0) -> float:
    """``(1/2) P(0) D sigma0^2 + (g^2 D / 2) int_0^T P ds`` for ``X_0 ~ N(0, sigma0^2 I_D)``."""
    P0 = float(riccati(torch.tensor(0.0, dtype=torch.float64), q, r, horizon))
    return 0.5 * P0 * dim * sigma0**2 + 0.5 * g**2 * dim * riccati_integral(q, r, horizon)


def lq_problem(dim: int, g: float = 1.0, q: float = 1.0, r: float = 3.0, sigma0: float = 1.0, horizon: float = 1.0) -> ControlProblem:
    """The LQ benchmark as a :class:`ControlProblem` (control weight ``1/2``, no target)."""
    _check(q, r)
    return ControlProblem(
        dim, diffusion=g,
        running_cost=lambda s, x: 0.5 * q * x.pow(2).sum(-1),
        terminal_cost=lambda x: 0.5 * r * x.pow(2).sum(-1),
        initial=Gaussian(torch.zeros(dim), sigma0**2),
        horizon=horizon, control_weight=0.5,
    )
