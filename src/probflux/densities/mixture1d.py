r"""One-dimensional location–scale mixtures: the building block of every probflux density.

A mixture with weights ``w_k = softmax(logits)_k``, locations ``mu_k`` and scales ``s_k = exp(log_scale_k)``
has

.. math::  p(x) = \sum_k w_k \phi(z_k)/s_k, \qquad F(x) = \sum_k w_k \Phi(z_k), \qquad z_k = (x - \mu_k)/s_k

with ``phi``/``Phi`` the standard logistic or Gaussian pdf/CDF. Everything is computed in log space
(``logsigmoid``, ``log_ndtr``, ``logsumexp``) and is finite for ``|x|`` up to ``1e4`` at least.

Parameter tensors have shape ``(..., K)`` and points ``x`` shape ``(...)`` (broadcast against the
parameters without their last axis).

Besides values, this module gives the *tangents* that the continuity equation needs, divided by the
pdf so that they stay finite where ``p`` underflows:

* :func:`log_prob_tangent` — ``d log p`` for a tangent ``(dlogits, dloc, dlog_scale, dx)``;
* :func:`cdf_tangent_over_pdf` — ``dF / p`` for the same tangent. For a time tangent this is
  ``(dF/dt)/p``, i.e. minus the 1-D probability-flow velocity.

**Ratios are capped, never infinite.** A ratio such as ``F/p`` is exact in log space but can exceed the
floating range where ``p`` underflows (between two narrow, far-apart components the exact velocity is
``e^{700}`` and more). Every such ratio is exponentiated by :func:`capped_exp`, which clips its log at
:func:`log_ratio_cap` (a quarter of ``log(finfo.max)``: ``e^{177}`` in float64, ``e^{22}`` in float32), and
every velocity is clipped to ``±e^{cap}`` by :func:`clamp_velocity`; a quarter leaves room for the products
of two capped factors and the sums over components and coordinates that follow, so no ``inf`` (and no
``inf - inf = nan``) is ever formed. Below the cap nothing changes: values are exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FAMILIES",
    "Logistic",
    "Gaussian",
    "get_family",
    "MixtureTerms",
    "mixture_terms",
    "log_prob",
    "log_cdf",
    "log_sf",
    "cdf",
    "icdf",
    "log_prob_tangent",
    "cdf_tangent_over_pdf",
    "log_diff_exp",
    "log_ratio_cap",
    "capped_exp",
    "clamp_velocity",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Logistic:
    """Standard logistic distribution: ``phi(z) = sigmoid(z) sigmoid(-z)``, ``Phi(z) = sigmoid(z)``."""

    name = "logistic"

    @staticmethod
    def log_pdf(z: Tensor) -> Tensor:
        return F.logsigmoid(z) + F.logsigmoid(-z)

    @staticmethod
    def log_cdf(z: Tensor) -> Tensor:
        return F.logsigmoid(z)

    @staticmethod
    def log_sf(z: Tensor) -> Tensor:
        return F.logsigmoid(-z)

    @staticmethod
    def dlog_pdf(z: Tensor) -> Tensor:
        """``d/dz log phi(z) = -tanh(z/2)``."""
        return -torch.tanh(0.5 * z)

    @staticmethod
    def icdf(u: Tensor) -> Tensor:
        return torch.log(u) - torch.log1p(-u)


class Gaussian:
    """Standard normal distribution."""

    name = "gaussian"

    @staticmethod
    def log_pdf(z: Tensor) -> Tensor:
        return -0.5 * z * z - _LOG_SQRT_2PI

    @staticmethod
    def log_cdf(z: Tensor) -> Tensor:
        return torch.special.log_ndtr(z)

    @staticmethod
    def log_sf(z: Tensor) -> Tensor:
        return torch.special.log_ndtr(-z)

    @staticmethod
    def dlog_pdf(z: Tensor) -> Tensor:
        return -z

    @staticmethod
    def icdf(u: Tensor) -> Tensor:
        return torch.special.ndtri(u)


FAMILIES = {"logistic": Logistic, "gaussian": Gaussian}


def get_family(family: str | type) -> type:
    """Return the family class for ``"logistic"`` or ``"gaussian"``; ``ValueError`` otherwise."""
    if isinstance(family, type) and family in FAMILIES.values():
        return family
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}; got {family!r}")
    return FAMILIES[family]


def log_ratio_cap(dtype: torch.dtype) -> float:
    """The largest log-ratio that is exponentiated: ``log(finfo(dtype).max) / 4`` (177.4 in float64, 22.2 in float32)."""
    return 0.25 * math.log(torch.finfo(dtype).max)


def capped_exp(a: Tensor) -> Tensor:
    """``exp(min(a, cap))``: a ratio given by its log, exact below :func:`log_ratio_cap`, finite always."""
    return torch.exp(a.clamp(max=log_ratio_cap(a.dtype)))


def clamp_velocity(u: Tensor) -> Tensor:
    """``u`` clipped to ``[-e^cap, e^cap]`` (:func:`log_ratio_cap`): exact below, finite always."""
    bound = math.exp(log_ratio_cap(u.dtype))
    return u.clamp(-bound, bound)


def log_diff_exp(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``log|e^a - e^b|`` and ``sign(e^a - e^b)``, stable, with finite gradients where ``a == b``.

    Where ``a == b`` the log is ``-inf`` (the difference is exactly zero) and the sign is ``0``.
    """
    both_zero = torch.isneginf(a) & torch.isneginf(b)
    a = torch.where(both_zero, torch.zeros_like(a), a)  # keep gradients finite on unused branches
    b = torch.where(both_zero, torch.zeros_like(b), b)
    hi = torch.maximum(a, b)
    gap = (a - b).abs()
    zero = (gap == 0) | both_zero
    safe_gap = torch.where(zero, torch.ones_like(gap), gap)
    out = hi + torch.log(-torch.expm1(-safe_gap))
    out = torch.where(zero, torch.full_like(out, -math.inf), out)
    return out, torch.where(both_zero, torch.zeros_like(a), torch.sign(a - b))


