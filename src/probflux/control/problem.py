r"""The description of a stochastic optimal control / mean-field game problem, validated up front.

Physical time ``s in [0, T]``; the probflux model lives on ``t = s / T in [0, 1]``. If the model's
process is ``dX = b_m dt + g_m dW`` then ``Y_s = X_{s/T}`` solves ``dY = (b_m / T) ds + (g_m / sqrt(T)) dW_s``,
so a physical diffusion ``g(s)`` is the model diffusion ``g_m(t) = sqrt(T) g(T t)`` and the physical drift
is ``b_m / T``; time integrals of costs pick up ``ds = T dt``. The objective (docs/control.md) is

.. math:: \int_0^T E_{\rho_s}\big[\lambda_s |b_s - v_s|^2 + V(s, x) + \textstyle\sum \mathrm{MF}\big] ds
          + E_{\rho_T}[G] + E_{q_0}[-\log\rho_0] + E_{q_1}[-\log\rho_T]

with ``lambda_s = 1 / (2 g(s)^2)`` (``control_weight="kl"``, bridge problems) or a fixed number (``1/2`` for
the LQ benchmark; required when ``g = 0``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from .costs import MeanField, Obstacle
from .laws import Law, as_law

__all__ = ["ControlProblem"]

Field = Callable[[Tensor, Tensor], Tensor]


class ControlProblem:
    r"""A control problem in physical units (see the module doc for the objective and time rescaling).

    Args:
        dim: state dimension ``D``.
        diffusion: ``g >= 0`` as a number or a callable ``s: (N,) -> (N,)`` of physical time.
        base_drift: ``v(s, x)``: callable ``(N,), (N, D) -> (N, D)``, a constant vector ``(D,)``, or None (0).
        running_cost: ``V(s, x)``: callable ``(N,), (N, D) -> (N,)`` or None.
        terminal_cost: ``G(x)``: callable ``(N, D) -> (N,)`` or None.
        initial: the law of ``X_0``: a :class:`~probflux.control.Gaussian`/:class:`~probflux.control.GaussianMixture`,
            samples ``(N, D)`` or a log-density callable.
        target: the law ``X_T`` must reach (a bridge problem) in the same forms, or None.
        mean_field: a list of :class:`~probflux.control.MeanField` terms.
        obstacles: a list of :class:`~probflux.control.Obstacle` (part of the running cost).
        horizon: ``T > 0``.
        control_weight: ``"kl"`` (``1/(2 g^2)``) or a positive number.
    """

    def __init__(
        self,
        dim: int,
        diffusion: Union[float, Callable[[Tensor], Tensor]] = 1.0,
        base_drift: Union[None, Sequence[float], Tensor, Field] = None,
        running_cost: Optional[Field] = None,
        terminal_cost: Optional[Callable[[Tensor], Tensor]] = None,
        *,
        initial: Any,
        target: Any = None,
        mean_field: Sequence[MeanField] = (),
        obstacles: Sequence[Obstacle] = (),
        horizon: float = 1.0,
        control_weight: Union[str, float] = "kl",
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        self.dim = dim
        if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) or not (math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"horizon must be a finite number > 0; got {horizon!r}")
        self.horizon = float(horizon)

        if callable(diffusion):
            self._g_fn: Optional[Callable] = diffusion
            self._g_const: Optional[float] = None
            g_probe = torch.as_tensor(diffusion(torch.linspace(0, self.horizon, 5, dtype=torch.float64)))
            if not bool(torch.isfinite(g_probe).all()) or bool((g_probe < 0).any()):
                raise ValueError(f"diffusion(s) must be finite and >= 0 on [0, horizon]; got {g_probe.tolist()} at 5 points")
            self._g_zero = bool((g_probe == 0).any())
        else:
            if isinstance(diffusion, bool) or not isinstance(diffusion, (int, float)):
                raise TypeError(f"diffusion must be a number or a callable s -> g(s); got {type(diffusion).__name__}")
            if not (math.isfinite(diffusion) and diffusion >= 0):
                raise ValueError(f"diffusion g must be a finite number >= 0; got {diffusion!r}")
            self._g_fn, self._g_const = None, float(diffusion)
            self._g_zero = diffusion == 0

        if isinstance(control_weight, str):
            if control_weight != "kl":
                raise ValueError(f"control_weight must be 'kl' or a positive number; got {control_weight!r}")
            if self._g_zero:
                raise ValueError("control_weight='kl' (1/(2 g^2)) needs diffusion > 0; with g = 0 give a fixed positive control_weight")
            self.control_weight: Union[str, float] = "kl"
        else:
            number = isinstance(control_weight, (int, float)) and not isinstance(control_weight, bool)
            if not (number and math.isfinite(control_weight) and control_weight > 0):
                raise ValueError(f"control_weight must be 'kl' or a finite number > 0; got {control_weight!r}")
            self.control_weight = float(control_weight)

        if base_drift is None or callable(base_drift):
            self._v_fn, self._v_const = base_drift, None
        else:
            v = torch.as_tensor(base_drift, dtype=torch.float64).reshape(-1)
            if v.shape[0] != dim:
                raise ValueError(f"base_drift has {v.shape[0]} entries but the problem has dim={dim}")
            self._v_fn, self._v_const = None, v
        for name, fn in (("running_cost", running_cost), ("terminal_cost", terminal_cost)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None; got {type(fn).__name__}")
        self.running_cost, self.terminal_cost = running_cost, terminal_cost

        self.initial: Law = as_law(initial, dim, "initial")
        self.target: Optional[Law] = None if target is None else as_law(target, dim, "target")
        self.mean_field = list(mean_field)
        for k, m in enumerate(self.mean_field):
            if not isinstance(m, MeanField):
                raise TypeError(f"mean_field[{k}] must be a probflux.control.MeanField (Entropy, Congestion, InteractionKernel); "
                                f"got {type(m).__name__}")
        self.obstacles = list(obstacles)
        for k, o in enumerate(self.obstacles):
            if not isinstance(o, Obstacle):
                raise TypeError(f"obstacles[{k}] must be a probflux.control.Obstacle; got {type(o).__name__}")
            if o.dim != dim:
                raise ValueError(f"obstacles[{k}] is defined in {o.dim} dimensions but the problem has dim={dim}")
        self._probe_fields()

    def _probe_fields(self) -> None:
        """Call the user callables once on a small batch so shape errors surface here, not in training."""
        s = torch.zeros(3, dtype=torch.float64)
        x = torch.zeros(3, self.dim, dtype=torch.float64)
        if self._v_fn is not None:
            v = self._v_fn(s, x)
            if not isinstance(v, Tensor) or v.shape != (3, self.dim):
                raise ValueError(f"base_drift(s, x) must return (N, {self.dim}); got {getattr(v, 'shape', type(v))} for N=3")
        if self.running_cost is not None:
            V = self.running_cost(s, x)
            if not isinstance(V, Tensor) or V.shape != (3,):
                raise ValueError(f"running_cost(s, x) must return (N,); got {getattr(V, 'shape', type(V))} for N=3")
        if self.terminal_cost is not None:
            G = self.terminal_cost(x)
            if not isinstance(G, Tensor) or G.shape != (3,):
                raise ValueError(f"terminal_cost(x) must return (N,); got {getattr(G, 'shape', type(G))} for N=3")

    # ------------------------------------------------------------------ physical fields
    def diffusion(self, s: Tensor) -> Tensor:
        """Physical ``g(s)``, shape of ``s``."""
        if self._g_fn is None:
            return torch.full_like(s, self._g_const)
        return torch.as_tensor(self._g_fn(s), dtype=s.dtype, device=s.device).expand_as(s)

    def model_diffusion(self, t: Tensor) -> Tensor:
        """``g_m(t) = sqrt(T) g(T t)``: the diffusion of the model on ``t in [0, 1]``."""
        return math.sqrt(self.horizon) * self.diffusion(self.horizon * t)

    def base_drift(self, s: Tensor, x: Tensor) -> Tensor:
        """``v(s, x)``, ``(N, D)``."""
        if self._v_fn is not None:
            return self._v_fn(s, x)
        if self._v_const is not None:
            return self._v_const.to(x).expand_as(x)
        return torch.zeros_like(x)

    def control_lambda(self, s: Tensor) -> Tensor:
        """``lambda_s``: ``1/(2 g(s)^2)`` or the fixed weight, shape of ``s``."""
        if self.control_weight == "kl":
            return 0.5 / self.diffusion(s).pow(2)
        return torch.full_like(s, self.control_weight)

    def control_cost(self, s: Tensor, x: Tensor, b: Tensor) -> Tensor:
        """``lambda_s |b - v(s, x)|^2`` for a *physical* drift ``b: (N, D)`` → ``(N,)``."""
        return self.control_lambda(s) * (b - self.base_drift(s, x)).pow(2).sum(-1)

    def state_cost(self, s: Tensor, x: Tensor, obstacles: Optional[Sequence[Obstacle]] = None) -> Tensor:
        """``V(s, x) + sum_k obstacle_k(x)`` → ``(N,)``; ``obstacles`` replaces the problem's own list (e.g. by
        smooth surrogates for training, with the same regions)."""
        total = x.new_zeros(x.shape[0])
        if self.running_cost is not None:
            total = total + self.running_cost(s, x)
        for o in self.obstacles if obstacles is None else obstacles:
            total = total + o.cost(x)
        return total

    def inside_obstacle(self, x: Tensor) -> Tensor:
        """``(N,)`` bool: inside any obstacle."""
        out = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for o in self.obstacles:
            out = out | o.inside(x)
        return out

    def dynamics(self, density: Any, divergence_free: Any = None) -> Any:
        """A :class:`probflux.Dynamics` of ``density`` with this problem's model diffusion ``g_m``."""
        from ..dynamics import Dynamics

        if density.dim != self.dim:
            raise ValueError(f"density has dim={density.dim} but the problem has dim={self.dim}")
        if self._g_fn is None:
            return Dynamics(density, diffusion=math.sqrt(self.horizon) * self._g_const, divergence_free=divergence_free)
        return Dynamics(density, diffusion=self.model_diffusion, divergence_free=divergence_free)

    def __repr__(self) -> str:
        g = self._g_const if self._g_fn is None else "g(s)"
        return (f"ControlProblem(dim={self.dim}, g={g}, horizon={self.horizon}, control_weight={self.control_weight!r}, "
                f"initial={self.initial!r}, target={self.target!r}, mean_field={self.mean_field}, obstacles={len(self.obstacles)})")
