r"""Time-conditioned coupling flows: ``rho_t`` is the push-forward of ``N(0, I)`` by ``x = T_t(z)`` (docs/mathematics.md §5).

Every layer of ``T_t`` sees a sinusoidal embedding of ``t`` (and the context) and has an analytic inverse,
so the density is exact by change of variables and the velocity is exact by

.. math:: u_t(x) = \partial_t T_t(z)\big|_{z = T_t^{-1}(x)}, \qquad j_t = \rho_t u_t,

one inverse pass and one forward-mode derivative in ``t`` (``torch.func.jvp``). The coupling layers
are zuko's (:class:`zuko.flows.GeneralCouplingTransform` with affine or rational-quadratic-spline
univariate maps), conditioned on ``[embed(t), context]`` as zuko's ``context``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn
from zuko.flows import GeneralCouplingTransform
from zuko.flows.gaussianization import ElementWiseTransform
from zuko.transforms import CouplingTransform, MonotonicAffineTransform, MonotonicRQSTransform

from .._validation import TimeLike
from ..nn import MLP, SinusoidalEmbedding
from .base import TimeDensity

__all__ = ["FlowDensity", "TimeAffine", "COUPLINGS"]

COUPLINGS = ("spline", "affine")
_LOG_2PI = math.log(2 * math.pi)


class TimeAffine(nn.Module):
    r"""Element-wise time-dependent affine map ``x = m(h) + exp(a(h)) * y`` with ``h = [embed(t), context]``.

    ``m, a: (N, D)`` come from an MLP of ``h``; ``a`` is softly bounded to ``(-max_log_scale, max_log_scale)``.
    Alone (``transforms=0``) it gives the Gaussian path ``N(m_t, diag(exp(2 a_t)))`` with the closed-form
    velocity ``u = m' + a' (x - m)``.
    """

    def __init__(self, dim: int, in_features: int, hidden: int, layers: int, max_log_scale: float = 7.0) -> None:
        super().__init__()
        self.dim = dim
        self.max_log_scale = float(max_log_scale)
        self.net = MLP(in_features, 2 * dim, hidden, layers)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``h: (N, F)`` → shift ``m: (N, D)`` and log-scale ``a: (N, D)``."""
        m, r = self.net(h).split(self.dim, -1)
        B = self.max_log_scale
        return m, B * torch.tanh(r / B)


def _inverse_and_ladj(f, y: Tensor) -> tuple[Tensor, Tensor]:
    """``x = f^{-1}(y)`` and ``log |det df/dx|`` at ``x``, ``(N,)``, with one conditioner pass for a coupling."""
    if isinstance(f, CouplingTransform):
        y_a, y_b = f.split(y)
        g = f.meta(y_a)
        x_b = g.inv(y_b)
        return f.merge(y_a, x_b, y.shape), g.log_abs_det_jacobian(x_b, y_b)
    x = f.inv(y)
    return x, f.log_abs_det_jacobian(x, y)


