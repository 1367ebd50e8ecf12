r"""A Markov (Hawkes) mixture: fixed Gaussian components whose weights are intensities excited by the recent events.

.. math:: \rho(x \mid t, H) = \sum_{m=1}^M \frac{\lambda_m(t)}{\sum_n \lambda_n(t)}\, \mathcal N(x;\ \mu_m,
          \operatorname{diag} \sigma_m^2), \qquad
          \lambda_m(t) = e^{b_m + c_m t} + \sum_{q=1}^{Q} \sum_{j \in H} e^{\gamma_q - e^{\eta_q} a_j}
          \sum_{c=1}^M r_{jc}\, e^{W_{q, c m}},

with ``a_j = t - t_j`` the age of past event ``j`` and ``r_j = softmax_c(b_c + log N(x_j; mu_c, sigma_c))`` its
responsibilities under the static mixture. It is the spatial law of the next event of a multivariate Hawkes
process whose marks are the components: component ``c`` excites component ``m`` with kernel
``sum_q exp(gamma_q + W_qcm - exp(eta_q) a)`` — e.g. Neural STPP's Pinwheel, where an event on arm ``k`` triggers
events on arm ``k + 1`` (:func:`probflux.data.events.pinwheel_hawkes`). ``H`` is the newest ``k`` strictly
earlier events of the sequence, read from the rows of :func:`probflux.stpp.history_context`; ``c_m`` (zero at
start) lets the base rates trend over the window; every parameter (components included) is learned by maximum
likelihood.

Flux. The components do not move; only the weights vary in time, with exact rates
``d log lambda_m / dt = lambda_m' / lambda_m``, ``lambda_m' = c_m e^{b_m + c_m t} - sum_{q, j} e^{eta_q} kappa_q(a_j) (r_j e^{W_q})_m``.
It is a :class:`~probflux.densities.anchored_events.ComponentMixture`, so the exact ``"mixture"`` (or ``"kr"``)
flux of docs/mathematics.md §2/§3b applies: mass moves between the fixed components through their reference
marginals. At an event the context changes and the density jumps.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..densities.anchored_events import ComponentMixture
from ..densities.factorized import Params

__all__ = ["MarkovMixture", "kmeans_components"]

_LOG2PI = math.log(2 * math.pi)


def kmeans_components(x: Tensor, components: int, *, seed: int = 0, iters: int = 25,
                      min_scale: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """Initial ``(loc (M, D), log_scale (M, D), log_weight (M,))`` of ``components`` diagonal Gaussians from k-means
    (``scipy.cluster.vq.kmeans2``, ``++`` seeding) of ``x: (N, D)``: centroids, per-axis within-cluster sd (floored at
    ``min_scale``), log cluster fractions. Empty clusters get the overall sd and a weight of one point."""
    from scipy.cluster.vq import kmeans2

    xn = x.double().numpy()
    centroids, labels = kmeans2(xn, components, iter=iters, minit="++", seed=seed)
    lab = torch.as_tensor(labels)
    loc = torch.as_tensor(centroids, dtype=torch.float64)
    sd = x.double().std(0).expand(components, -1).clone()
    counts = torch.bincount(lab, minlength=components).double()
    for m in range(components):
        pts = x.double()[lab == m]
        if pts.shape[0] > 1:
            sd[m] = pts.std(0)
    return loc, sd.clamp_min(min_scale).log(), torch.log(counts.clamp_min(1.0) / counts.clamp_min(1.0).sum())


class MarkovMixture(ComponentMixture):
    """``M`` diagonal Gaussians with Hawkes-excited weights over the newest ``events`` past events (module docstring).

    >>> import torch, probflux as pf
    >>> from probflux.stpp.markov_mixture import MarkovMixture
    >>> rho = MarkovMixture(torch.randn(5, 2), torch.zeros(5, 2) - 1.0, torch.zeros(5), events=2).double()
    >>> _ = torch.nn.init.normal_(rho.W)  # excitations that differ between components (at W ∝ base, nothing moves)
    >>> ctx = torch.tensor([[0.3, 1.1, 1.0, 0.0, 0.5, 0.5, 1.0, 0.1, -1.0, 0.0]], dtype=torch.float64)
    >>> x = rho.sample(0.35, 6, ctx[0])
    >>> bool(pf.continuity_residual(rho, torch.full((6,), 0.35, dtype=torch.float64), x, ctx.expand(6, -1)).relative.max() < 1e-10)
    True

    Args:
        loc, log_scale: ``(M, D)`` initial components (e.g. :func:`kmeans_components`); log_weight: ``(M,)`` initial
            ``b`` (base log intensities, up to a constant). events: ``k`` history slots. Keyword-only: decays: initial
            rates ``e^{eta_q}`` in model time units (one per ``q``); excitation: initial ``e^{gamma_q}`` relative to the
            base rates' sum. flux, chunk_elements: see :class:`ComponentMixture`.
    """

    def __init__(self, loc: Tensor, log_scale: Tensor, log_weight: Tensor, events: int = 16, *,
                 decays: tuple[float, ...] = (10.0, 100.0, 1000.0), excitation: float = 1.0, flux: str = "mixture",
                 chunk_elements: int = 2**21) -> None:
        loc, log_scale, log_weight = (torch.as_tensor(v) for v in (loc, log_scale, log_weight))
        if loc.dim() != 2 or loc.shape != log_scale.shape or log_weight.shape != loc.shape[:1]:
            raise ValueError(f"loc and log_scale must be (M, D) and log_weight (M,); got {tuple(loc.shape)}, "
                             f"{tuple(log_scale.shape)}, {tuple(log_weight.shape)}")
        if isinstance(events, bool) or not isinstance(events, int) or events < 1:
            raise ValueError(f"events must be a positive integer; got {events!r}")
        if not decays or min(decays) <= 0:
            raise ValueError(f"decays must be positive rates; got {decays}")
        if not excitation > 0:
            raise ValueError(f"excitation must be positive; got {excitation}")
        M, D = loc.shape
        super().__init__(D, 2 + events * (D + 2), flux=flux, chunk_elements=chunk_elements)
        dt = torch.get_default_dtype()
        self.components, self.events = M, events
        self.loc = nn.Parameter(loc.to(dt).clone())
        self.log_scale = nn.Parameter(log_scale.to(dt).clone())
        lw = torch.log_softmax(log_weight.to(dt), 0)
        self.base = nn.Parameter(lw.clone())
        self.trend = nn.Parameter(torch.zeros(M, dtype=dt))
        Q = len(decays)
        self.log_decay = nn.Parameter(torch.log(torch.tensor(decays, dtype=dt)))
        self.gamma = nn.Parameter(torch.full((Q,), math.log(excitation), dtype=dt) + torch.log(torch.tensor(decays, dtype=dt)) / 2)
        self.W = nn.Parameter(lw.expand(Q, M, M).clone())  # excitation of m by c starts proportional to m's base weight

    # ------------------------------------------------------------------ parameters
    def _log_n(self, x: Tensor) -> Tensor:
        """``(..., M)`` component log-densities at ``x: (..., D)``."""
        z = (x.unsqueeze(-2) - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * z.pow(2).sum(-1) - self.log_scale.sum(-1) - 0.5 * self.dim * _LOG2PI

    def _intensity(self, t: Tensor, ctx: Tensor, tangent: bool) -> tuple[Tensor, Optional[Tensor]]:
        if ctx is None:
            raise ValueError(f"MarkovMixture needs a context (history_context rows of width {self.context_dim})")
        N, k, D = t.shape[0], self.events, self.dim
        slots = ctx[:, 2:].reshape(N, k, D + 2)
        present, xs = slots[..., 0] > 0.5, slots[..., 2:]
        raw_age = (t - ctx[:, 0])[:, None] + slots[..., 1]
        age = raw_age.clamp_min(0.0)  # (N, k); d age / dt = 1 where raw_age >= 0 (autograd's mask for clamp_min)
        r = torch.softmax(torch.log_softmax(self.base, 0) + self._log_n(xs), -1) * present[..., None].to(t.dtype)  # (N, k, M)
        rate = self.log_decay.exp()  # (Q,)
        kappa = torch.exp(self.gamma - rate * age[..., None])  # (N, k, Q)
        S = torch.einsum("nkq,nkc->nqc", kappa, r)  # (N, Q, M)
        E = self.W.exp()  # (Q, M, M)
        mu = torch.exp(self.base + self.trend * t[:, None])  # (N, M)
        lam = mu + torch.einsum("nqc,qcm->nm", S, E)
        if not tangent:
            return lam, None
        dS = torch.einsum("nkq,nkc->nqc", -rate * kappa * (raw_age >= 0).to(t.dtype)[..., None], r)
        return lam, self.trend * mu + torch.einsum("nqc,qcm->nm", dS, E)

    def _assemble(self, t: Tensor, ctx: Optional[Tensor], tangent: bool) -> tuple[Params, Optional[Params]]:
        lam, dlam = self._intensity(t, ctx, tangent)
        logits, loc, log_scale = torch.log(lam), self.loc.unsqueeze(0), self.log_scale.unsqueeze(0)
        if not tangent:
            return (logits, loc, log_scale), None
        zero = torch.zeros((), dtype=loc.dtype, device=loc.device)
        return (logits, loc, log_scale), (dlam / lam, zero.expand_as(loc), zero.expand_as(log_scale))

    isotropic = False

    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        def one(t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
            lam, _ = self._intensity(t, ctx, False)
            return torch.logsumexp(torch.log(lam) + self._log_n(x), -1) - torch.log(lam.sum(-1))
        return self._by_rows(one, t, x, ctx)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.components}, events={self.events}, decays={self.log_decay.numel()}"
