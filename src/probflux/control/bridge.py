r"""Bridges: time-dependent densities whose ``rho_0`` *and* ``rho_1`` equal given laws for every parameter value.

**Mixture bridge** (:class:`BridgeMixture`). The endpoint laws are diagonal Gaussian mixtures
``q0 = sum_i a_i N(m0_i, S0_i)`` and ``q1 = sum_j b_j N(m1_j, S1_j)``. A coupling ``pi_ij >= 0`` with row sums
``a`` and column sums ``b`` (the discrete OT plan between the components, or the product ``a b^T``) gives
one model component per pair ``(i, j)`` with the *constant* weight ``pi_ij`` (split evenly over ``replicas``
copies). Its mean and raw log-scale are interpolants pinned at both ends,

.. math:: p_k(t) = (1 - t)\,p^0_{i} + t\,p^1_{j} + t(1 - t)\,\mathrm{scale}\cdot\mathrm{net}_k(t),

so ``rho_0 = q0`` (``sum_j pi_ij = a_i``) and ``rho_1 = q1`` (``sum_i pi_ij = b_j``) exactly. With constant weights
each Gaussian component moves by its own affine map ``x = mu_k(t) + s_k(t) z``, whose flux is closed form, and the
mixture velocity is the responsibility-weighted affine field ``u = sum_k r_k(x) (mu_k' + (log s_k)' (x - mu_k))``
(:class:`~probflux.FactorizedMixture` with ``flux="mixture"``; ``"kr"`` is exact as well). Without a target only
``rho_0`` is pinned (``p_k(t) = p^0_i + t scale net_k(t)``, the :class:`PinnedMixture` construction, weights free
unless ``fixed_weights``).

**Flow bridge** (:class:`FlowBridge`). ``rho_t = (F_t)_# m_t`` where ``m_t`` is a mixture bridge (exact
endpoints) and ``F_t = S_t \circ S_0^{-1}`` for a coupling flow ``S_t`` whose time conditioning is *gated*:
``S_t`` sees ``gate(t) * embed(t)`` with ``gate(t) = t(1 - t)`` (both ends pinned) or ``t`` (``rho_0`` only), so
``S_1 = S_0`` and ``F_0 = F_1 = id`` for every parameter value: ``rho_0 = m_0 = q0`` and ``rho_1 = m_1 = q1``.
Change of variables and the transport of ``m_t``'s velocity give

.. math:: \log\rho_t(x) = \log m_t(y) + \log|\det DS_0(w)| - \log|\det DS_t(w)|,\quad w = S_t^{-1}(x),\ y = S_0(w),
.. math:: u_t(x) = \tfrac{d}{d\epsilon}F_{t+\epsilon}(y + \epsilon\,u^m_t(y))\big|_{\epsilon=0}

(one inverse pass, one forward pass and one forward-mode tangent in ``(t, y)``); continuity holds exactly
because ``F_t`` carries every trajectory of ``m_t`` to one of ``rho_t``. The choice over ``T_t = S_t \circ S_0^{-1} \circ G``
with a fixed ``G: N(0, I) -> q0``: the inner mixture bridge makes both ends exact for Gaussian-mixture laws, for
which no closed-form ``G`` exists, and it keeps the Gaussian optimum of LQ control inside the family with
``S = id``. ``tests/test_contract.py`` (``bridge-*`` families) checks both to round-off.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..densities.base import TimeDensity
from ..densities.factorized import FactorizedMixture
from ..densities.flow import FlowDensity
from .laws import Gaussian, GaussianMixture

__all__ = ["BridgeMixture", "FlowBridge", "coupling_plan", "pins"]

COUPLINGS = ("ot", "independent")


def pins(density: Any) -> tuple[bool, bool]:
    """``(rho_0 exact, rho_1 exact)`` for a density of this module (or a :class:`PinnedMixture`), else ``(False, False)``."""
    return bool(getattr(density, "pins_initial", False)), bool(getattr(density, "pins_target", False))


def _diagonal_components(law: Any, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """Weights ``(K,)``, means ``(K, D)``, standard deviations ``(K, D)`` of a diagonal Gaussian (mixture)."""
    if not isinstance(law, (Gaussian, GaussianMixture)):
        raise TypeError(f"{name} must be a probflux.control.Gaussian or GaussianMixture to be pinned; got {type(law).__name__} "
                        "(fit a GaussianMixture to samples first: probflux.control.fit_gaussian_mixture)")
    w, means, covs = law.components
    diag = torch.diagonal(covs, dim1=-2, dim2=-1)
    if bool(((covs - torch.diag_embed(diag)).abs() > 1e-12).any()):
        raise ValueError(f"{name}: the covariances must be diagonal (a factorized bridge cannot pin a correlated Gaussian)")
    return w, means, diag.sqrt()


def coupling_plan(a: Tensor, b: Tensor, m0: Tensor, m1: Tensor, kind: str = "ot") -> Tensor:
    """A coupling ``(K0, K1)`` of the component weights ``a``, ``b``: the exact OT plan (POT ``emd``, squared distances
    between means; at most ``K0 + K1 - 1`` pairs) or the product ``a b^T``. Rows sum to ``a``, columns to ``b``."""
    if kind not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}; got {kind!r}")
    if kind == "independent" or a.shape[0] == 1 or b.shape[0] == 1:
        return a[:, None] * b[None, :]
    import ot

    plan = torch.as_tensor(ot.emd(a.numpy(), b.numpy(), torch.cdist(m0, m1).pow(2).numpy()), dtype=torch.float64)
    return plan.clamp_min(0)


class BridgeMixture(FactorizedMixture):
    """A Gaussian :class:`~probflux.FactorizedMixture` with ``rho_0 = initial`` and (with a target) ``rho_1 = target``
    exactly (module doc).

    Args:
        initial, target: :class:`Gaussian` / :class:`GaussianMixture` laws with diagonal covariances (``target`` may
            be None: only ``rho_0`` is pinned).
        replicas: copies per coupled pair (weights split evenly), so one pair can take several paths.
        coupling: ``"ot"`` (default) or ``"independent"`` (:func:`coupling_plan`).
        loc_scale: the network's mean outputs are multiplied by it (the problem's length scale).
        fixed_weights: without a target, keep the weights constant (with a target they always are).
        flux: ``"mixture"`` (default; with constant weights the responsibility-weighted affine field) or ``"kr"``.
        Other keyword arguments go to :class:`~probflux.FactorizedMixture`.
    """

    def __init__(self, initial: Any, target: Any = None, *, replicas: int = 1, coupling: str = "ot", loc_scale: float = 1.0,
                 fixed_weights: bool = False, flux: str = "mixture", **kwargs: Any) -> None:
        if kwargs.pop("family", "gaussian") != "gaussian":
            raise ValueError("BridgeMixture: family must be 'gaussian' (the endpoint laws are Gaussian)")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be a positive int; got {replicas!r}")
        if not float(loc_scale) > 0:
            raise ValueError(f"loc_scale must be > 0; got {loc_scale!r}")
        a, m0, s0 = _diagonal_components(initial, "initial")
        D = m0.shape[1]
        if target is None:
            b, m1, s1 = torch.ones(1, dtype=torch.float64), m0[:1], s0[:1]
            plan = a[:, None]
        else:
            b, m1, s1 = _diagonal_components(target, "target")
            if m1.shape[1] != D:
                raise ValueError(f"target has dimension {m1.shape[1]} but initial has {D}")
            plan = coupling_plan(a, b, m0, m1, coupling)
        i, j = (plan > 1e-12 * plan.max()).nonzero(as_tuple=True)
        if not (torch.allclose(plan.sum(1), a, atol=1e-9) and torch.allclose(plan.sum(0), b, atol=1e-9)):
            raise ValueError("BridgeMixture: the coupling does not have the endpoint weights as marginals")
        K = i.shape[0] * replicas
        super().__init__(D, components=K, family="gaussian", flux=flux, **kwargs)
        B = self.max_log_scale
        for name, s in (("initial", s0), ("target", s1)):
            if bool((s.log().abs() >= B).any()):
                raise ValueError(f"BridgeMixture: {name} scales outside the model's bound exp(+-{B})")
        rep = lambda v: v.repeat_interleave(replicas, 0)  # noqa: E731
        logits = rep(plan[i, j].log() - torch.log(torch.tensor(float(replicas), dtype=torch.float64)))
        raw = lambda s: B * torch.atanh(s.log() / B)  # noqa: E731
        start = torch.cat([logits, rep(m0[i]).reshape(-1), rep(raw(s0[i])).reshape(-1)])
        if target is None:
            end = start.clone()
        else:
            end = torch.cat([logits, rep(m1[j]).reshape(-1), rep(raw(s1[j])).reshape(-1)])
        scale = torch.ones_like(start)
        scale[K: K + K * D] = float(loc_scale)
        self.pins_initial, self.pins_target = True, target is not None
        self.fixed_weights = bool(fixed_weights) or target is not None
        if self.fixed_weights:
            scale[:K] = 0.0
        self.pairs = list(zip(rep(i).tolist(), rep(j).tolist()))
        with torch.no_grad():  # small random detours break the symmetry of replicated pairs
            self.net.linears[-1].bias[K: K + K * D].mul_(0.25)
        # float64 buffers (cast at use): endpoint parameters stored in float32 would pin rho_0 only to ~1e-7
        self.register_buffer("start", start)
        self.register_buffer("delta", end - start)
        self.register_buffer("out_scale", scale)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pins=({self.pins_initial}, {self.pins_target})"

    def _gate(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``g(t)`` and ``g'(t)``: ``t(1 - t)`` with a target, ``t`` without, ``(N, 1)`` each."""
        t = t[:, None]
        if self.pins_target:
            return t * (1 - t), 1 - 2 * t
        return t, torch.ones_like(t)

    def _full(self, t: Tensor, out: Tensor) -> Tensor:
        start, delta, scale = (v.to(out.dtype) for v in (self.start, self.delta, self.out_scale))
        return start + t[:, None] * delta + self._gate(t)[0] * scale * out

    def _params(self, t: Tensor, ctx: Optional[Tensor]):
        return self._split(self._full(t, self.net(self._net_input(t, ctx)[0])))

    def _params_and_rates(self, t: Tensor, ctx: Optional[Tensor]):
        inp, dinp = self._net_input(t, ctx)
        out, dout, _ = self.net.jvp(inp, dinp)
        g, dg = self._gate(t)
        full = self._full(t, out)
        dfull = self.delta.to(out.dtype) + self.out_scale.to(out.dtype) * (dg * out + g * dout)
        K, D = self.components, self.dim
        raw = full[:, K + K * D:].reshape(full.shape[0], K, D)
        return self._split(full), self._split(dfull, tangent=True, raw=raw)

    @torch.no_grad()
    def init_detours(self, points: Tensor) -> None:
        """Start component ``k`` on the path through ``points[k]: (K, D)`` at ``t = 1/2`` (its straight line bent by
        ``t(1 - t)``; the network's weights stay small). With only ``rho_0`` pinned: the straight line to ``points[k]``
        at ``t = 1``."""
        K, D = self.components, self.dim
        if points.shape != (K, D):
            raise ValueError(f"points must be ({K}, {D}); got {tuple(points.shape)}")
        loc0 = self.start[K: K + K * D].reshape(K, D)
        dloc = self.delta[K: K + K * D].reshape(K, D)
        scale = self.out_scale[K: K + K * D].reshape(K, D)
        g = 0.25 if self.pins_target else 1.0
        at = 0.5 if self.pins_target else 1.0
        bias = self.net.linears[-1].bias
        bias[K: K + K * D] = ((points.to(loc0) - loc0 - at * dloc) / (g * scale)).reshape(-1).to(bias)


