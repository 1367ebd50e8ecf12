"""Factorized mixtures: ``rho_t(x) = sum_k w_k(t) prod_d f_kd(t, x_d)`` (docs/mathematics.md §2), fully parallel."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..nn import MLP, SinusoidalEmbedding
from . import mixture1d as m1
from .base import TimeDensity

__all__ = ["FactorizedMixture", "FLUXES"]

FLUXES = ("kr", "mixture")

Params = tuple[Tensor, Tensor, Tensor]  # logits (N, K), loc (N, K, D), log_scale (N, K, D)


def _exclusive_cumsum(a: Tensor, dim: int) -> Tensor:
    return torch.cumsum(a, dim) - a


def _exclusive_reverse_cumsum(a: Tensor, dim: int) -> Tensor:
    return torch.flip(torch.cumsum(torch.flip(a, [dim]), dim), [dim]) - a


class FactorizedMixture(TimeDensity):
    r"""Mixture of products of 1-D logistics or Gaussians whose parameters depend on time (and context).

    .. math:: \rho_t(x) = \sum_{k=1}^K w_k(t) \prod_{d=1}^D \frac{1}{s_{kd}(t)}\,\phi\Big(\frac{x_d-\mu_{kd}(t)}{s_{kd}(t)}\Big)

    Weights, means and log-scales come from an MLP of a sinusoidal time embedding (plus context).
    One network pass with a forward-mode tangent in ``t`` per velocity call, for either exact flux:

    * ``flux="kr"`` (default) — the Knothe–Rosenblatt velocity of the mixture read autoregressively
      (conditionals ``p_d(x_d | x_<d) = sum_k pi_kd f_kd``, docs/mathematics.md §3b); ``D-1`` analytic sweeps,
      no extra network pass. Stays moderate between separated components.
    * ``flux="mixture"`` — docs/mathematics.md §2: within-component quantile flux plus the mass-transfer term of
      the time-varying weights, with reference marginal ``r_d = sum_k w_k f_kd``:

    .. math:: j_d = -\sum_k w_k \dot Q_{kd} \prod_{e\ne d} f_{ke}
                    -\sum_k \dot w_k \Big[\prod_{e<d} r_e\Big] (Q_{kd} - R_d) \Big[\prod_{e>d} f_{ke}\Big]

      Its first term is the responsibility-weighted affine field ``sum_k pi_k (mu_k' + (log s_k)' (x - mu_k))``
      (each component moves by its own quantile map); the second grows like ``prod r / rho`` where
      coordinates sit near different components.

    Both are evaluated in log space and agree for one component (each coordinate's quantile map).

    >>> import probflux as pf
    >>> rho = pf.FactorizedMixture(2, 3, hidden=8, family="gaussian", flux="mixture").double()
    >>> x = rho.sample(0.2, 6)
    >>> r = pf.continuity_residual(rho, 0.2, x)
    >>> bool(r.relative.max() < 1e-10)
    True

    Args:
        dim: dimension ``D``. components: ``K``. Keyword-only: hidden/layers: MLP width/depth.
        context_dim: size of an optional conditioning vector. max_frequency: the highest frequency of
            the sinusoidal time embedding (rad per unit time; lower = smoother in t). time_features: its
            size (odd). max_log_scale: log-scales are softly bounded to ``(-max_log_scale, max_log_scale)``.
        family: ``"logistic"`` or ``"gaussian"``. flux: ``"kr"`` or ``"mixture"`` (see above).
    """

    has_rosenblatt = True

    def __init__(
        self,
        dim: int,
        components: int = 8,
        *,
        hidden: int = 256,
        layers: int = 3,
        context_dim: int = 0,
        max_frequency: float = 32.0,
        time_features: int = 17,
        max_log_scale: float = 7.0,
        family: str = "logistic",
        flux: str = "kr",
    ) -> None:
        super().__init__(dim, context_dim)
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be a positive integer; got {components!r}")
        if flux not in FLUXES:
            raise ValueError(f"flux must be one of {FLUXES}; got {flux!r}")
        self.flux_name = flux
        self.family_name = family
        self.family = m1.get_family(family)
        self.components = components
        self.max_log_scale = float(max_log_scale)
        self.embed = SinusoidalEmbedding(time_features, max_frequency)
        K, D = components, dim
        self.net = MLP(time_features + context_dim, K + 2 * K * D, hidden, layers)
        with torch.no_grad():  # distinct component locations at initialisation
            self.net.linears[-1].bias[K : K + K * D].normal_()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, components={self.components}, family={self.family_name!r}, "
            f"flux={self.flux_name!r}, context_dim={self.context_dim}"
        )

    # ------------------------------------------------------------------ parameters
    def _net_input(self, t: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        e, de = self.embed(t), self.embed.derivative(t)
        if ctx is None:
            return e, de
        return torch.cat([e, ctx], -1), torch.cat([de, torch.zeros_like(ctx)], -1)

    def _split(self, out: Tensor, tangent: bool = False, raw: Optional[Tensor] = None) -> Params:
        N, K, D = out.shape[0], self.components, self.dim
        logits = out[:, :K]
        loc = out[:, K : K + K * D].reshape(N, K, D)
        r = out[:, K + K * D :].reshape(N, K, D)
        B = self.max_log_scale
        if not tangent:
            log_scale = B * torch.tanh(r / B)
        else:  # chain rule through the soft bound, evaluated at the primal ``raw``
            log_scale = r * (1 - torch.tanh(raw / B) ** 2)
        return logits, loc, log_scale

    def _params(self, t: Tensor, ctx: Optional[Tensor]) -> Params:
        """Mixture parameters at times ``t: (N,)``: logits ``(N, K)``, loc and log-scale ``(N, K, D)``."""
        return self._split(self.net(self._net_input(t, ctx)[0]))

    def _params_and_rates(self, t: Tensor, ctx: Optional[Tensor]) -> tuple[Params, Params]:
        """Parameters and their exact time derivatives (one forward-mode pass)."""
        inp, dinp = self._net_input(t, ctx)
        out, dout, _ = self.net.jvp(inp, dinp)
        K, D = self.components, self.dim
        raw = out[:, K + K * D :].reshape(out.shape[0], K, D)
        return self._split(out), self._split(dout, tangent=True, raw=raw)

    # ------------------------------------------------------------------ density
    def _component_log_pdf(self, x: Tensor, loc: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
        z = (x.unsqueeze(1) - loc) / log_scale.exp()
        return z, self.family.log_pdf(z) - log_scale

    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        logits, loc, log_scale = self._params(t, ctx)
        _, log_f = self._component_log_pdf(x, loc, log_scale)
        return torch.logsumexp(torch.log_softmax(logits, -1) + log_f.sum(-1), -1)

    def _score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        logits, loc, log_scale = self._params(t, ctx)
        z, log_f = self._component_log_pdf(x, loc, log_scale)
        post = torch.softmax(torch.log_softmax(logits, -1) + log_f.sum(-1), -1)
        return (post.unsqueeze(-1) * self.family.dlog_pdf(z) / log_scale.exp()).sum(1)

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        params, rates = self._params_and_rates(t, ctx)
        if self.flux_name == "kr":
            return self._velocity_kr(params, rates, x)
        return self._velocity_mixture(params, rates, x)

    def _velocity_kr(self, params: Params, rates: Params, x: Tensor) -> Tensor:
        """Knothe–Rosenblatt velocity of the mixture viewed autoregressively (docs/mathematics.md §3b).

        The conditionals are ``p_d(x_d | x_<d) = sum_k pi_kd f_kd`` with logits
        ``L_kd = log w_k + sum_{e<d} log f_ke``. The velocity solves ``u_d = -(A_d + sum_{e<d} C_de u_e)``
        (``A_d = (dF_d/dt)/p_d``; ``C_de = sum_k (dF_d/dL_kd)/p_d * d log f_ke/dx_e``): the forward substitution
        of :class:`AutoregressiveMixture`, but here the map ``x_<d -> L_kd`` is analytic, so ``C`` is one
        ``O(NKD^2)`` contraction and ``u`` a batched forward substitution, with no network pass.
        """
        (logits, loc, log_scale), (dlogits, dloc, dlog_scale) = params, rates
        fam = self.family
        z, log_f = self._component_log_pdf(x, loc, log_scale)  # (N, K, D)
        scale = log_scale.exp()
        log_w = torch.log_softmax(logits, -1).unsqueeze(-1)
        L = log_w + _exclusive_cumsum(log_f, -1)
        dlog_pdf = fam.dlog_pdf(z)
        dlog_f_dt = -dlog_scale + dlog_pdf * (-dloc - (x.unsqueeze(1) - loc) * dlog_scale) / scale
        dL_dt = dlogits.unsqueeze(-1) + _exclusive_cumsum(dlog_f_dt, -1)
        T = lambda a: a.transpose(1, 2)  # (N, K, D) -> (N, D, K), the layout of mixture1d
        terms = m1.mixture_terms(x, T(L), T(loc), T(log_scale), fam)
        A = m1.cdf_tangent_over_pdf(terms, T(dL_dt), T(dloc), T(dlog_scale))  # (dF_d/dt) / p_d
        if self.dim == 1:
            return m1.clamp_velocity(-A)
        M = m1.cdf_logit_gradient_over_pdf(terms)  # (N, D, K)
        grad_log_f = T(dlog_pdf / scale)  # d log f_ke / d x_e, (N, D, K)
        C = torch.einsum("ndk,nek->nde", M, grad_log_f)
        # forward substitution, each coordinate clipped (m1.clamp_velocity) so that a velocity beyond the
        # floating range where rho underflows cannot overflow the next coordinate's sum into inf - inf
        u = [m1.clamp_velocity(-A[:, 0])]
        for d in range(1, self.dim):
            u.append(m1.clamp_velocity(-(A[:, d] + (C[:, d, :d] * torch.stack(u, -1)).sum(-1))))
        return torch.stack(u, -1)

    def _velocity_mixture(self, params: Params, rates: Params, x: Tensor) -> Tensor:
        """docs/mathematics.md §2: within-component quantile flux plus mass transfer through the average marginal."""
        (logits, loc, log_scale), (dlogits, dloc, dlog_scale) = params, rates
        fam = self.family
        xk = x.unsqueeze(1)
        z, log_f = self._component_log_pdf(x, loc, log_scale)  # (N, K, D)
        log_w = torch.log_softmax(logits, -1)  # (N, K)
        joint = log_w + log_f.sum(-1)
        log_rho = torch.logsumexp(joint, -1)
        post = torch.softmax(joint, -1)
        # within-component quantile flux: -w_k dQ_kd/dt prod_{e!=d} f_ke / rho
        u = (post.unsqueeze(-1) * (dloc + dlog_scale * (xk - loc))).sum(1)
        if self.components == 1:
            return m1.clamp_velocity(u)
        # mass transfer between components (time-varying weights)
        a = dlogits - (log_w.exp() * dlogits).sum(-1, keepdim=True)  # d log w_k / dt
        lw = log_w.unsqueeze(-1)
        log_r = torch.logsumexp(lw + log_f, 1)  # reference marginal r_d, (N, D)
        prefix = _exclusive_cumsum(log_r, -1).unsqueeze(1)  # sum_{e<d} log r_e
        suffix = _exclusive_reverse_cumsum(log_f, -1)  # sum_{e>d} log f_ke
        log_Q, log_S = fam.log_cdf(z), fam.log_sf(z)
        log_R = torch.logsumexp(lw + log_Q, 1).unsqueeze(1)
        log_SR = torch.logsumexp(lw + log_S, 1).unsqueeze(1)
        left = log_R < math.log(0.5)
        # Q_k - R = e^{log Q_k} - e^{log R}  =  e^{log(1-R)} - e^{log(1-Q_k)}
        log_gap, sign = m1.log_diff_exp(torch.where(left, log_Q, log_SR), torch.where(left, log_R, log_S))
        expo = lw + prefix + suffix + log_gap - log_rho[:, None, None]
        return m1.clamp_velocity(u - (a.unsqueeze(-1) * sign * m1.capped_exp(expo)).sum(1))

    # ------------------------------------------------------------------ sampling
    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        logits, loc, log_scale = self._params(t, ctx)
        N = t.shape[0]
        k = torch.multinomial(torch.softmax(logits, -1), 1)  # (N, 1)
        idx = k.unsqueeze(-1).expand(N, 1, self.dim)
        mu = loc.gather(1, idx).squeeze(1)
        s = log_scale.gather(1, idx).squeeze(1).exp()
        u = torch.rand_like(mu).clamp(torch.finfo(mu.dtype).tiny, 1 - torch.finfo(mu.dtype).eps / 2)
        return mu + s * self.family.icdf(u)

    def _conditional(self, params: Params, x_cond: Tensor, x_eval: Tensor) -> tuple[Tensor, Tensor]:
        """``F_d(x_eval_d | x_cond_<d)`` and the matching log-pdfs, ``(N, D)`` each."""
        logits, loc, log_scale = params
        _, log_f_cond = self._component_log_pdf(x_cond, loc, log_scale)
        z, log_f = self._component_log_pdf(x_eval, loc, log_scale)
        log_pi = torch.log_softmax(torch.log_softmax(logits, -1).unsqueeze(-1) + _exclusive_cumsum(log_f_cond, -1), 1)
        log_F = torch.logsumexp(log_pi + self.family.log_cdf(z), 1)
        log_p = torch.logsumexp(log_pi + log_f, 1)
        return log_F.exp(), log_p

    def _conditional_cdf(self, t: Tensor, x_cond: Tensor, x_eval: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return self._conditional(self._params(t, ctx), x_cond, x_eval)

    def _icdf(self, t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._icdf_from_params(self._params(t, ctx), u)

    def _icdf_from_params(self, params: Params, u: Tensor) -> Tensor:
        """Invert the Rosenblatt transform one coordinate at a time: ``u: (N, D)`` uniforms -> ``x: (N, D)``."""
        logits, loc, log_scale = params
        log_w = torch.log_softmax(logits, -1)
        x = torch.empty_like(u)
        acc = torch.zeros_like(log_w)
        for d in range(self.dim):
            x[:, d] = m1.icdf(u[:, d], log_w + acc, loc[:, :, d], log_scale[:, :, d], self.family)
            z = (x[:, d : d + 1] - loc[:, :, d]) / log_scale[:, :, d].exp()
            acc = acc + self.family.log_pdf(z) - log_scale[:, :, d]
        return x

    def _reparameterize(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._reparameterize_from_params(self._params(t, ctx), x_hat)  # one network pass

    def _reparameterize_from_params(self, params: Params, x_hat: Tensor) -> Tensor:
        """Implicit reparameterisation at samples ``x_hat: (N, D)``; the D fixed-point sweeps are analytic."""
        tiny = torch.finfo(x_hat.dtype).tiny
        x = x_hat
        for _ in range(self.dim):  # see TimeDensity._reparameterize
            Fc, log_p = self._conditional(params, x, x_hat)
            x = x_hat - (Fc - Fc.detach()) / log_p.detach().exp().clamp_min(tiny)
        return x
