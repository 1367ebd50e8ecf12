"""A density whose conditioning vector is first passed through a learnable encoder."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .._validation import TimeLike
from .base import TimeDensity

__all__ = ["Conditioned"]


class Conditioned(TimeDensity):
    r"""``rho_t(x | c) = inner_t(x | encoder(c))`` — learn the conditioning features with the density.

    The encoder sees only the context ``c``, never ``t`` or ``x``, so for a fixed ``c`` the pair
    ``(rho, j)`` of the inner density still satisfies the continuity equation exactly: the density evolves
    continuously in ``t`` while ``c`` is held fixed, and jumps only when ``c`` changes (for event data:
    when a new event enters the history, as in Neural STPP's Jump CNF).

    Capabilities are the inner density's: ``has_rosenblatt`` and :meth:`kinetic_energy` (a flow's fast
    estimator included) are forwarded.

    >>> import torch, probflux as pf
    >>> inner = pf.FlowDensity(2, 1, hidden=8, context_dim=3)
    >>> rho = pf.Conditioned(inner, torch.nn.Linear(5, 3))
    >>> c = torch.randn(4, 5)
    >>> tuple(rho.log_prob(0.5, rho.sample(0.5, 4, c), c).shape), tuple(rho.kinetic_energy(0.5, 4, c).shape)
    ((4,), (4,))

    Args:
        density: the inner :class:`TimeDensity`; its ``context_dim`` must equal ``encoder.out_features``.
        encoder: a module mapping ``c: (N, C_in)`` to ``(N, density.context_dim)``; it must have integer
            attributes ``in_features`` and ``out_features``.
    """

    def __init__(self, density: TimeDensity, encoder: nn.Module) -> None:
        if not isinstance(density, TimeDensity):
            raise TypeError(f"density must be a probflux TimeDensity; got {type(density).__name__}")
        c_in, c_out = getattr(encoder, "in_features", None), getattr(encoder, "out_features", None)
        if not isinstance(c_in, int) or not isinstance(c_out, int):
            raise TypeError(f"encoder must be an nn.Module with integer in_features and out_features; got {type(encoder).__name__}")
        if c_out != density.context_dim:
            raise ValueError(f"encoder.out_features={c_out} does not match density.context_dim={density.context_dim}")
        super().__init__(density.dim, c_in)
        self.density = density
        self.encoder = encoder

    @property
    def has_rosenblatt(self) -> bool:  # type: ignore[override]
        return self.density.has_rosenblatt

    @property
    def _no_rosenblatt_hint(self) -> str:  # type: ignore[override]
        return self.density._no_rosenblatt_hint

    def kinetic_energy(self, t: TimeLike, n: Optional[int] = None, context: Optional[Tensor] = None) -> Tensor:
        """The inner density's :meth:`~TimeDensity.kinetic_energy` at the encoded context, ``(n,)``."""
        tt, ctx = self._prepare_times(t, n, context)
        return self.density.kinetic_energy(tt, context=self._c(ctx))

    def _c(self, ctx: Optional[Tensor]) -> Optional[Tensor]:
        return None if ctx is None else self.encoder(ctx)

    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self.density._log_prob(t, x, self._c(ctx))

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self.density._velocity(t, x, self._c(ctx))

    def _velocity_and_score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor], score: bool) -> tuple[Tensor, Optional[Tensor]]:
        return self.density._velocity_and_score(t, x, self._c(ctx), score)

    def _score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self.density._score(t, x, self._c(ctx))

    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self.density._sample(t, self._c(ctx))

    def _cdf(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return self.density._cdf(t, x, self._c(ctx))

    def _conditional_cdf(self, t: Tensor, x_cond: Tensor, x_eval: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return self.density._conditional_cdf(t, x_cond, x_eval, self._c(ctx))

    def _icdf(self, t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self.density._icdf(t, u, self._c(ctx))

    def _reparameterize(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self.density._reparameterize(t, x_hat, self._c(ctx))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim} -> {self.density.context_dim}"