class FlowDensity(TimeDensity):
    r"""``rho_t = (T_t)_# N(0, I)`` for a time-conditioned coupling flow ``T_t`` (docs/mathematics.md §5).

    .. math:: T_t = A_t \circ C^{(L)}_t \circ \dots \circ C^{(1)}_t, \qquad
              \log\rho_t(x) = \log\mathcal N(z) - \log|\det \partial_z T_t(z)|,\; z = T_t^{-1}(x)

    ``C^{(l)}_t`` are coupling layers (alternating checkerboard masks) whose univariate maps are affine
    or monotonic rational-quadratic splines (identity outside ``[-bound, bound]``), with parameters from
    an MLP of the untouched half and ``[embed(t), context]``; ``A_t`` is a :class:`TimeAffine` layer.
    For ``dim = 1`` the "couplings" are element-wise maps conditioned on time only.

    Costs: ``log_prob`` one inverse pass; ``velocity`` one inverse pass plus one forward pass with a
    tangent in ``t``; ``rsample`` one forward pass (pathwise gradients); :meth:`kinetic_energy`
    ``|d/dt T_t(z)|^2`` one forward pass with a tangent, no inverse. ``has_rosenblatt`` is False:
    ``cdf``/``icdf`` raise; use ``sample``/``rsample`` and :meth:`to_base`/:meth:`from_base`.

    >>> import probflux as pf
    >>> rho = pf.FlowDensity(2, 2, hidden=8, coupling="affine").double()
    >>> x = rho.sample(0.3, 5)
    >>> bool((rho.from_base(0.3, rho.to_base(0.3, x)) - x).abs().max() < 1e-10)
    True
    >>> tuple(rho.velocity(0.3, x).shape), tuple(rho.kinetic_energy(0.3, 5).shape)
    ((5, 2), (5,))

    Args:
        dim: dimension ``D``. transforms: number of coupling layers ``L`` (0: the time-affine layer only).
        Keyword-only: hidden: width of every conditioner MLP. layers: hidden layers per conditioner.
        context_dim: size of an optional conditioning vector. max_frequency / time_features: the
        sinusoidal time embedding (highest frequency in rad per unit time; odd size). max_log_scale:
        bound of the time-affine log-scale. coupling: ``"spline"`` (rational-quadratic, ``bins`` bins
        on ``[-bound, bound]``) or ``"affine"``.
    """

    has_rosenblatt = False
    _no_rosenblatt_hint = ("; use to_base(t, x) for z = T_t^{-1}(x), standard normal under rho_t, and from_base(t, z) "
                           "with z ~ N(0, I), or sample/rsample")

    def __init__(
        self,
        dim: int,
        transforms: int = 4,
        *,
        hidden: int = 64,
        layers: int = 2,
        context_dim: int = 0,
        max_frequency: float = 32.0,
        time_features: int = 17,
        max_log_scale: float = 7.0,
        coupling: str = "spline",
        bins: int = 8,
        bound: float = 5.0,
    ) -> None:
        super().__init__(dim, context_dim)
        if isinstance(transforms, bool) or not isinstance(transforms, int) or transforms < 0:
            raise ValueError(f"transforms must be a non-negative integer; got {transforms!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer; got {hidden!r}")
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer; got {layers!r}")
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}; got {coupling!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2; got {bins!r}")
        if not 0.0 < float(bound) < float("inf"):
            raise ValueError(f"bound must be a finite positive number; got {bound!r}")
        self.coupling_name = coupling
        self.transforms = transforms
        self.bins, self.bound = bins, float(bound)
        self.embed = SinusoidalEmbedding(time_features, max_frequency)
        features = time_features + context_dim
        if coupling == "spline":
            # contiguous: softmax over a strided slice of the conditioner output is ~10x slower on CPU
            univariate = lambda w, h, d: MonotonicRQSTransform(w.contiguous(), h.contiguous(), d.contiguous(), bound=self.bound)  # noqa: E731
            shapes = [(bins,), (bins,), (bins - 1,)]
        else:
            univariate, shapes = MonotonicAffineTransform, [(), ()]
        kwargs = dict(univariate=univariate, shapes=shapes, hidden_features=[hidden] * layers, activation=nn.SiLU)
        if dim == 1:
            blocks = [ElementWiseTransform(1, features, **kwargs) for _ in range(transforms)]
        else:
            blocks = [GeneralCouplingTransform(dim, features, mask=torch.arange(dim) % 2 == i % 2, **kwargs)
                      for i in range(transforms)]
            for block in blocks:  # the trainer's EMA averages every buffer: keep zuko's bool mask a plain attribute
                block.mask = block._buffers.pop("mask")
        self.couplings = nn.ModuleList(blocks)
        self.affine = TimeAffine(dim, features, hidden, layers, max_log_scale)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, transforms={self.transforms}, coupling={self.coupling_name!r}, "
                f"context_dim={self.context_dim}")

    # ------------------------------------------------------------------ the map T_t
    def _condition(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        e = self.embed(t)
        return e if ctx is None else torch.cat([e, ctx], -1)

    def _push(self, t: Tensor, z: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """``x = T_t(z)`` and ``log|det dT_t/dz|``: ``(N, D)``, ``(N,)``."""
        h = self._condition(t, ctx)
        y, ladj = z, z.new_zeros(z.shape[0])
        for block in self.couplings:
            y, dl = block(h).call_and_ladj(y)
            ladj = ladj + dl
        m, a = self.affine(h)
        return m + a.exp() * y, ladj + a.sum(-1)

    def _map(self, t: Tensor, z: Tensor, ctx: Optional[Tensor]) -> Tensor:
        """``x = T_t(z)`` without the log-determinant, ``(N, D)``."""
        h = self._condition(t, ctx)
        y = z
        for block in self.couplings:
            y = block(h)(y)
        m, a = self.affine(h)
        return m + a.exp() * y

    def _pull(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """``z = T_t^{-1}(x)`` and ``log|det dT_t/dz|`` at that ``z``: ``(N, D)``, ``(N,)``."""
        h = self._condition(t, ctx)
        m, a = self.affine(h)
        y, ladj = (x - m) * torch.exp(-a), a.sum(-1)
        for block in reversed(self.couplings):
            y, dl = _inverse_and_ladj(block(h), y)
            ladj = ladj + dl
        return y, ladj

    def _map_rate(self, t: Tensor, z: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """``T_t(z)`` and ``d/dt T_t(z)`` at fixed ``z`` (one forward pass with a tangent in ``t``)."""
        t = t.contiguous()  # forward-mode AD cannot write into an expanded (stride-0) time tensor
        return torch.func.jvp(lambda s: self._map(s, z, ctx), (t,), (torch.ones_like(t),))

    # ------------------------------------------------------------------ TimeDensity hooks
    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        z, ladj = self._pull(t, x, ctx)
        return -0.5 * (z * z).sum(-1) - 0.5 * self.dim * _LOG_2PI - ladj

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        z, _ = self._pull(t, x, ctx)
        return self._map_rate(t, z, ctx)[1]

    def _base_noise(self, n: int) -> Tensor:
        return torch.randn(n, self.dim, dtype=self.dtype, device=self.device)

    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._map(t, self._base_noise(t.shape[0]), ctx)

    def _rsample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        # exact samples T_t(z), z ~ N(0, I), with pathwise gradients in the parameters
        return self._map(t, self._base_noise(t.shape[0]), ctx)

    def _reparameterize(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        # pathwise: x = T_t(z) at the fixed z = T_t^{-1}(x_hat), equal to x_hat up to round-off
        with torch.no_grad():
            z = self._pull(t, x_hat, ctx)[0]
        return self._map(t, z, ctx)

    # ------------------------------------------------------------------ flow-specific API
    def to_base(self, t: TimeLike, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``z = T_t^{-1}(x)``, ``x: (N, D)`` → ``(N, D)`` (standard normal when ``x ~ rho_t``)."""
        return self._pull(*self._prepare(t, x, context))[0]

    def from_base(self, t: TimeLike, z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``x = T_t(z)``, ``z: (N, D)`` → ``(N, D)``, differentiable in ``z`` and the parameters."""
        return self._map(*self._prepare(t, z, context, name="z"))

    def path_velocity(self, t: TimeLike, z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``d/dt T_t(z)`` at fixed ``z: (N, D)`` → ``(N, D)``: the velocity at ``x = T_t(z)``, no inverse pass."""
        return self._map_rate(*self._prepare(t, z, context, name="z"))[1]

    def kinetic_energy(self, t: TimeLike, n: Optional[int] = None, context: Optional[Tensor] = None, *,
                       z: Optional[Tensor] = None) -> Tensor:
        r"""``|d/dt T_t(z)|^2`` per draw, ``(N,)``: its mean estimates ``E_{rho_t} |u_t|^2`` without an inverse pass.

        The same law as the generic :meth:`TimeDensity.kinetic_energy` (``x = T_t(z)`` is an exact sample and
        ``d/dt T_t(z)`` its velocity), at one forward pass with a tangent. ``z: (N, D)`` base points
        (default: fresh ``N(0, I)`` draws, one per time).
        """
        if z is None:
            tt, ctx = self._prepare_times(t, n, context)
            z = self._base_noise(tt.shape[0])
        else:
            tt, z, ctx = self._prepare(t, z, context, name="z")
        return self._map_rate(tt, z, ctx)[1].pow(2).sum(-1)
