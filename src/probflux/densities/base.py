"""The interface every time-dependent density of probflux implements."""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import TimeLike, as_times, check_context, check_count, prepare_inputs, validation_enabled

__all__ = ["TimeDensity", "check_chunk_size"]


def check_chunk_size(chunk_size: object) -> int:
    """``chunk_size`` as a positive int; ``ValueError`` naming it otherwise."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")
    return chunk_size


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
    ``kinetic_energy(t, n)`` ``(n,)``          ``|u_t(x)|^2`` at ``x ~ rho_t`` (mean: ``E_{rho_t}|u_t|^2``)
    ======================  ==============  ==================================================

    **Capabilities are declared**, not discovered: ``has_rosenblatt`` says whether ``cdf``/``icdf`` (and
    the generic implicit reparameterisation built on them) exist; without it they raise an error naming
    the class before any work is done. ``kinetic_energy`` has a generic Monte-Carlo default (``rsample``
    then ``velocity``) that a family may replace by a cheaper exact estimator (:class:`FlowDensity` does).

    **Large batches run in bounded memory.** ``log_prob``, ``velocity``, ``flux``, ``score`` and ``cdf``
    take a keyword ``chunk_size``: the points are evaluated ``chunk_size`` rows at a time and the rows
    written into one ``(N, ...)`` result, identical to the unchunked call. ``chunk_size=None`` (default)
    chunks automatically by :attr:`chunk_size` (4096 rows) when no graph is being built (under
    ``torch.no_grad()``), so peak memory is one chunk's intermediates plus the result, independent of ``N``;
    with gradients enabled it evaluates in one piece unless a ``chunk_size`` is given (chunking then
    bounds the forward pass but not the graph autograd keeps for the backward pass).

    **Subclass hooks** work on validated tensors (``t: (N,)``, ``x: (N, D)``, ``ctx: (N, C)`` or None):
    ``_log_prob``, ``_velocity``, ``_sample``, and with ``has_rosenblatt = True`` ``_conditional_cdf`` and
    ``_icdf``; ``_score`` and ``_reparameterize`` have generic defaults. Code outside the density uses its
    public methods plus one documented protected hook, :meth:`_velocity_and_score`, which
    :class:`~probflux.Dynamics` (and through it :func:`~probflux.simulate`) calls on inputs it has
    validated itself with :func:`~probflux._validation.prepare_inputs`, so that an integrator's inner
    loop does not validate every step twice.

    >>> import torch, probflux as pf
    >>> rho = pf.FactorizedMixture(2, 3, hidden=8).double()
    >>> x = rho.sample(0.5, 4)
    >>> [tuple(v.shape) for v in (rho.log_prob(0.5, x), rho.flux(0.5, x), rho.cdf(0.5, x))]
    [(4,), (4, 2), (4, 2)]
    >>> rho.has_rosenblatt, pf.FlowDensity(2, 1, hidden=8).has_rosenblatt
    (True, False)
    """

    dim: int
    context_dim: int
    chunk_size: int = 4096
    """Rows per chunk of the automatic chunked path (evaluation without a graph); an instance may set its own."""
    has_rosenblatt: bool = False
    """Whether ``cdf``/``icdf`` exist (the subclass implements ``_conditional_cdf`` and ``_icdf``)."""

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
    def dtype(self) -> torch.dtype:
        """The floating dtype of the parameters; inputs must have it."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return next(self.parameters()).device

    _dtype = dtype  # the older spelling, still used by callers outside the core
    _device = device

    def _prepare(self, t: TimeLike, x: Tensor, context: Optional[Tensor], name: str = "x") -> tuple[Tensor, Tensor, Optional[Tensor]]:
        return prepare_inputs(self, t, x, context, name)

    def _require_rosenblatt(self, method: str) -> None:
        if not self.has_rosenblatt:
            raise NotImplementedError(f"{type(self).__name__} has no Rosenblatt transform (has_rosenblatt is False), "
                                      f"so {method} is not available{self._no_rosenblatt_hint}")

    _no_rosenblatt_hint: str = "; use sample/rsample"

    def _prepare_times(self, t: TimeLike, n: Optional[int], context: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        if n is not None:
            n = check_count(n)
        tt = as_times(t, None, self.dtype, self.device)  # type, rank and range of t first
        if isinstance(t, Tensor) and t.dim() == 1:
            if n is not None and n != tt.shape[0]:
                raise ValueError(f"n={n} does not match t of shape {tuple(t.shape)}; give n={tt.shape[0]} or omit n")
        else:
            if n is None:
                raise ValueError("n is required when t is a scalar")
            tt = tt.repeat(n)
        ctx = check_context(context, self.context_dim, tt.shape[0], self.dtype)
        return tt, ctx

    def _chunked(self, fn: Callable[..., Tensor], t: Tensor, x: Tensor, ctx: Optional[Tensor], chunk_size: Optional[int]) -> Tensor:
        """``fn(t, x, ctx)`` on validated ``t: (N,)``, ``x: (N, D)``, ``ctx: (N, C) | None``, by chunks of rows.

        ``chunk_size=None``: chunks of :attr:`chunk_size` rows when no graph is built, else one piece.
        Each chunk's rows are written into one preallocated result (no list of pieces, no ``cat``) without
        a graph; with gradients enabled the pieces are concatenated so the result stays differentiable.
        """
        if chunk_size is None:
            size = self.chunk_size if not torch.is_grad_enabled() else None
        else:
            size = check_chunk_size(chunk_size)
        n = x.shape[0]
        if size is None or n <= size:
            return fn(t, x, ctx)
        grad = torch.is_grad_enabled()
        out: Optional[Tensor] = None
        pieces = []
        for start in range(0, n, size):
            rows = slice(start, start + size)
            piece = fn(t[rows], x[rows], None if ctx is None else ctx[rows])
            if grad:
                pieces.append(piece)
                continue
            if out is None:
                out = piece.new_empty((n,) + tuple(piece.shape[1:]))
            out[rows] = piece
        return torch.cat(pieces) if grad else out  # type: ignore[return-value]

    # ------------------------------------------------------------------ public API
    def log_prob(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None, *, chunk_size: Optional[int] = None) -> Tensor:
        """``log rho_t(x)``. ``t: () or (N,)``, ``x: (N, D)`` → ``(N,)``. ``chunk_size``: see the class docstring."""
        return self._chunked(self._log_prob, *self._prepare(t, x, context), chunk_size)

    def velocity(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None, *, chunk_size: Optional[int] = None) -> Tensor:
        """Probability-flow velocity ``u = j/rho``. ``(N, D)``, finite where ``rho`` underflows.

        The mixtures compute it from log-space ratios; where the exact value exceeds the floating range
        (between narrow, far-apart components) it is clipped to ``±e^cap``, see
        :func:`probflux.densities.mixture1d.clamp_velocity`."""
        return self._chunked(self._velocity, *self._prepare(t, x, context), chunk_size)

    def flux(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None, *, chunk_size: Optional[int] = None) -> Tensor:
        """Probability flux ``j_t(x) = rho_t(x) u_t(x)``. ``(N, D)``."""
        return self._chunked(self._flux, *self._prepare(t, x, context), chunk_size)

    def _flux(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._log_prob(t, x, ctx).exp().unsqueeze(-1) * self._velocity(t, x, ctx)

    def score(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None, *, chunk_size: Optional[int] = None) -> Tensor:
        """``grad_x log rho_t(x)``. ``(N, D)``."""
        return self._chunked(self._score, *self._prepare(t, x, context), chunk_size)

    def cdf(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None, *, chunk_size: Optional[int] = None) -> Tensor:
        """Rosenblatt transform: conditional CDFs ``F_i(x_i | x_<i)``, ``(N, D)``, uniform under ``rho_t``.

        Only where ``has_rosenblatt`` (otherwise ``NotImplementedError`` naming the class)."""
        self._require_rosenblatt("cdf")
        return self._chunked(lambda t, x, c: self._cdf(t, x, c)[0], *self._prepare(t, x, context), chunk_size)

    @torch.no_grad()
    def icdf(self, t: TimeLike, u: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Inverse Rosenblatt transform, ``u: (N, D)`` in ``(0, 1)`` → ``x: (N, D)`` (no gradient; needs ``has_rosenblatt``)."""
        self._require_rosenblatt("icdf")
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
        """Exact samples ``(n, D)`` whose gradients flow to the parameters (implicit reparameterisation,
        docs/mathematics.md §6)."""
        tt, ctx = self._prepare_times(t, n, context)
        return self._rsample(tt, ctx)

    def _rsample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        with torch.no_grad():
            x_hat = self._sample(t.detach(), None if ctx is None else ctx.detach())
        return self._reparameterize(t, x_hat, ctx)

    def reparameterize(self, t: TimeLike, x_hat: Tensor, context: Optional[Tensor] = None) -> Tensor:
        r"""Attach implicit-reparameterisation gradients to given samples ``x_hat: (N, D)``.

        Returns ``x`` equal to ``x_hat`` in value with ``dx/dtheta = -(dF/dx)^{-1} dF/dtheta`` (``F`` the
        Rosenblatt transform), computed by ``D`` fixed-point passes of
        ``x <- x_hat - (F(x) - stopgrad F(x)) / stopgrad p(x)``.
        """
        tt, xx, ctx = self._prepare(t, x_hat, context, name="x_hat")
        return self._reparameterize(tt, xx.detach(), ctx)

    def kinetic_energy(self, t: TimeLike, n: Optional[int] = None, context: Optional[Tensor] = None) -> Tensor:
        r"""``|u_t(x)|^2`` at fresh draws ``x ~ rho_t``, ``(n,)``, differentiable in the parameters.

        Its mean is an unbiased estimate of ``E_{rho_t} |u_t|^2`` (the kinetic energy of the probability
        flow at ``t``). ``t``, ``n`` and ``context`` as in :meth:`rsample`. Generic default: ``rsample``
        then ``velocity``; a family may override it with a cheaper exact estimator of the same law.
        """
        tt, ctx = self._prepare_times(t, n, context)
        x = self._rsample(tt, ctx)
        return self._velocity(tt, x, ctx).pow(2).sum(-1)

    # ------------------------------------------------------------------ the protected hook used by Dynamics
    def _velocity_and_score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor], score: bool) -> tuple[Tensor, Optional[Tensor]]:
        """``u_t(x)`` and, when ``score``, ``grad log rho_t(x)`` (else None), both ``(N, D)``, on validated inputs.

        The one protected entry point that code outside the density (:class:`~probflux.Dynamics`) calls;
        a wrapper (:class:`Conditioned`) overrides it to encode its context once for both fields.
        """
        return self._velocity(t, x, ctx), (self._score(t, x, ctx) if score else None)

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
        """``F_i(x_eval_i | x_cond_<i)`` and the matching log-pdfs, ``(N, D)`` each (``has_rosenblatt`` only)."""
        self._require_rosenblatt("the conditional CDF (and with it the generic reparameterisation)")
        raise NotImplementedError(f"{type(self).__name__} declares has_rosenblatt but does not implement _conditional_cdf")

    def _icdf(self, t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} declares has_rosenblatt but does not implement _icdf")

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
