"""Divergence-free flux corrections ``div(rho S)`` with ``S`` antisymmetric (docs/mathematics.md §4)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ._validation import TimeLike, as_times, check_context, check_dtype, check_points
from .nn import MLP, SinusoidalEmbedding

__all__ = ["DivergenceFree"]


class DivergenceFree(nn.Module):
    r"""A learned antisymmetric matrix field ``S_t(x)`` whose flux ``div(rho S)`` leaves ``rho`` unchanged.

    ``(div M)_i = sum_j d_j M_ij``; since ``S`` is antisymmetric, ``div div(rho S) = 0``, so adding
    ``div(rho S)`` to any exact flux keeps the continuity equation. The velocity it adds is

    .. math:: u^{S}_i = \sum_j \big(\partial_j S_{ij} + S_{ij}\,\partial_j \log\rho\big),

    finite wherever the score is, and ``rho u^S`` vanishes where ``rho`` does. In 2-D,
    ``S = [[0, s], [-s, 0]]`` and ``j^S = perp-grad(rho s)``. The last layer starts at zero, so a new
    module adds nothing until trained. Cost: one forward pass and ``D`` tangent sweeps.

    Args:
        dim: ``D >= 2`` (in 1-D every divergence-free flux is constant, hence zero).
        hidden, layers: MLP width/depth. context_dim: conditioning size (must match the density's).
    """

    def __init__(self, dim: int, hidden: int = 128, *, layers: int = 3, context_dim: int = 0, time_features: int = 17,
                 max_frequency: float = 32.0) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2 (no divergence-free flux vanishes at infinity in 1-D); got {dim!r}")
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer; got {context_dim!r}")
        self.dim = dim
        self.context_dim = context_dim
        self.embed = SinusoidalEmbedding(time_features, max_frequency)
        self.net = MLP(time_features + context_dim + dim, dim * (dim - 1) // 2, hidden, layers, last_init_scale=0.0)
        iu = torch.triu_indices(dim, dim, offset=1)
        self.register_buffer("_iu", iu, persistent=False)

    def _matrix(self, flat: Tensor) -> Tensor:
        N, D = flat.shape[0], self.dim
        S = flat.new_zeros(N, D, D)
        S[:, self._iu[0], self._iu[1]] = flat
        return S - S.transpose(1, 2)

    def _inputs(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return torch.cat([self.embed(t)] + ([ctx] if ctx is not None else []) + [x], -1)

    def matrix(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``S_t(x)``: ``(N, D, D)`` antisymmetric."""
        check_points(x, self.dim)
        check_dtype(x, self.net.linears[0].weight.dtype, "x")
        tt = as_times(t, x.shape[0], x.dtype, x.device)
        ctx = check_context(context, self.context_dim, x.shape[0], x.dtype)
        return self._matrix(self.net(self._inputs(tt, x, ctx)))

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor], score: Tensor) -> Tensor:
        """Added velocity ``u^S``, ``(N, D)``, given ``score = grad log rho``."""
        inp = self._inputs(t, x, ctx)
        D = self.dim
        pad = inp.new_zeros(inp.shape[0], inp.shape[1] - D)
        e0 = torch.zeros_like(x)
        e0[:, 0] = 1
        flat, dflat, lin = self.net.jvp(inp, torch.cat([pad, e0], -1))
        div = self._matrix(dflat)[:, :, 0]
        for j in range(1, D):
            ej = torch.zeros_like(x)
            ej[:, j] = 1
            div = div + self._matrix(MLP.tangent(torch.cat([pad, ej], -1), lin))[:, :, j]
        S = self._matrix(flat)
        return div + (S @ score.unsqueeze(-1)).squeeze(-1)