class _GatedFlow(FlowDensity):
    """A :class:`~probflux.FlowDensity` whose conditioners see ``gate(t) * embed(t)``: equal maps wherever the gate is 0."""

    def __init__(self, dim: int, transforms: int, both: bool, **kwargs: Any) -> None:
        super().__init__(dim, transforms, **kwargs)
        self.both = both

    def _condition(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        gate = (t * (1 - t)) if self.both else t
        e = gate[:, None] * self.embed(t)
        return e if ctx is None else torch.cat([e, ctx], -1)


class FlowBridge(TimeDensity):
    r"""``rho_t = (S_t \circ S_0^{-1})_# m_t`` with a :class:`BridgeMixture` ``m_t`` and a gated coupling flow ``S_t``:
    ``rho_0 = initial`` and (with a target) ``rho_1 = target`` exactly (module doc).

    Args:
        initial, target, replicas, coupling, loc_scale: as :class:`BridgeMixture` (the inner bridge; weights constant).
        transforms: coupling layers of ``S`` (0: ``rho_t`` is the mixture bridge).
        Keyword-only: hidden/layers (both networks), base_hidden/base_layers (the mixture bridge's network if given),
        context_dim, coupling_kind (``"affine"`` or ``"spline"``), bins, bound, max_frequency.
        identity_init: zero the last layer of every conditioner of ``S`` (zuko's coupling hyper-networks and the
            element-wise affine), so ``S_t`` is the same map for every ``t`` and ``F_t = id`` at the start:
            ``rho_t`` starts as the mixture bridge ``m_t`` and the flow only departs from it where the objective
            pays for it (the last layers still get gradients). Default False: random conditioners.
    """

    has_rosenblatt = False

    def __init__(self, initial: Any, target: Any = None, transforms: int = 2, *, replicas: int = 1, coupling: str = "ot",
                 loc_scale: float = 1.0, hidden: int = 64, layers: int = 2, base_hidden: Optional[int] = None,
                 base_layers: Optional[int] = None, context_dim: int = 0, coupling_kind: str = "affine", bins: int = 8,
                 bound: float = 5.0, max_frequency: float = 8.0, identity_init: bool = False) -> None:
        base = BridgeMixture(initial, target, replicas=replicas, coupling=coupling, loc_scale=loc_scale, fixed_weights=True,
                             hidden=base_hidden or hidden, layers=base_layers or layers, context_dim=context_dim,
                             max_frequency=max_frequency)
        super().__init__(base.dim, context_dim)
        self.base = base
        self.pins_initial, self.pins_target = base.pins_initial, base.pins_target
        self.flow = _GatedFlow(base.dim, transforms, base.pins_target, hidden=hidden, layers=layers, context_dim=context_dim,
                               coupling=coupling_kind, bins=bins, bound=bound, max_frequency=max_frequency)
        if identity_init:
            with torch.no_grad():
                lasts = [self.flow.affine.net.linears[-1]]
                lasts += [block.hyper[-1] for block in self.flow.couplings]  # zuko MLP: a Sequential ending in its Linear
                for lin in lasts:
                    lin.weight.zero_()
                    lin.bias.zero_()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.base.components}, transforms={self.flow.transforms}, " \
               f"pins=({self.pins_initial}, {self.pins_target})"

    # F_t = S_t o S_0^{-1}
    def _forward_map(self, t: Tensor, y: Tensor, ctx: Optional[Tensor]) -> Tensor:
        w, _ = self.flow._pull(torch.zeros_like(t), y, ctx)
        return self.flow._map(t, w, ctx)

    def _inverse(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """``y = F_t^{-1}(x)`` and ``log|det DF_t^{-1}(x)| = log|det DS_0(w)| - log|det DS_t(w)|``."""
        w, ladj_t = self.flow._pull(t, x, ctx)
        y, ladj_0 = self.flow._push(torch.zeros_like(t), w, ctx)
        return y, ladj_0 - ladj_t

    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        y, ladj = self._inverse(t, x, ctx)
        return self.base._log_prob(t, y, ctx) + ladj

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        y, _ = self._inverse(t, x, ctx)
        um = self.base._velocity(t, y, ctx)
        t = t.contiguous()
        return torch.func.jvp(lambda s, v: self._forward_map(s, v, ctx), (t, y), (torch.ones_like(t), um))[1]

    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._forward_map(t, self.base._sample(t, ctx), ctx)

    def _reparameterize(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        with torch.no_grad():
            y_hat = self._inverse(t, x_hat, ctx)[0]
        if self.base.components == 1:  # pathwise through the one Gaussian component (= its implicit gradient)
            _, loc, log_scale = self.base._params(t, ctx)
            mu, s = loc[:, 0], log_scale[:, 0].exp()
            y = mu + s * ((y_hat - mu) / s).detach()
        else:
            y = self.base._reparameterize(t, y_hat, ctx)
        return self._forward_map(t, y, ctx)