@dataclass
class MixtureTerms:
    """Per-component quantities of a mixture evaluated at ``x`` (all shapes ``(..., K)`` unless noted)."""

    family: type
    x: Tensor  # (...)
    loc: Tensor
    scale: Tensor
    z: Tensor
    log_w: Tensor
    log_f: Tensor  # component log-pdf at x (log phi(z) - log s)
    log_pdf: Tensor  # (...) mixture log-pdf
    post: Tensor  # responsibilities w_k f_k / p

    def component_log_cdf(self) -> Tensor:
        return self.family.log_cdf(self.z)

    def component_log_sf(self) -> Tensor:
        return self.family.log_sf(self.z)


def mixture_terms(x: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor, family: str | type = "logistic") -> MixtureTerms:
    """Evaluate the per-component pieces shared by pdf, CDF and tangents. ``x: (...)``, params ``(..., K)``."""
    fam = get_family(family)
    scale = log_scale.exp()
    z = (x.unsqueeze(-1) - loc) / scale
    log_w = torch.log_softmax(logits, dim=-1)
    log_f = fam.log_pdf(z) - log_scale
    joint = log_w + log_f
    log_pdf = torch.logsumexp(joint, dim=-1)
    post = torch.softmax(joint, dim=-1)
    return MixtureTerms(fam, x, loc, scale, z, log_w, log_f, log_pdf, post)


def log_prob(x: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor, family: str | type = "logistic") -> Tensor:
    """``log p(x)``. ``x: (...)``, params ``(..., K)`` → ``(...)``."""
    fam = get_family(family)
    z = (x.unsqueeze(-1) - loc) / log_scale.exp()
    return torch.logsumexp(torch.log_softmax(logits, -1) + fam.log_pdf(z) - log_scale, dim=-1)


