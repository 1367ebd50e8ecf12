"""Dynamics with prescribed marginals: probability-flow ODE and SDEs for any diffusion schedule."""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ._validation import TimeLike, prepare_inputs, validation_enabled
from .densities.base import TimeDensity
from .divfree import DivergenceFree

__all__ = ["Dynamics"]

Diffusion = Union[float, int, Callable[[Tensor], Union[Tensor, float]]]


class Dynamics(nn.Module):
    r"""The family of processes whose marginals are ``rho_t``: ``dX = b_t(X) dt + g_t dW``.

    .. math:: u = j/\rho, \qquad b = u + \tfrac{g_t^2}{2}\nabla\log\rho

    satisfies the Fokker–Planck equation of ``rho`` by construction (docs/mathematics.md, introduction). With a
    :class:`DivergenceFree` term the flux is ``j + div(rho S)``: same ``rho``, other dynamics.

    Args:
        density: a :class:`TimeDensity`.
        diffusion: ``g_t >= 0`` as a float, or a callable ``t: (N,) -> (N,)`` (or a float).
        divergence_free: optional :class:`DivergenceFree` with the density's ``dim``/``context_dim``.

    Methods ``log_prob, flux, velocity, score, drift`` take ``(t, x, context=None)`` like the density.

    >>> import probflux as pf
    >>> rho = pf.AutoregressiveMixture(2, 3, hidden=8, layers=2).double()
    >>> dyn = pf.Dynamics(rho, diffusion=0.5)
    >>> x = rho.sample(0.4, 3)
    >>> b = dyn.drift(0.4, x)                    # u + (g^2 / 2) grad log rho
    >>> bool((b - dyn.velocity(0.4, x) - 0.125 * dyn.score(0.4, x)).abs().max() < 1e-12)
    True
    """

    def __init__(self, density: TimeDensity, diffusion: Diffusion = 0.0, divergence_free: Optional[DivergenceFree] = None) -> None:
        super().__init__()
        if not isinstance(density, TimeDensity):
            raise TypeError(f"density must be a probflux.TimeDensity; got {type(density).__name__}")
        if callable(diffusion):
            self._g_fn: Optional[Callable] = diffusion
            self._g_const = None
        else:
            if isinstance(diffusion, bool) or not isinstance(diffusion, (float, int)):
                raise TypeError(f"diffusion must be a float or a callable t -> g_t; got {type(diffusion).__name__}")
            if not (float(diffusion) >= 0.0) or float(diffusion) == float("inf"):
                raise ValueError(f"diffusion must be a finite number >= 0; got {diffusion!r}")
            self._g_fn = None
            self._g_const = float(diffusion)
        if divergence_free is not None:
            if not isinstance(divergence_free, DivergenceFree):
                raise TypeError(f"divergence_free must be a probflux.DivergenceFree; got {type(divergence_free).__name__}")
            if divergence_free.dim != density.dim or divergence_free.context_dim != density.context_dim:
                raise ValueError(
                    f"divergence_free has dim={divergence_free.dim}, context_dim={divergence_free.context_dim} but the "
                    f"density has dim={density.dim}, context_dim={density.context_dim}"
                )
        self.density = density
        self.divergence_free = divergence_free

    @property
    def dim(self) -> int:
        return self.density.dim

    @property
    def context_dim(self) -> int:
        return self.density.context_dim

    def diffusion(self, t: Tensor) -> Tensor:
        """``g_t`` as a tensor of the shape of ``t`` (validated ``>= 0`` and finite)."""
        if self._g_fn is None:
            return torch.full_like(t, self._g_const)
        g = self._g_fn(t)
        g = torch.as_tensor(g, dtype=t.dtype, device=t.device)
        g = g.expand_as(t) if g.dim() == 0 else g
        if g.shape != t.shape:
            raise ValueError(f"diffusion(t) must return a scalar or shape {tuple(t.shape)}; got {tuple(g.shape)}")
        if validation_enabled() and not bool(((g >= 0) & torch.isfinite(g)).all()):
            raise ValueError(f"diffusion(t) must be finite and >= 0; got min {float(g.min()):g}")
        return g

    # ------------------------------------------------------------------ fields
    def log_prob(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``log rho_t(x)``, ``(N,)``."""
        return self.density.log_prob(t, x, context)

    def score(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``grad log rho_t(x)``, ``(N, D)``."""
        return self.density.score(t, x, context)

    # ``_velocity`` and ``_drift`` take inputs validated by ``prepare_inputs`` (t: (N,)); simulate calls them
    # in its inner loop. They reach the density through its one protected hook, ``_velocity_and_score``.
    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._velocity_and_score(t, x, ctx, need_score=False)[0]

    def _velocity_and_score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor], need_score: bool) -> tuple[Tensor, Optional[Tensor]]:
        need = need_score or self.divergence_free is not None
        u, score = self.density._velocity_and_score(t, x, ctx, need)
        if self.divergence_free is not None:
            u = u + self.divergence_free._velocity(t, x, ctx, score)
        return u, score

    def _drift(self, t: Tensor, x: Tensor, ctx: Optional[Tensor], sign: float = 1.0) -> Tensor:
        g = self.diffusion(t)
        u, score = self._velocity_and_score(t, x, ctx, need_score=bool((g != 0).any()))
        if score is None:
            return u
        return u + sign * 0.5 * (g * g).unsqueeze(-1) * score

    def velocity(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Probability-flow velocity ``u = j/rho`` (with the divergence-free part), ``(N, D)``."""
        return self._velocity(*prepare_inputs(self.density, t, x, context))

    def flux(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``j = rho u``, ``(N, D)``."""
        tt, xx, ctx = prepare_inputs(self.density, t, x, context)
        return self.density.log_prob(tt, xx, ctx).exp().unsqueeze(-1) * self._velocity(tt, xx, ctx)

    def drift(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """SDE drift ``b = u + (g_t^2/2) grad log rho``, ``(N, D)``."""
        return self._drift(*prepare_inputs(self.density, t, x, context))

    def as_sde(self, context: Optional[Tensor] = None) -> SDE:
        """An object for ``torchsde.sdeint(sde, x0, ts)``: Itô, diagonal noise, drift ``b`` and ``g_t``."""
        return SDE(self, context)


class SDE(nn.Module):
    """``torchsde`` adapter: ``f(t, y) = b_t(y)``, ``g(t, y) = g_t 1``; ``t`` is a 0-d tensor."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, dynamics: Dynamics, context: Optional[Tensor] = None) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.context = context

    def _t(self, t: Tensor, y: Tensor) -> Tensor:
        return torch.as_tensor(t, dtype=y.dtype, device=y.device).reshape(()).clamp(0.0, 1.0).expand(y.shape[0])

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        tt, yy, ctx = prepare_inputs(self.dynamics.density, self._t(t, y), y, self.context, name="y")
        return self.dynamics._drift(tt, yy, ctx)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.dynamics.diffusion(self._t(t, y)).unsqueeze(-1).expand_as(y)
