"""Autoregressive mixtures: ``rho_t(x) = prod_i p_i(x_i | x_<i, t)`` from a MADE network (docs/mathematics.md §3)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn import MLP, SinusoidalEmbedding, made_degrees
from . import mixture1d as m1
from .base import TimeDensity
from .factorized import _exclusive_cumsum, _exclusive_reverse_cumsum

__all__ = ["AutoregressiveMixture", "FLUXES"]

FLUXES = ("kr", "sigmoid")
Params = tuple[Tensor, Tensor, Tensor]  # logits, loc, log_scale: (N, D, K) each


class AutoregressiveMixture(TimeDensity):
    r"""Autoregressive density whose conditionals are 1-D logistic mixtures with parameters from a
    MADE-masked MLP of ``(time embedding, context, x_<i)``.

    Two exact fluxes (docs/mathematics.md §3):

    * ``flux="kr"`` — Knothe–Rosenblatt velocity, the triangular transport that keeps every conditional
      CDF value fixed:  ``u_i = -(dF_i/dt + sum_{j<i} dF_i/dx_j u_j) / p_i``. One forward-mode pass in
      ``t`` plus ``D-1`` tangent sweeps in ``x`` (each the cost of a plain forward pass). Bounded where
      ``rho`` is small; the default.
    * ``flux="sigmoid"`` — the paper's last-coordinate flux with a logistic-sigmoid correction,
      ``j_i = [prod_{e>i} sigma'(x_e)] (sigma(x_i) d/dt rho_<i - d/dt[rho_<i F_i])``: one forward-mode
      pass, but velocities grow like ``sigma'/p`` in the tails.

    Both velocities are assembled from log-space pieces (``(dF/dt)/p`` etc.), never ``j/rho``.

    >>> import torch, probflux as pf
    >>> rho = pf.AutoregressiveMixture(3, 2, hidden=12, layers=2).double()
    >>> x = rho.sample(0.7, 5)
    >>> u = rho.cdf(0.7, x)                       # Rosenblatt transform, uniform under rho_0.7
    >>> bool((rho.icdf(0.7, u) - x).abs().max() < 1e-8)
    True

    Args:
        dim: ``D``. components: logistics per coordinate. Keyword-only: hidden/layers: MADE width/depth.
        context_dim: size of the optional conditioning vector. max_frequency / time_features: the
        sinusoidal time embedding. max_log_scale: bound of the log-scales. flux: ``"kr"`` or ``"sigmoid"``.
    """

    has_rosenblatt = True

    def __init__(
        self,
        dim: int,
        components: int = 16,
        *,
        hidden: int = 256,
        layers: int = 4,
        context_dim: int = 0,
        max_frequency: float = 32.0,
        time_features: int = 17,
        max_log_scale: float = 7.0,
        flux: str = "kr",
    ) -> None:
        super().__init__(dim, context_dim)
        if flux not in FLUXES:
            raise ValueError(f"flux must be one of {FLUXES}; got {flux!r}")
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be a positive integer; got {components!r}")
        self.flux_name = flux
        self.components = components
        self.family = m1.Logistic
        self.max_log_scale = float(max_log_scale)
        self.embed = SinusoidalEmbedding(time_features, max_frequency)
        cond = time_features + context_dim
        in_deg, hid_deg = made_degrees(dim, cond, hidden)
        out_deg = torch.arange(1, dim + 1).repeat_interleave(3 * components)
        self.net = MLP(cond + dim, 3 * components * dim, hidden, layers, in_degrees=in_deg, out_degrees=out_deg, hidden_degrees=hid_deg)
        with torch.no_grad():
            b = self.net.linears[-1].bias.view(dim, 3, components)
            b[:, 1].normal_()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.components}, flux={self.flux_name!r}, context_dim={self.context_dim}"

    # ------------------------------------------------------------------ parameters
    def _net_input(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        parts = [self.embed(t)] + ([ctx] if ctx is not None else []) + [x]
        return torch.cat(parts, -1)

    def _split(self, out: Tensor, tangent: bool = False, raw: Optional[Tensor] = None) -> Params:
        o = out.view(out.shape[0], self.dim, 3, self.components)
        B = self.max_log_scale
        if tangent:
            log_scale = o[:, :, 2] * (1 - torch.tanh(raw / B) ** 2)
        else:
            log_scale = B * torch.tanh(o[:, :, 2] / B)
        return o[:, :, 0], o[:, :, 1], log_scale

    def _raw_log_scale(self, out: Tensor) -> Tensor:
        return out.view(out.shape[0], self.dim, 3, self.components)[:, :, 2]

    def _params(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Params:
        """Conditional mixture parameters, ``(N, D, K)`` each; row ``i`` depends on ``x_<i`` only."""
        return self._split(self.net(self._net_input(t, x, ctx)))

    # ------------------------------------------------------------------ density
    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return m1.log_prob(x, *self._params(t, x, ctx), self.family).sum(-1)

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        de = self.embed.derivative(t)
        zc = [torch.zeros_like(ctx)] if ctx is not None else []
        inp = self._net_input(t, x, ctx)
        dinp = torch.cat([de] + zc + [torch.zeros_like(x)], -1)
        out, dout, lin = self.net.jvp(inp, dinp)
        raw = self._raw_log_scale(out)
        params = self._split(out)
        terms = m1.mixture_terms(x, *params, self.family)
        A = m1.cdf_tangent_over_pdf(terms, *self._split(dout, True, raw))  # (dF_i/dt) / p_i
        if self.flux_name == "kr":
            # forward substitution, exact after D-1 sweeps; each sweep clipped (m1.clamp_velocity) so that a
            # velocity beyond the floating range where rho underflows cannot overflow the next sweep
            u = m1.clamp_velocity(-A)
            pad = torch.zeros_like(inp[:, : inp.shape[1] - self.dim])
            for _ in range(self.dim - 1):
                dparams = self._split(MLP.tangent(torch.cat([pad, u], -1), lin), True, raw)
                u = m1.clamp_velocity(-(A + m1.cdf_tangent_over_pdf(terms, *dparams)))
            return u
        # sigmoid-corrected last-coordinate flux, divided by rho in log space
        dlogp = m1.log_prob_tangent(terms, *self._split(dout, True, raw))
        dlog_rho_before = _exclusive_cumsum(dlogp, -1)  # d/dt log rho_<i
        log_p = terms.log_pdf
        log_F = torch.logsumexp(terms.log_w + terms.component_log_cdf(), -1)
        log_S = torch.logsumexp(terms.log_w + terms.component_log_sf(), -1)
        ls_pos, ls_neg = F.logsigmoid(x), F.logsigmoid(-x)
        left = log_F < math.log(0.5)
        # sigma - F  =  e^{log sigma} - e^{log F}  =  e^{log(1-F)} - e^{log(1-sigma)}
        log_gap, sign = m1.log_diff_exp(torch.where(left, ls_pos, log_S), torch.where(left, log_F, ls_neg))
        G = _exclusive_reverse_cumsum(ls_pos + ls_neg - log_p, -1)  # sum_{e>i} log sigma'(x_e) - log p_e
        return m1.clamp_velocity(sign * m1.capped_exp(G + log_gap - log_p) * dlog_rho_before - m1.capped_exp(G) * A)

    # ------------------------------------------------------------------ sampling
    def _icdf(self, t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
        x = torch.zeros_like(u)
        for i in range(self.dim):  # row i of the parameters depends on x_<i only
            logits, loc, log_scale = self._params(t, x, ctx)
            x[:, i] = m1.icdf(u[:, i], logits[:, i], loc[:, i], log_scale[:, i], self.family)
        return x

    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        u = torch.rand(t.shape[0], self.dim, dtype=t.dtype, device=t.device)
        return self._icdf(t, u, ctx)

    def _conditional_cdf(self, t: Tensor, x_cond: Tensor, x_eval: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        params = self._params(t, x_cond, ctx)
        return m1.log_cdf(x_eval, *params, self.family).exp(), m1.log_prob(x_eval, *params, self.family)
