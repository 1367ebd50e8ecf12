r"""Mixtures of many isotropic Gaussian kernels anchored at data points, with an exact flux.

.. math:: \rho_t(x \mid c) = \sum_{m=1}^M \pi_m(t, c)\, \mathcal N\big(x;\ \mu_m,\ s_m(t, c)^2 I\big)

An isotropic Gaussian is a product of 1-D Gaussians, so such a mixture is a :class:`FactorizedMixture` with other
parameters: its exact fluxes (``"mixture"`` and ``"kr"``, docs/mathematics.md §2 and §3b) hold for weights and
scales that vary with time, and its Rosenblatt transform gives exact samples and implicit reparameterisation.
:class:`ComponentMixture` is that machinery for any parameterisation (a subclass supplies the component
parameters and their time derivatives) with every evaluation chunked over the points, so the ``O(N M D)`` work
of ``N`` points against ``M`` kernels never holds more than ``chunk_elements`` numbers per intermediate tensor
(in evaluation; a training graph keeps all chunks). :class:`KernelMixture` anchors the kernels at given points
(training events): a kernel density estimate whose weights, bandwidths and centres are learned, with the weights
and bandwidths optionally varying in time and context through a low-rank modulation.

Flux. With ``flux="mixture"`` (default) the velocity is the responsibility-weighted affine field
``sum_m r_m(x) (s_m'/s_m)(x - mu_m)`` (each kernel dilates about its centre; for constant weights this is the
whole flux, ``j = sum_m pi_m N_m (s_m'/s_m)(x - mu_m)``) plus the mass-transfer term of the time-varying weights
through the reference marginals; ``flux="kr"`` is the Knothe–Rosenblatt flux of the same density. Both are exact
(the contract test checks the continuity residual to round-off); they differ only in the dynamics.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..nn import MLP, SinusoidalEmbedding
from . import mixture1d as m1
from .base import TimeDensity
from .factorized import FLUXES, FactorizedMixture, Params

__all__ = ["ComponentMixture", "KernelMixture", "split_anchors", "knn_bandwidth"]


def _positive_int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer; got {v!r}")
    return v


class ComponentMixture(FactorizedMixture):
    """A Gaussian mixture whose component parameters come from :meth:`_params_and_rates` of a subclass.

    Reuses :class:`FactorizedMixture`'s exact fluxes, sampling and Rosenblatt transforms (Gaussian family), and
    evaluates them in chunks of rows so that an intermediate ``(rows, K, D)`` tensor holds at most
    ``chunk_elements`` numbers. Subclasses implement ``_params(t, ctx)`` and ``_params_and_rates(t, ctx)``
    returning logits ``(N, K)``, loc ``(N, K, D)`` and log-scale ``(N, K, D)`` (broadcastable views are fine)
    and their exact time derivatives, and set ``self.components``.
    """

    def __init__(self, dim: int, context_dim: int = 0, *, flux: str = "mixture", chunk_elements: int = 2**21) -> None:
        TimeDensity.__init__(self, dim, context_dim)  # not FactorizedMixture's: no time MLP of its own
        if flux not in FLUXES:
            raise ValueError(f"flux must be one of {FLUXES}; got {flux!r}")
        self.flux_name = flux
        self.family_name = "gaussian"
        self.family = m1.get_family("gaussian")
        self.chunk_elements = _positive_int("chunk_elements", chunk_elements)

    # ------------------------------------------------------------------ chunking
    def _rows(self) -> int:
        return max(1, self.chunk_elements // (self.components * self.dim))

    def _by_rows(self, fn: Callable[..., Tensor], t: Tensor, *args: Optional[Tensor]) -> Tensor:
        n, rows = t.shape[0], self._rows()
        if n <= rows:
            return fn(t, *args)
        parts = [fn(t[i:i + rows], *(None if a is None else a[i:i + rows] for a in args)) for i in range(0, n, rows)]
        return torch.cat(parts, 0)

    @staticmethod
    def _full(params: Params, n: int) -> Params:
        logits, loc, log_scale = params
        k, d = loc.shape[-2], loc.shape[-1]
        return logits.expand(n, k), loc.expand(n, k, d), log_scale.expand(n, k, d)

    def _assemble(self, t: Tensor, ctx: Optional[Tensor], tangent: bool) -> tuple[Params, Optional[Params]]:
        """The subclass's parameters at ``t: (N,)`` and, with ``tangent``, their time derivatives (else None)."""
        raise NotImplementedError

    def _params(self, t: Tensor, ctx: Optional[Tensor]) -> Params:
        return self._assemble(t, ctx, False)[0]

    def _params_and_rates(self, t: Tensor, ctx: Optional[Tensor]) -> tuple[Params, Params]:
        params, rates = self._assemble(t, ctx, True)
        assert rates is not None
        return params, rates

    def _params_full(self, t: Tensor, ctx: Optional[Tensor]) -> Params:
        return self._full(self._params(t, ctx), t.shape[0])

    def _params_and_rates_full(self, t: Tensor, ctx: Optional[Tensor]) -> tuple[Params, Params]:
        p, r = self._params_and_rates(t, ctx)
        return self._full(p, t.shape[0]), self._full(r, t.shape[0])

    # ------------------------------------------------------------------ the FactorizedMixture hooks, chunked
    isotropic: bool = True
    """Whether every component's scale is the same along all axes (then ``log_prob`` works on ``(N, K)`` squared
    distances, not ``(N, K, D)`` standardised coordinates)."""

    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        def one(t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
            logits, loc, log_scale = self._params(t, ctx)
            if not self.isotropic:
                _, log_f = self._component_log_pdf(x, loc, log_scale)
                return torch.logsumexp(torch.log_softmax(logits, -1) + log_f.sum(-1), -1)
            ls = log_scale[..., 0]
            d2 = (x.unsqueeze(1) - loc).pow(2).sum(-1)  # differences, not |x|^2 - 2 x.c + |c|^2: exact for tiny kernels
            D = self.dim
            log_f = -0.5 * d2 * torch.exp(-2 * ls) - D * ls - 0.5 * D * math.log(2 * math.pi)
            return torch.logsumexp(torch.log_softmax(logits, -1) + log_f, -1)
        return self._by_rows(one, t, x, ctx)

    def _score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        def one(t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
            logits, loc, log_scale = self._params(t, ctx)
            z, log_f = self._component_log_pdf(x, loc, log_scale)
            post = torch.softmax(torch.log_softmax(logits, -1) + log_f.sum(-1), -1)
            return (post.unsqueeze(-1) * self.family.dlog_pdf(z) / log_scale.exp()).sum(1)
        return self._by_rows(one, t, x, ctx)

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        def one(t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
            params, rates = self._params_and_rates_full(t, ctx)
            if self.flux_name == "kr":
                return self._velocity_kr(params, rates, x)
            return self._velocity_mixture(params, rates, x)
        return self._by_rows(one, t, x, ctx)

    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        def one(t: Tensor, ctx: Optional[Tensor]) -> Tensor:
            logits, loc, log_scale = self._params_full(t, ctx)
            k = torch.multinomial(torch.softmax(logits, -1), 1)
            idx = k.unsqueeze(-1).expand(t.shape[0], 1, self.dim)
            mu, s = loc.gather(1, idx).squeeze(1), log_scale.gather(1, idx).squeeze(1).exp()
            return mu + s * torch.randn_like(mu)
        return self._by_rows(one, t, ctx)

    def _conditional_cdf(self, t: Tensor, x_cond: Tensor, x_eval: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        rows = self._rows()
        parts = [self._conditional(self._params_full(t[i:i + rows], None if ctx is None else ctx[i:i + rows]),
                                   x_cond[i:i + rows], x_eval[i:i + rows]) for i in range(0, t.shape[0], rows)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _cdf(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return self._conditional_cdf(t, x, x, ctx)

    def _icdf(self, t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
        def one(t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
            return self._icdf_from_params(self._params_full(t, ctx), u)
        return self._by_rows(one, t, u, ctx)

    def _reparameterize(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        def one(t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
            return self._reparameterize_from_params(self._params_full(t, ctx), x_hat)
        return self._by_rows(one, t, x_hat, ctx)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.components}, flux={self.flux_name!r}, context_dim={self.context_dim}"


def _softplus_rate(raw: Tensor, draw: Tensor) -> Tensor:
    return torch.sigmoid(raw) * draw


class KernelMixture(ComponentMixture):
    r"""``M`` isotropic Gaussian kernels anchored at ``centres``, with learned weights, bandwidths and centres.

    .. math:: \pi(t, c) = \mathrm{softmax}(b + A\,g(t, c)), \qquad
              \log s_m(t, c) = \log s_{\min} + \mathrm{softplus}(r_m + B_m \cdot g(t, c))

    with ``g = MLP(time embedding, context)`` of size ``rank`` (``rank=0``: weights and bandwidths constant in
    time, no network); ``A, B: (M, rank)`` start at zero, so the initial density is the kernel density estimate
    with bandwidth ``bandwidth`` (per kernel when a tensor is given). The centres start at ``centres`` and are
    learned (``learn_centres``), but do not move in time. The floor ``min_scale`` keeps kernels from collapsing
    onto repeated data points.

    Fit it on points that are not its centres (a kernel at a fitted point drives its bandwidth to the floor):
    :func:`split_anchors` draws the centres from the training points and returns the rest.

    >>> import torch, probflux as pf
    >>> from probflux.densities import KernelMixture
    >>> rho = KernelMixture(torch.randn(200, 2), bandwidth=0.3, rank=2, hidden=8).double()
    >>> x = rho.sample(0.3, 5)
    >>> bool(pf.continuity_residual(rho, 0.3, x).relative.max() < 1e-10)
    True

    Args:
        centres: ``(M, D)`` initial kernel centres. Keyword-only: bandwidth: initial bandwidth, a float or
            ``(M,)``. min_scale: bandwidth floor. rank: size of the time/context modulation (0: none).
        hidden, layers: the modulation MLP. context_dim: size of the context. learn_centres: whether the centres
        are parameters. flux: ``"mixture"`` or ``"kr"``. chunk_elements: see :class:`ComponentMixture`.
    """

    def __init__(self, centres: Tensor, *, bandwidth: float | Tensor = 0.1, min_scale: float = 1e-3, rank: int = 4,
                 hidden: int = 32, layers: int = 2, context_dim: int = 0, learn_centres: bool = True,
                 max_frequency: float = 8.0, time_features: int = 9, flux: str = "mixture",
                 chunk_elements: int = 2**21) -> None:
        centres = torch.as_tensor(centres)
        if centres.dim() != 2 or centres.shape[0] < 1 or not torch.isfinite(centres).all():
            raise ValueError(f"centres must be a finite (M, D) tensor with M >= 1; got shape {tuple(centres.shape)}")
        super().__init__(centres.shape[1], context_dim, flux=flux, chunk_elements=chunk_elements)
        if not (isinstance(min_scale, (int, float)) and min_scale > 0):
            raise ValueError(f"min_scale must be a positive number; got {min_scale!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank must be a non-negative integer; got {rank!r}")
        M = centres.shape[0]
        bw = torch.as_tensor(bandwidth, dtype=torch.get_default_dtype()).expand(M).clone()
        if not bool((bw > min_scale).all()):
            raise ValueError(f"bandwidth must exceed min_scale={min_scale} for every kernel")
        self.components, self.rank, self.min_scale = M, rank, float(min_scale)
        centres = centres.to(torch.get_default_dtype())
        if learn_centres:
            self.centres = nn.Parameter(centres.clone())
        else:
            self.register_buffer("centres", centres.clone())
        self.logits = nn.Parameter(torch.zeros(M))
        # softplus^{-1}(log bw - log s_min)
        self.raw_scale = nn.Parameter(torch.log(torch.expm1(torch.log(bw / min_scale))))
        if rank:
            self.embed = SinusoidalEmbedding(time_features, max_frequency)
            self.net = MLP(time_features + context_dim, rank, hidden, layers, last_init_scale=1.0)
            self.A = nn.Parameter(torch.zeros(M, rank))
            self.B = nn.Parameter(torch.zeros(M, rank))

    def _modulation(self, t: Tensor, ctx: Optional[Tensor], tangent: bool) -> tuple[Tensor, Optional[Tensor]]:
        e = self.embed(t)
        inp = e if ctx is None else torch.cat([e, ctx], -1)
        if not tangent:
            return self.net(inp), None
        de = self.embed.derivative(t)
        dinp = de if ctx is None else torch.cat([de, torch.zeros_like(ctx)], -1)
        g, dg, _ = self.net.jvp(inp, dinp)
        return g, dg

    def _assemble(self, t: Tensor, ctx: Optional[Tensor], tangent: bool) -> tuple[Params, Optional[Params]]:
        logits, raw = self.logits.unsqueeze(0), self.raw_scale.unsqueeze(0)  # (1, M)
        dlogits = draw = None
        if self.rank:
            g, dg = self._modulation(t, ctx, tangent)
            logits, raw = logits + g @ self.A.T, raw + g @ self.B.T
            if tangent:
                dlogits, draw = dg @ self.A.T, dg @ self.B.T
        log_scale = (math.log(self.min_scale) + F.softplus(raw)).unsqueeze(-1)  # (·, M, 1): isotropic
        loc = self.centres.unsqueeze(0)
        params = (logits, loc, log_scale.expand(*log_scale.shape[:2], self.dim))
        if not tangent:
            return params, None
        zero = torch.zeros((), dtype=loc.dtype, device=loc.device)
        if dlogits is None:
            rates = (zero.expand(1, self.components), zero.expand_as(loc), zero.expand(1, self.components, self.dim))
        else:
            dls = _softplus_rate(raw, draw).unsqueeze(-1).expand(-1, -1, self.dim)
            rates = (dlogits, zero.expand_as(loc), dls)
        return params, rates

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, min_scale={self.min_scale}"


def split_anchors(x: Tensor, kernels: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Draw ``kernels`` rows of ``x: (N, D)`` as centres; returns ``(centre_index, rest_index)`` (long tensors).

    The rest are the points to fit the mixture on (see :class:`KernelMixture`). ``kernels`` must leave at least one
    point to fit."""
    n = x.shape[0]
    kernels = _positive_int("kernels", kernels)
    if kernels >= n:
        raise ValueError(f"kernels={kernels} must be fewer than the {n} points (some must remain to fit on)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:kernels], perm[kernels:]


def knn_bandwidth(centres: Tensor, k: int = 8, chunk: int = 4096) -> Tensor:
    """Distance of each centre ``(M, D)`` to its ``k``-th nearest other centre, ``(M,)`` — an adaptive initial
    bandwidth for :class:`KernelMixture` (repeated points give 0; clamp before use)."""
    k = min(_positive_int("k", k), centres.shape[0] - 1)
    if k < 1:
        return torch.ones(centres.shape[0], dtype=centres.dtype)
    out = []
    for i in range(0, centres.shape[0], chunk):
        d = torch.cdist(centres[i:i + chunk], centres)
        out.append(d.topk(k + 1, largest=False).values[:, -1])
    return torch.cat(out)