def log_cdf(x: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor, family: str | type = "logistic") -> Tensor:
    """``log F(x) = logsumexp_k(log w_k + log Phi(z_k))``; ``log1p(-(1-F))`` right of the median (full relative precision)."""
    return _log_cdf_sf(x, logits, loc, log_scale, family)[0]


def log_sf(x: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor, family: str | type = "logistic") -> Tensor:
    """``log(1 - F(x))``, with full relative precision on both sides of the median."""
    return _log_cdf_sf(x, logits, loc, log_scale, family)[1]


def _log_cdf_sf(x: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor, family: str | type) -> tuple[Tensor, Tensor]:
    fam = get_family(family)
    z = (x.unsqueeze(-1) - loc) / log_scale.exp()
    log_w = torch.log_softmax(logits, -1)
    lF = torch.logsumexp(log_w + fam.log_cdf(z), dim=-1)
    lS = torch.logsumexp(log_w + fam.log_sf(z), dim=-1)
    half = math.log(0.5)
    # log F = log1p(-S) where S < 1/2 (and vice versa); clamp keeps the unused branch finite
    lF_right = torch.log1p(-lS.clamp(max=half).exp())
    lS_left = torch.log1p(-lF.clamp(max=half).exp())
    return torch.where(lS < half, lF_right, lF), torch.where(lF < half, lS_left, lS)


def cdf(x: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor, family: str | type = "logistic") -> Tensor:
    """``F(x)``."""
    return log_cdf(x, logits, loc, log_scale, family).exp()


@torch.no_grad()
def icdf(
    u: Tensor,
    logits: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    family: str | type = "logistic",
    *,
    tol: Optional[float] = None,
    max_iter: int = 200,
) -> Tensor:
    r"""Inverse CDF ``F^{-1}(u)`` by safeguarded Newton iteration on an exact bracket.

    The bracket is ``[min_k Q_k(u), max_k Q_k(u)]`` (component quantiles): ``F`` is a convex combination
    of the component CDFs, so the root lies inside. Newton runs on ``log F(x) - log u`` for ``u < 1/2``
    and on ``log(1-u) - log(1-F(x))`` otherwise (both increasing, exact in the tails); a step leaving
    the bracket is replaced by bisection. Converges to ``tol`` (default ``1e-12`` relative in float64,
    ``1e-6`` in float32). No gradient: use implicit reparameterisation for that.

    ``u: (...)`` in ``(0, 1)``, params ``(..., K)`` → ``(...)``.
    """
    fam = get_family(family)
    dtype = loc.dtype
    if tol is None:
        tol = 1e-12 if dtype == torch.float64 else 1e-6
    finfo = torch.finfo(dtype)
    u = u.to(dtype).clamp(finfo.tiny, 1.0 - finfo.eps / 2)
    u, logits, loc, log_scale = torch.broadcast_tensors(u.unsqueeze(-1), logits, loc, log_scale)
    u = u[..., 0]
    scale = log_scale.exp()
    q = loc + scale * fam.icdf(u.unsqueeze(-1))  # component quantiles
    lo = q.min(-1).values
    hi = q.max(-1).values
    log_w = torch.log_softmax(logits, -1)
    x = (log_w.exp() * q).sum(-1)
    left = u < 0.5
    log_u = torch.where(left, torch.log(u), torch.log1p(-u))

    def h_and_slope(x: Tensor) -> tuple[Tensor, Tensor]:
        z = (x.unsqueeze(-1) - loc) / scale
        lp = torch.logsumexp(log_w + fam.log_pdf(z) - log_scale, -1)
        lF = torch.logsumexp(log_w + fam.log_cdf(z), -1)
        lS = torch.logsumexp(log_w + fam.log_sf(z), -1)
        h = torch.where(left, lF - log_u, log_u - lS)
        slope = torch.where(left, (lp - lF).exp(), (lp - lS).exp())
        return h, slope

    done = torch.zeros_like(x, dtype=torch.bool)
    for _ in range(max_iter):
        h, slope = h_and_slope(x)
        hi = torch.where(h > 0, torch.minimum(hi, x), hi)
        lo = torch.where(h <= 0, torch.maximum(lo, x), lo)
        newton = x - h / slope
        ok = torch.isfinite(newton) & (newton >= lo) & (newton <= hi)
        x_new = torch.where(ok, newton, 0.5 * (lo + hi))
        x_new = torch.where(done | (h == 0), x, x_new)
        step = (x_new - x).abs()
        x = x_new
        done = done | (step <= tol * (1.0 + x.abs())) | ((hi - lo) <= tol * (1.0 + x.abs()))
        if bool(done.all()):
            break
    return x


