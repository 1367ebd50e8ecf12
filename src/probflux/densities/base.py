"""The interface every time-dependent density of probflux implements."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import TimeLike, as_times, check_context, check_count, check_dtype, check_points, validation_enabled

__all__ = ["TimeDensity"]


class TimeDensity(nn.Module):
    r"""A density ``rho_t(x)`` on ``R^D``, ``t in [0, 1]``, with an exact probability flux.

    Subclasses guarantee the continuity equation ``d rho/dt + div j = 0`` for every parameter value.
    Public methods validate their input and accept ``t`` as a float, a 0-d tensor or shape ``(N,)``;
    ``x`` is ``(N, D)``; ``context`` is ``(N, C)`` or ``(C,)`` when the model has ``context_dim = C > 0``.

    ======================  ==============  ==================================================
    method                  returns         meaning
    ======================  ==============  ==================================================
    ``log_prob(t, x)``      ``(N,)``        ``log rho_t(x)``
    ``flux(t, x)``          ``(N, D)``      ``j_t(x) = rho_t(x) u_t(x)``
    ``velocity(t, x)``      ``(N, D)``      ``u_t(x) = j_t(x)/rho_t(x)``, computed in log space
    ``score(t, x)``         ``(N, D)``      ``grad_x log rho_t(x)``
    ``sample(t, n)``        ``(n, D)``      exact samples, no gradient
    ``rsample(t, n)``       ``(n, D)``      exact samples with implicit reparameterisation
    ``cdf(t, x)``           ``(N, D)``      Rosenblatt transform ``F_i(x_i | x_<i)``
    ``icdf(t, u)``          ``(N, D)``      its inverse (``u`` uniform gives samples)
    ======================  ==============  ==================================================

    Subclasses implement ``_log_prob``, ``_velocity``, ``_sample``, ``_cdf`` and ``_icdf`` on validated
    tensors (``t: (N,)``); ``_score`` and ``_reparameterize`` have generic defaults.
    """

    dim: int
    context_dim: int

    def __init__(self, dim: int, context_dim: int = 0) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer; got {context_dim!r}")
        self.dim = dim
        self.context_dim = context_dim

    # ------------------------------------------------------------------ helpers
    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _prepare(self, t: TimeLike, x: Tensor, context: Optional[Tensor], name: str = "x") -> tuple[Tensor, Tensor, Optional[Tensor]]:
        check_points(x, self.dim, name)
        check_dtype(x, self._dtype, name)
        n = x.shape[0]
        tt = as_times(t, n, x.dtype, x.device)
        ctx = check_context(context, self.context_dim, n, x.dtype)
        return tt, x, ctx

    def _prepare_times(self, t: TimeLike, n: Optional[int], context: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        if n is not None:
            n = check_count(n)
        tt = as_times(t, None, self._dtype, self._device)  # type, rank and range of t first
        if isinstance(t, Tensor) and t.dim() == 1:
            if n is not None and n != tt.shape[0]:
                raise ValueError(f"n={n} does not match t of shape {tuple(t.shape)}; give n={tt.shape[0]} or omit n")
        else:
            if n is None:
                raise ValueError("n is required when t is a scalar")
            tt = tt.repeat(n)
        ctx = check_context(context, self.context_dim, tt.shape[0], self._dtype)
        return tt, ctx

    # ------------------------------------------------------------------ public API
    def log_prob(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``log rho_t(x)``. ``t: () or (N,)``, ``x: (N, D)`` → ``(N,)``."""
        return self._log_prob(*self._prepare(t, x, context))

    def velocity(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Probability-flow velocity ``u = j/rho``. ``(N, D)``, finite where ``rho`` underflows."""
        return self._velocity(*self._prepare(t, x, context))

    def flux(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Probability flux ``j_t(x) = rho_t(x) u_t(x)``. ``(N, D)``."""
        tt, xx, ctx = self._prepare(t, x, context)
        return self._log_prob(tt, xx, ctx).exp().unsqueeze(-1) * self._velocity(tt, xx, ctx)

    def score(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``grad_x log rho_t(x)``. ``(N, D)``."""
        return self._score(*self._prepare(t, x, context))

    def cdf(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Rosenblatt transform: conditional CDFs ``F_i(x_i | x_<i)``, ``(N, D)``, uniform under ``rho_t``."""
        return self._cdf(*self._prepare(t, x, context))[0]

    @torch.no_grad()
    def icdf(self, t: TimeLike, u: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Inverse Rosenblatt transform, ``u: (N, D)`` in ``(0, 1)`` → ``x: (N, D)`` (no gradient)."""
        tt, uu, ctx = self._prepare(t, u, context, name="u")
        if validation_enabled() and bool(((uu < 0) | (uu > 1)).any()):
            raise ValueError("u must lie in [0, 1]")
        return self._icdf(tt, uu, ctx)

    @torch.no_grad()
    def sample(self, t: TimeLike, n: Optional[int] = None, context: Optional[Tensor] = None) -> Tensor:
        """Exact samples of ``rho_t``: ``(n, D)``. With ``t: (N,)``, one sample per time (``n = N``)."""
        tt, ctx = self._prepare_times(t, n, context)
        return self._sample(tt, ctx)

    def rsample(self, t: TimeLike, n: Optional[int] = None, context: Optional[Tensor] = None) -> Tensor:
        """Exact samples whose gradients flow to the parameters (implicit reparameterisation, DESIGN §6)."""
        tt, ctx = self._prepare_times(t, n, context)
        with torch.no_grad():
            x_hat = self._sample(tt.detach(), None if ctx is None else ctx.detach())
        return self._reparameterize(tt, x_hat, ctx)

    def reparameterize(self, t: TimeLike, x_hat: Tensor, context: Optional[Tensor] = None) -> Tensor:
        r"""Attach implicit-reparameterisation gradients to given samples ``x_hat: (N, D)``.

        Returns ``x`` equal to ``x_hat`` in value with ``dx/dtheta = -(dF/dx)^{-1} dF/dtheta`` (``F`` the
        Rosenblatt transform), computed by ``D`` fixed-point passes of
        ``x <- x_hat - (F(x) - stopgrad F(x)) / stopgrad p(x)``.
        """
        tt, xx, ctx = self._prepare(t, x_hat, context, name="x_hat")
        return self._reparameterize(tt, xx.detach(), ctx)

    # ------------------------------------------------------------------ subclass hooks
    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def _cdf(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Conditional CDFs ``F_i(x_i | x_<i)`` and conditional log-pdfs, both ``(N, D)``."""
        return self._conditional_cdf(t, x, x, ctx)

    def _conditional_cdf(self, t: Tensor, x_cond: Tensor, x_eval: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """``F_i(x_eval_i | x_cond_<i)`` and the matching log-pdfs, ``(N, D)`` each."""
        raise NotImplementedError

    def _icdf(self, t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def _score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            xx = x if x.requires_grad else x.detach().requires_grad_(True)
            lp = self._log_prob(t, xx, ctx)
            (g,) = torch.autograd.grad(lp.sum(), xx, create_graph=create)
        return g

    def _reparameterize(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        # F_i is evaluated at the detached x_hat_i but conditioned on the differentiable x_<i, so
        # dx_i = -(dF_i/dtheta + sum_{j<i} dF_i/dx_j dx_j) / p_i: exact after D passes.
        x = x_hat
        tiny = torch.finfo(x_hat.dtype).tiny
        for _ in range(self.dim):
            Fc, logp = self._conditional_cdf(t, x, x_hat, ctx)
            x = x_hat - (Fc - Fc.detach()) / logp.detach().exp().clamp_min(tiny)
        return x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"
