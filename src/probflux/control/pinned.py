r"""A factorized Gaussian mixture whose ``rho_0`` *is* a given Gaussian / diagonal Gaussian mixture.

The mixture parameters are ``p(t) = p_0 + t * (scale * net(t))`` (logits, means, raw log-scales), with
``p_0`` the parameters of the initial law, so ``rho_0`` equals the initial law exactly for every weight
value and the term ``E_{q0}[-log rho_0]`` of the control objective is a constant (its minimum, the
entropy of ``q0``) and is dropped. ``K_model`` must be a multiple of the initial law's ``K``: each
initial component is replicated with its weight split evenly, which leaves the mixture unchanged.
This keeps the exact KR/mixture flux of :class:`~probflux.FactorizedMixture`; only the parameter map changes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..densities.factorized import FactorizedMixture
from .laws import Gaussian, GaussianMixture

__all__ = ["PinnedMixture"]


class PinnedMixture(FactorizedMixture):
    """:class:`~probflux.FactorizedMixture` (``family="gaussian"``) with ``rho_0 = initial`` exactly.

    Args:
        initial: a :class:`Gaussian` or :class:`GaussianMixture` with *diagonal* covariances.
        components: ``K``, a multiple of the initial law's number of components.
        loc_scale: the network's mean outputs are multiplied by it (the problem's length scale, so a
            unit-scale network output moves a component by ``loc_scale``).
        fixed_weights: keep the mixture weights at their initial values for all ``t``. With ``flux="mixture"``
            the velocity is then the responsibility-weighted affine field ``sum_k pi_k (mu_k' + (log s_k)' (x - mu_k))``,
            bounded by the components' own speeds (no mass-transfer term, whose ``prod r / rho`` factor is
            heavy-tailed between separated components, nor KR coupling terms).
        Other keyword arguments go to :class:`~probflux.FactorizedMixture`.
    """

    pins_initial, pins_target = True, False  # read by probflux.control.bridge.pins

    def __init__(self, initial, components: int = 8, *, loc_scale: float = 1.0, fixed_weights: bool = False, **kwargs) -> None:
        if not isinstance(initial, (Gaussian, GaussianMixture)):
            raise TypeError(f"initial must be a probflux.control.Gaussian or GaussianMixture to be pinned; got {type(initial).__name__}")
        if kwargs.get("family", "gaussian") != "gaussian":
            raise ValueError("PinnedMixture: family must be 'gaussian' (the initial law is Gaussian)")
        kwargs["family"] = "gaussian"
        w, means, covs = initial.components
        K0, D = means.shape
        off = covs - torch.diag_embed(torch.diagonal(covs, dim1=-2, dim2=-1))
        if bool((off.abs() > 1e-12).any()):
            raise ValueError("PinnedMixture: the initial covariances must be diagonal "
                             "(a factorized model cannot pin a correlated Gaussian)")
        if isinstance(components, bool) or not isinstance(components, int) or components < 1 or components % K0:
            raise ValueError(f"components must be a positive multiple of the initial law's {K0} components; got {components!r}")
        if not float(loc_scale) > 0:
            raise ValueError(f"loc_scale must be > 0; got {loc_scale!r}")
        super().__init__(D, components=components, **kwargs)
        rep = components // K0
        B = self.max_log_scale
        log_scale0 = 0.5 * torch.log(torch.diagonal(covs, dim1=-2, dim2=-1))  # (K0, D)
        if bool((log_scale0.abs() >= B).any()):
            raise ValueError(f"PinnedMixture: initial scales outside the model's bound exp(+-{B})")
        raw0 = B * torch.atanh(log_scale0 / B)
        logits0 = torch.log(w / rep).repeat_interleave(rep)
        anchor = torch.cat([logits0, means.repeat_interleave(rep, 0).reshape(-1), raw0.repeat_interleave(rep, 0).reshape(-1)])
        scale = torch.ones_like(anchor)
        scale[components: components + components * D] = float(loc_scale)
        if fixed_weights:
            scale[:components] = 0.0
        self.fixed_weights = bool(fixed_weights)
        # FactorizedMixture's random mean biases stay: at t = 1 the components start at loc_scale * N(0, 1)
        # around the initial means, which breaks the symmetry of the replicated components.
        self.register_buffer("anchor", anchor.to(torch.get_default_dtype()))
        self.register_buffer("out_scale", scale.to(torch.get_default_dtype()))

    @torch.no_grad()
    def init_endpoints(self, points: Tensor) -> None:
        """Start component ``k`` on the straight line from its initial mean to ``points[k]`` (``(K, D)``):
        the mean biases of the last layer become ``(points - mean_0) / loc_scale`` (the weights stay small)."""
        K, D = self.components, self.dim
        if points.shape != (K, D):
            raise ValueError(f"points must be ({K}, {D}); got {tuple(points.shape)}")
        loc0 = self.anchor[K: K + K * D].reshape(K, D)
        scale = self.out_scale[K: K + K * D].reshape(K, D)
        bias = self.net.linears[-1].bias
        bias[K: K + K * D] = ((points.to(loc0) - loc0) / scale).reshape(-1).to(bias)

    def _pinned(self, t: Tensor, out: Tensor) -> Tensor:
        return self.anchor + t[:, None] * self.out_scale * out

    def _params(self, t: Tensor, ctx: Optional[Tensor]):
        return self._split(self._pinned(t, self.net(self._net_input(t, ctx)[0])))

    def _params_and_rates(self, t: Tensor, ctx: Optional[Tensor]):
        inp, dinp = self._net_input(t, ctx)
        out, dout, _ = self.net.jvp(inp, dinp)
        full = self._pinned(t, out)
        dfull = self.out_scale * (out + t[:, None] * dout)  # d/dt [anchor + t * scale * net(t)]
        K, D = self.components, self.dim
        raw = full[:, K + K * D:].reshape(full.shape[0], K, D)
        return self._split(full), self._split(dfull, tangent=True, raw=raw)