def _dz(terms: MixtureTerms, dloc: Tensor, dlog_scale: Tensor, dx: Optional[Tensor]) -> Tensor:
    """Tangent of ``z_k = (x - mu_k)/s_k`` times ``s_k``: ``s dz = dx - dmu - (x - mu) dlog_s``."""
    s_dz = -dloc - (terms.x.unsqueeze(-1) - terms.loc) * dlog_scale
    if dx is not None:
        s_dz = s_dz + dx.unsqueeze(-1)
    return s_dz


def log_prob_tangent(
    terms: MixtureTerms, dlogits: Tensor, dloc: Tensor, dlog_scale: Tensor, dx: Optional[Tensor] = None
) -> Tensor:
    """Directional derivative of ``log p(x)`` for parameter tangents ``(..., K)`` and point tangent ``dx: (...)``."""
    dlog_w = dlogits - (terms.log_w.exp() * dlogits).sum(-1, keepdim=True)
    s_dz = _dz(terms, dloc, dlog_scale, dx)
    dlog_f = -dlog_scale + terms.family.dlog_pdf(terms.z) * s_dz / terms.scale
    return (terms.post * (dlog_w + dlog_f)).sum(-1)


def cdf_logit_gradient_over_pdf(terms: MixtureTerms) -> Tensor:
    r"""``(dF/d logits_k) / p``, ``(..., K)``: the linear map ``dlogits -> (dF/p)`` of a mixture CDF.

    .. math:: \frac{1}{p}\frac{\partial F}{\partial \ell_k} = \frac{w_k F_k}{p} - w_k \sum_j \frac{w_j F_j}{p}

    evaluated with ``F_k`` replaced by ``-(1 - F_k)`` on the right of the median (``sum_k w_k (F_k - F) = 0``
    makes the two forms equal), so every ratio stays bounded in its tail; where ``p`` underflows between
    components the ratios are capped by :func:`capped_exp`.
    """
    log_Fk = terms.component_log_cdf()
    log_Sk = terms.component_log_sf()
    log_F = torch.logsumexp(terms.log_w + log_Fk, -1, keepdim=True)
    left = log_F < math.log(0.5)
    sign = torch.where(left, 1.0, -1.0).to(log_Fk.dtype)
    G = sign * capped_exp(terms.log_w + torch.where(left, log_Fk, log_Sk) - terms.log_pdf.unsqueeze(-1))
    return G - terms.log_w.exp() * G.sum(-1, keepdim=True)


def cdf_tangent_over_pdf(
    terms: MixtureTerms, dlogits: Tensor, dloc: Tensor, dlog_scale: Tensor, dx: Optional[Tensor] = None
) -> Tensor:
    r"""Directional derivative of ``F(x)`` divided by ``p(x)``, finite where ``p`` underflows.

    .. math:: \frac{dF}{p} = \sum_k \pi_k\, s_k\, dz_k + \sum_k \frac{1}{p}\frac{\partial F}{\partial \ell_k} d\ell_k,
              \qquad \pi_k = w_k f_k / p

    with the logit part from :func:`cdf_logit_gradient_over_pdf` (tail-stable).
    """
    within = (terms.post * _dz(terms, dloc, dlog_scale, dx)).sum(-1)
    return within + (cdf_logit_gradient_over_pdf(terms) * dlogits).sum(-1)
