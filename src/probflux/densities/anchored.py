r"""Data-anchored Gaussian kernel mixtures: kernels that sit on observed cells and move along smooth paths.

.. math:: \rho_t(x) = \sum_{m=1}^M \pi_m\, \mathcal N\big(x;\ \mu_m(t),\ \mathrm{diag}\, s_m(t)^2\big),
          \qquad \pi = \mathrm{softmax}(\text{logits}) \text{ constant in time.}

Each kernel is the push-forward of ``N(0, I)`` by ``x = mu_m(t) + s_m(t) z``, so it solves its own continuity
equation with the affine velocity ``v_m(x) = mu_m'(t) + (s_m'/s_m)(x - mu_m)``. With constant weights the
mixture's flux is the weighted sum of the kernels' fluxes (docs/mathematics.md §3, last paragraph):

.. math:: j_t(x) = \sum_m \pi_m \mathcal N_m(x)\, v_m(x), \qquad
          u_t(x) = \sum_m r_m(x)\, v_m(x), \quad r_m = \pi_m \mathcal N_m / \rho_t \text{ (responsibilities).}

**Paths.** ``mu_m(t)`` (and the pre-softplus scale ``r_m(t)``, ``s = s_min + softplus(r)``) are splines through
values at ``K`` knot times ``tau_0 < ... < tau_{K-1}`` (normally the training snapshot times, model units):
``y(t) = L(t) + curvature * (N(t) - L(t))``, with ``L`` the piecewise-linear and ``N`` the natural cubic spline
interpolant of the knot values. Both interpolate the knots, so ``curvature`` (in ``[0, 1]``, fixed) moves
between the McCann paths of chained couplings (``0``: straight between consecutive snapshots) and the C²
natural spline that uses the farther snapshots too (``1``). Beyond the end knots the paths continue linearly
with the end slope. Every spline is linear in the knot values, so ``mu(t) = B(t) @ knots`` with a basis
``B(t): (K,)`` — cheap, exact derivatives in ``t``.

**Initialisation** (:meth:`AnchoredMixture.from_paths`, :meth:`AnchoredMixture.from_snapshots`): one kernel per
trajectory of chained exact OT couplings between consecutive snapshots (:func:`probflux.transport.ot_trajectories`
on ``M`` cells drawn without replacement from each snapshot, so every coupling is a permutation), so at every
snapshot time the kernel centres are exactly ``M`` observed cells; bandwidths per knot from
:func:`select_bandwidth`. Training further (``probflux.train.fit`` with snapshot likelihood + kinetic energy)
refines knots, bandwidths and weights.

**Capabilities.** Exact sampling (pick a kernel, add Gaussian noise). The Rosenblatt transform is closed form
(conditionals of a diagonal Gaussian mixture are 1-D Gaussian mixtures), so ``has_rosenblatt = True`` and
``rsample`` uses the library's implicit reparameterisation (gradients reach weights, knots and scales).

**Cost.** ``O(N M D)`` per call. Points sharing a time (snapshot likelihoods, samples at one time) are scored
by matrix products per distinct time (``O(N M)`` memory); points at many distinct times are processed in
chunks so that no intermediate holds more than ``chunk_elements`` numbers.

Integration with the population benchmark (``benchmarks/bench_populations.py``), for a
:class:`probflux.data.snapshots.SnapshotSplit` ``split``::

    norm = split.normalizer
    times = [float(norm.t_to_model(float(t))) for t in split.train.times]
    cells = [norm.x_to_model(c) for c in split.train.samples]           # model coordinates
    rho = AnchoredMixture.from_snapshots(times, cells, components=2000, seed=seed, warp=True, bridge=0.5)
    dyn = probflux.Dynamics(rho)                                          # then heldout_snapshot_scores(dyn, norm, ...)

(``examples/anchored_populations.py`` trains and scores one held-out snapshot this way.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import mixture1d as m1
from .base import TimeDensity

__all__ = ["AnchoredMixture", "natural_spline_matrix", "select_bandwidth"]

_LOG_2PI = math.log(2 * math.pi)


def natural_spline_matrix(knots: Sequence[float]) -> np.ndarray:
    """``A: (K, K)`` with ``m = A y`` the second derivatives of the natural cubic spline through ``(knots, y)``
    (``m_0 = m_{K-1} = 0``; all zero for ``K = 2``)."""
    tau = np.asarray(knots, dtype=np.float64)
    K = len(tau)
    A = np.zeros((K, K))
    if K < 3:
        return A
    h = np.diff(tau)
    T = np.zeros((K - 2, K - 2))
    R = np.zeros((K - 2, K))
    for i in range(1, K - 1):
        r = i - 1
        T[r, r] = 2 * (h[i - 1] + h[i])
        if r > 0:
            T[r, r - 1] = h[i - 1]
        if r < K - 3:
            T[r, r + 1] = h[i]
        R[r, i - 1] += 6 / h[i - 1]
        R[r, i] += -6 / h[i - 1] - 6 / h[i]
        R[r, i + 1] += 6 / h[i]
    A[1:-1] = np.linalg.solve(T, R)
    return A


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


class AnchoredMixture(TimeDensity):
    r"""Constant-weight mixture of ``M`` diagonal Gaussian kernels on spline paths (see the module docstring).

    >>> import torch, probflux as pf
    >>> rho = pf.AnchoredMixture(2, 5, knots=[0.0, 0.5, 1.0]).double()
    >>> x = rho.sample(0.3, 8)
    >>> bool(pf.continuity_residual(rho, 0.3, x).relative.max() < 1e-10)
    True

    Args:
        dim: ``D``. components: ``M`` kernels. Keyword-only: knots: increasing knot times (model units, ``K >= 2``;
            default ``[0, 1/3, 2/3, 1]``). curvature: ``0`` (default) piecewise linear … ``1`` natural cubic spline
            (measured: the cubic overshoots on uneven snapshot grids, docs/populations.md). bridge: ``g`` of the
            Brownian-bridge spread ``s^2 = s_spline^2 + g^2 beta(t)`` between knots (trained like the other parameters).
            warp: clock times, one per knot: ``rho_t`` is the knot-time model at ``phi(t)``, ``phi`` the monotone PCHIP
            interpolant with ``phi(warp[k]) = knots[k]`` (the velocity gains the factor ``phi'(t)``).
        scale: ``"diagonal"`` (one bandwidth per coordinate) or ``"isotropic"``. per_kernel_scale: a bandwidth
            path per kernel (``True``) or one shared by all kernels (``False``, default). min_scale: ``s_min``.
        init_scale: the initial bandwidth. context_dim: a context shifts every kernel by ``(W_0 + t W_1) c``
            (velocity ``+ W_1 c``). learn_weights: whether the weight logits are trained (initially uniform).
        chunk_elements: memory bound of the per-point path (numbers per intermediate).
    """

    has_rosenblatt = True

    def __init__(self, dim: int, components: int = 64, *, knots: Optional[Sequence[float]] = None, curvature: float = 0.0,
                 scale: str = "diagonal", per_kernel_scale: bool = False, min_scale: float = 1e-3, init_scale: float = 0.5,
                 bridge: float = 0.0, warp: Optional[Sequence[float]] = None, context_dim: int = 0, learn_weights: bool = True,
                 chunk_elements: int = 2 ** 22) -> None:
        super().__init__(dim, context_dim)
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be a positive integer; got {components!r}")
        knots = [0.0, 1 / 3, 2 / 3, 1.0] if knots is None else [float(v) for v in knots]
        if len(knots) < 2 or not all(b > a for a, b in zip(knots, knots[1:])) or not all(math.isfinite(v) for v in knots):
            raise ValueError(f"knots must be at least 2 strictly increasing finite times; got {knots}")
        if not 0.0 <= float(curvature) <= 1.0:
            raise ValueError(f"curvature must lie in [0, 1]; got {curvature!r}")
        if scale not in ("diagonal", "isotropic"):
            raise ValueError(f"scale must be 'diagonal' or 'isotropic'; got {scale!r}")
        if not min_scale > 0 or not init_scale > min_scale:
            raise ValueError(f"need 0 < min_scale < init_scale; got min_scale={min_scale!r}, init_scale={init_scale!r}")
        if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
            raise ValueError(f"chunk_elements must be a positive integer; got {chunk_elements!r}")
        self.components, self.scale_kind, self.per_kernel_scale = components, scale, bool(per_kernel_scale)
        self.min_scale, self.chunk_elements = float(min_scale), chunk_elements
        K, M, D = len(knots), components, dim
        # float64 buffers, so that a model moved to float64 has its knot times exactly (``.float()`` rounds them)
        self.register_buffer("knots", torch.tensor(knots, dtype=torch.float64))
        self.register_buffer("spline", torch.tensor(natural_spline_matrix(knots), dtype=torch.float64))
        self.register_buffer("curvature", torch.tensor(float(curvature)))
        self.loc = nn.Parameter(torch.randn(M, 1, D).repeat(1, K, 1) + 0.3 * torch.randn(M, K, D))
        raw = _inverse_softplus(torch.tensor(float(init_scale) - self.min_scale))
        self.raw_scale = nn.Parameter(raw.expand(M if per_kernel_scale else 1, K, D if scale == "diagonal" else 1).clone())
        self.logits = nn.Parameter(torch.zeros(M), requires_grad=bool(learn_weights))
        # time warp: clock time -> progress, the monotone (PCHIP) interpolant through (warp[k], knots[k])
        self.has_warp = warp is not None
        if warp is not None:
            from scipy.interpolate import PchipInterpolator

            clock = [float(v) for v in warp]
            if len(clock) != K or not all(b > a for a, b in zip(clock, clock[1:])):
                raise ValueError(f"warp must hold {K} strictly increasing clock times (one per knot); got {clock}")
            pp = PchipInterpolator(np.asarray(clock), np.asarray(knots))
            self.register_buffer("warp_clock", torch.tensor(clock, dtype=torch.float64))
            self.register_buffer("warp_coef", torch.tensor(pp.c.T.copy(), dtype=torch.float64))  # (K-1, 4), highest power first
        # Brownian-bridge spread between knots: s^2 = s_spline^2 + bridge^2 beta(t), beta = (t - tau_i)(tau_{i+1} - t)/h_i
        self.bridge = nn.Parameter(torch.full((D if scale == "diagonal" else 1,), float(bridge)))
        if context_dim:
            self.context_shift = nn.Parameter(torch.zeros(2, D, context_dim))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, components={self.components}, knots={len(self.knots)}, curvature={float(self.curvature):g}, "
                f"scale={self.scale_kind!r}, per_kernel_scale={self.per_kernel_scale}, context_dim={self.context_dim}")

    # ------------------------------------------------------------------ construction from data
    @classmethod
    def from_paths(cls, times: Sequence[float], paths: Tensor, *, scales: Optional[Tensor] = None, **kwargs) -> AnchoredMixture:
        """Kernels whose centres pass through ``paths: (M, K, D)`` at the knot ``times: (K,)`` (model units);
        ``scales``: the bandwidth per knot, ``(K, D)``, ``(K,)`` or a scalar (default ``init_scale``).
        Keyword arguments go to the constructor (``knots`` is ``times``). Returns a float64 model."""
        paths = torch.as_tensor(paths, dtype=torch.float64)
        if paths.dim() != 3 or paths.shape[1] != len(times):
            raise ValueError(f"paths must have shape (M, {len(times)}, D), one point per knot time; got {tuple(paths.shape)}")
        M, K, D = paths.shape
        model = cls(D, M, knots=times, **kwargs).double()
        with torch.no_grad():
            model.loc.copy_(paths)
            if scales is not None:
                s = torch.as_tensor(scales, dtype=torch.float64)
                s = s.reshape(K, -1) if s.dim() else s.expand(K, 1)
                if not bool((s > model.min_scale).all()):
                    raise ValueError(f"scales must all exceed min_scale={model.min_scale}; got min {float(s.min()):.3g}")
                if model.scale_kind == "isotropic":
                    s = s.mean(-1, keepdim=True)
                model.raw_scale.copy_(_inverse_softplus(s - model.min_scale).expand_as(model.raw_scale))
        return model

    @classmethod
    def from_snapshots(cls, times: Sequence[float], cells: Sequence[Tensor], *, components: int = 2000, seed: int = 0,
                       bandwidth: str = "w1", warp: bool = False, **kwargs) -> AnchoredMixture:
        """Kernels on chained exact OT couplings of the snapshots ``cells[k]: (N_k, D)`` at ``times[k]`` (model units).

        If every snapshot has at least ``M = components`` cells, ``M`` cells are drawn without replacement from each
        (seeded): the couplings between these equal-size clouds are permutations (:func:`probflux.transport.ot_plan`)
        and chaining them (:func:`probflux.transport.ot_trajectories`) gives ``M`` paths through distinct observed
        cells. Otherwise every snapshot keeps at most ``M`` cells and ``M`` paths are drawn through the Markov chain
        of the (non-permutation) couplings, so a small snapshot's cells carry several kernels.
        Bandwidths per knot: :func:`select_bandwidth` with ``criterion=bandwidth`` on the snapshot's cells that carry
        no kernel (all its cells when every one does). ``warp=True``: the paths run at constant Wasserstein speed in
        a progress variable, knots at the cumulative ``W_2`` of the consecutive couplings (rescaled to span the same
        interval as ``times``), and clock time maps to progress monotonically (PCHIP through the snapshots), so the
        speed between snapshots is read off the other snapshots. Keyword arguments go to :meth:`from_paths`.
        """
        from ..transport import ot_trajectories  # layer 0

        if len(cells) != len(times) or len(cells) < 2:
            raise ValueError(f"cells must hold one cloud per time (at least 2); got {len(cells)} clouds for {len(times)} times")
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be a positive integer; got {components!r}")
        xs = [torch.as_tensor(c, dtype=torch.float64) for c in cells]
        gen = torch.Generator().manual_seed(int(seed))
        perms = [torch.randperm(len(x), generator=gen) for x in xs]
        used = [x[p[:components]] for x, p in zip(xs, perms)]
        rest = [x[p[components:]] if len(x) > components else x for x, p in zip(xs, perms)]
        from ..transport import ot_plan

        plans = [ot_plan(used[k], used[k + 1]) for k in range(len(used) - 1)]
        if all(len(u) == components for u in used):
            index, paths = ot_trajectories(used, plans=plans)
        else:
            index, paths = ot_trajectories(used, plans=plans, n=components, seed=int(seed))
        if warp:
            steps = torch.tensor([math.sqrt(max(p.cost(used[k], used[k + 1]), 0.0)) for k, p in enumerate(plans)])
            progress = torch.cat([torch.zeros(1), steps.cumsum(0)]).double()
            t0, t1 = float(times[0]), float(times[-1])
            kwargs["warp"] = [float(v) for v in times]
            times = (t0 + (t1 - t0) * progress / progress[-1].clamp_min(1e-12)).tolist()
        anchors = [u[index[:, k].unique()] for k, u in enumerate(used)]
        scales = torch.stack([select_bandwidth(a, r, criterion=bandwidth, seed=seed) for a, r in zip(anchors, rest)])
        return cls.from_paths(times, paths, scales=scales, **kwargs)

    # ------------------------------------------------------------------ spline basis and kernel parameters
    def _progress(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``p = phi(t)`` and ``phi'(t)``, ``(N,)``: the warp from clock time to the knots' time (identity without one);
        beyond the end clock times it continues linearly with the end slope."""
        if not self.has_warp:
            return t, torch.ones_like(t)
        tau, c = self.warp_clock.to(t.dtype), self.warp_coef.to(t.dtype)
        tc = t.clamp(float(tau[0]), float(tau[-1]))
        i = (torch.searchsorted(tau, tc.detach().contiguous(), right=True) - 1).clamp(0, tau.shape[0] - 2)
        d = tc - tau[i]
        ci = c[i]
        p = ((ci[:, 0] * d + ci[:, 1]) * d + ci[:, 2]) * d + ci[:, 3]
        dp = (3 * ci[:, 0] * d + 2 * ci[:, 1]) * d + ci[:, 2]
        return p + (t - tc) * dp, dp

    def _bridge_profile(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``beta(t) = (t - tau_i)(tau_{i+1} - t) / h_i`` on knot interval ``i`` (0 at the knots and outside), and
        ``beta'(t)``: the variance profile of a Brownian bridge of unit diffusion between consecutive knots. ``(N,)``."""
        t, dp = self._progress(t)
        tau = self.knots.to(t.dtype)
        inside = (t > tau[0]) & (t < tau[-1])
        tc = t.clamp(float(tau[0]), float(tau[-1]))
        i = (torch.searchsorted(tau, tc.detach().contiguous(), right=True) - 1).clamp(0, tau.shape[0] - 2)
        lo, hi = tau[i], tau[i + 1]
        beta = (tc - lo) * (hi - tc) / (hi - lo)
        dbeta = (lo + hi - 2 * tc) / (hi - lo)
        zero = torch.zeros_like(t)
        return torch.where(inside, beta, zero), torch.where(inside, dbeta * dp, zero)

    def _basis(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``B(t), B'(t): (N, K)``: path values are ``B(t) @ knot values`` (at the warped time ``phi(t)``)."""
        t, dp = self._progress(t)
        tau = self.knots.to(t.dtype)
        A = self.spline.to(t.dtype)
        lam = self.curvature.to(t.dtype)
        K = tau.shape[0]
        tc = t.clamp(float(tau[0]), float(tau[-1]))
        i = (torch.searchsorted(tau, tc.detach().contiguous(), right=True) - 1).clamp(0, K - 2)
        h = tau[i + 1] - tau[i]
        b = (tc - tau[i]) / h
        a = 1 - b
        eye = torch.eye(K, dtype=t.dtype, device=t.device)
        lin = a[:, None] * eye[i] + b[:, None] * eye[i + 1]
        dlin = (eye[i + 1] - eye[i]) / h[:, None]
        cub = (h ** 2 / 6)[:, None] * ((a ** 3 - a)[:, None] * A[i] + (b ** 3 - b)[:, None] * A[i + 1])
        dcub = (h / 6)[:, None] * (-(3 * a ** 2 - 1)[:, None] * A[i] + (3 * b ** 2 - 1)[:, None] * A[i + 1])
        B, dB = lin + lam * cub, dlin + lam * dcub
        return B + (t - tc)[:, None] * dB, dB * dp[:, None]  # linear continuation beyond the end knots

    def _scale_path(self, t: Tensor, B: Tensor, dB: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """``s`` and ``s'/s`` for knot values ``raw: (..., K, Ds)`` at times ``t: (N,)`` with bases ``(N, K)`` →
        ``(N, ..., Ds)``: ``s^2 = (s_min + softplus(r(t)))^2 + bridge^2 beta(t)``."""
        r = torch.einsum("nk,...kd->n...d", B, raw)
        dr = torch.einsum("nk,...kd->n...d", dB, raw)
        s0 = self.min_scale + F.softplus(r)
        ds0 = torch.sigmoid(r) * dr
        shape = (-1,) + (1,) * (raw.dim() - 1)  # (N,) broadcast over (..., Ds)
        beta, dbeta = self._bridge_profile(t)
        g2 = self.bridge.pow(2)
        var = s0 ** 2 + g2 * beta.reshape(shape)
        rate = (s0 * ds0 + 0.5 * g2 * dbeta.reshape(shape)) / var
        return var.sqrt(), rate

    def _kernels(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Centres ``mu: (N, M, D)``, their rates ``mu'``, scales ``s: (N, Ms, Ds)`` and ``s'/s``, at times ``t: (N,)``."""
        B, dB = self._basis(t)
        mu = torch.einsum("nk,mkd->nmd", B, self.loc)
        dmu = torch.einsum("nk,mkd->nmd", dB, self.loc)
        s, rate = self._scale_path(t, B, dB, self.raw_scale)
        return mu, dmu, s, rate

    def _shift(self, t: Tensor, ctx: Optional[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """The context's shift ``(W_0 + t W_1) c`` and its rate ``W_1 c``, ``(N, D)`` each (None without context)."""
        if ctx is None or not self.context_dim:
            return None, None
        W0, W1 = self.context_shift
        rate = ctx @ W1.T
        return ctx @ W0.T + t[:, None] * rate, rate

    # ------------------------------------------------------------------ evaluation
    def _fields(self, t: Tensor, x: Tensor, ctx: Optional[Tensor], velocity: bool, score: bool
                ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """``log rho: (N,)`` and, on request, ``u`` and ``grad log rho: (N, D)``."""
        shift, shift_rate = self._shift(t, ctx)
        if shift is not None:
            x = x - shift
        uniq, inverse = torch.unique(t.detach(), return_inverse=True)
        # shared times (and no gradient in t, which each point must get from its own t): matrix products per time
        if not t.requires_grad and (uniq.numel() == 1 or 4 * uniq.numel() <= t.numel()):
            out = self._fields_grouped(t, x, uniq, inverse, velocity, score)
        else:
            out = self._fields_pointwise(t, x, velocity, score)
        lp, u, g = out
        if u is not None and shift_rate is not None:
            u = u + shift_rate
        return lp, u, g

    def _fields_grouped(self, t: Tensor, x: Tensor, uniq: Tensor, inverse: Tensor, velocity: bool, score: bool
                        ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        # one time per group: the quadratic forms are matrix products, O(n M) memory
        N, D = x.shape
        log_w = torch.log_softmax(self.logits, 0)
        lp = x.new_empty(N)
        u = x.new_empty(N, D) if velocity else None
        g = x.new_empty(N, D) if score else None
        r = None
        parts_lp, parts_u, parts_g, rows = [], [], [], []
        step = max(1, self.chunk_elements // self.components)  # rows per chunk: (rows, M) intermediates
        for k in range(uniq.numel()):
            members = (inverse == k).nonzero().squeeze(1)
            mu, dmu, s, rate = (v[0] for v in self._kernels(t[members[:1]]))
            for lo in range(0, members.numel(), step):
                idx = members[lo:lo + step]
                xg = x[idx]
                inv = s.expand(-1, D).pow(-2) if s.shape[-1] == 1 else s.pow(-2)  # (Ms, D)
                c = mu.detach().mean(0)
                xc, muc = xg - c, mu - c
                quad = (xc * xc) @ inv.T - 2 * xc @ (muc * inv).T + (muc * muc * inv).sum(-1)
                log_det = torch.log(s).sum(-1) * (D / s.shape[-1])
                joint = log_w - 0.5 * quad - log_det - 0.5 * D * _LOG_2PI
                parts_lp.append(torch.logsumexp(joint, -1))
                rows.append(idx)
                if velocity or score:
                    r = torch.softmax(joint, -1)
                shared = s.shape[0] == 1  # one bandwidth for every kernel: sum_m r_m = 1 factors it out
                if velocity:
                    a = rate.expand(-1, D)
                    parts_u.append(r @ dmu + (a * (xg - r @ mu) if shared else xg * (r @ a) - r @ (a * mu)))
                if score:
                    parts_g.append(inv * (r @ mu - xg) if shared else r @ (mu * inv) - xg * (r @ inv))
        order = torch.cat(rows)
        lp = lp.index_put((order,), torch.cat(parts_lp))
        if velocity:
            u = u.index_put((order,), torch.cat(parts_u))
        if score:
            g = g.index_put((order,), torch.cat(parts_g))
        return lp, u, g

    def _fields_pointwise(self, t: Tensor, x: Tensor, velocity: bool, score: bool
                          ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        N, D = x.shape
        step = max(1, self.chunk_elements // (self.components * D))
        log_w = torch.log_softmax(self.logits, 0)
        lps, us, gs = [], [], []
        for lo in range(0, N, step):
            tt, xx = t[lo:lo + step], x[lo:lo + step]
            mu, dmu, s, rate = self._kernels(tt)
            diff = xx[:, None, :] - mu  # (n, M, D)
            z = diff / s
            log_det = torch.log(s).sum(-1) * (D / s.shape[-1])
            joint = log_w - 0.5 * z.pow(2).sum(-1) - log_det - 0.5 * D * _LOG_2PI
            lps.append(torch.logsumexp(joint, -1))
            if velocity or score:
                r = torch.softmax(joint, -1).unsqueeze(-1)
            if velocity:
                us.append((r * (dmu + rate * diff)).sum(1))
            if score:
                gs.append(-(r * z / s).sum(1))
        return torch.cat(lps), (torch.cat(us) if velocity else None), (torch.cat(gs) if score else None)

    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._fields(t, x, ctx, False, False)[0]

    def _velocity(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._fields(t, x, ctx, True, False)[1]

    def _score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        return self._fields(t, x, ctx, False, True)[2]

    def _velocity_and_score(self, t: Tensor, x: Tensor, ctx: Optional[Tensor], score: bool) -> tuple[Tensor, Optional[Tensor]]:
        _, u, g = self._fields(t, x, ctx, True, score)
        return u, g

    # ------------------------------------------------------------------ sampling and the Rosenblatt transform
    def _sample(self, t: Tensor, ctx: Optional[Tensor]) -> Tensor:
        N = t.shape[0]
        m = torch.multinomial(torch.softmax(self.logits, 0), N, replacement=True)  # (N,)
        B, dB = self._basis(t)
        mu = torch.einsum("nk,nkd->nd", B, self.loc[m])
        raw = self.raw_scale[m] if self.per_kernel_scale else self.raw_scale.expand(N, -1, -1)
        s0 = self.min_scale + F.softplus(torch.einsum("nk,nkd->nd", B, raw))
        s = (s0 ** 2 + self.bridge.pow(2) * self._bridge_profile(t)[0][:, None]).sqrt()
        x = mu + s * torch.randn(N, self.dim, dtype=mu.dtype, device=mu.device)
        shift, _ = self._shift(t, ctx)
        return x if shift is None else x + shift

    def _per_point(self, t: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """``mu: (N, M, D)``, ``log s: (N, M or 1, D)`` and the context shift (for the conditionals)."""
        mu, _, s, _ = self._kernels(t)
        return mu, torch.log(s).expand(-1, -1, self.dim), self._shift(t, ctx)[0]

    def _conditional_cdf(self, t: Tensor, x_cond: Tensor, x_eval: Tensor, ctx: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        mu, log_s, shift = self._per_point(t, ctx)
        if shift is not None:
            x_cond, x_eval = x_cond - shift, x_eval - shift
        gauss = m1.Gaussian
        z_cond = (x_cond[:, None, :] - mu) / log_s.exp()
        z = (x_eval[:, None, :] - mu) / log_s.exp()
        log_f_cond = gauss.log_pdf(z_cond) - log_s
        acc = torch.cumsum(log_f_cond, -1) - log_f_cond  # sum over e < i
        log_pi = torch.log_softmax(torch.log_softmax(self.logits, 0)[None, :, None] + acc, 1)
        log_F = torch.logsumexp(log_pi + gauss.log_cdf(z), 1)
        log_p = torch.logsumexp(log_pi + gauss.log_pdf(z) - log_s, 1)
        return log_F.exp(), log_p

    def _icdf(self, t: Tensor, u: Tensor, ctx: Optional[Tensor]) -> Tensor:
        mu, log_s, shift = self._per_point(t, ctx)
        log_w = torch.log_softmax(self.logits, 0).expand(t.shape[0], -1)
        x = torch.empty_like(u)
        acc = torch.zeros_like(log_w)
        for d in range(self.dim):
            x[:, d] = m1.icdf(u[:, d], log_w + acc, mu[:, :, d], log_s[:, :, d], "gaussian")
            z = (x[:, d:d + 1] - mu[:, :, d]) / log_s[:, :, d].exp()
            acc = acc + m1.Gaussian.log_pdf(z) - log_s[:, :, d]
        return x if shift is None else x + shift

    def _reparameterize(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        # TimeDensity._reparameterize with the kernel parameters computed once for the D sweeps
        mu, log_s, shift = self._per_point(t, ctx)
        tiny = torch.finfo(x_hat.dtype).tiny
        log_w = torch.log_softmax(self.logits, 0)[None, :, None]
        base = x_hat if shift is None else x_hat - shift
        zh = (base[:, None, :] - mu) / log_s.exp()
        log_cdf_eval, log_pdf_eval = m1.Gaussian.log_cdf(zh), m1.Gaussian.log_pdf(zh) - log_s
        x = x_hat
        for _ in range(self.dim):
            xc = x if shift is None else x - shift
            zc = (xc[:, None, :] - mu) / log_s.exp()
            log_f_cond = m1.Gaussian.log_pdf(zc) - log_s
            log_pi = torch.log_softmax(log_w + torch.cumsum(log_f_cond, -1) - log_f_cond, 1)
            Fc = torch.logsumexp(log_pi + log_cdf_eval, 1).exp()
            log_p = torch.logsumexp(log_pi + log_pdf_eval, 1)
            x = x_hat - (Fc - Fc.detach()) / log_p.detach().exp().clamp_min(tiny)
        return x


def select_bandwidth(anchors: Tensor, cells: Tensor, *, criterion: str = "w1", seed: int = 0,
                     factors: Optional[Sequence[float]] = None, max_cells: int = 1000) -> Tensor:
    """A bandwidth ``(D,)`` for kernels at ``anchors: (M, D)``: ``c * sd`` (``sd`` the anchors' per-coordinate standard
    deviation, ``c`` from a grid ``factors``) chosen on ``cells: (N, D)`` of the same snapshot that are not anchors.

    ``criterion="likelihood"``: the largest mean log-likelihood of ``cells`` under the equal-weight mixture;
    ``criterion="w1"``: the smallest exact ``W_1`` (POT, :func:`probflux.metrics.w1`) between ``min(N, max_cells)``
    cells and as many exact samples of that mixture (seeded). With no separate cells (``N = 0``) the anchors are
    scored against themselves leave-one-out (likelihood) — a W1 choice then needs cells.
    """
    from ..metrics import w1  # layer 0

    a, c = torch.as_tensor(anchors, dtype=torch.float64), torch.as_tensor(cells, dtype=torch.float64)
    if criterion not in ("w1", "likelihood"):
        raise ValueError(f"criterion must be 'w1' or 'likelihood'; got {criterion!r}")
    factors = [0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6] if factors is None else list(factors)
    sd = a.std(0).clamp_min(1e-6) if len(a) > 1 else torch.ones(a.shape[1], dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(seed))
    if len(c) > max_cells:
        c = c[torch.randperm(len(c), generator=gen)[:max_cells]]
    loo = len(c) == 0
    if loo:
        if criterion == "w1":
            raise ValueError("select_bandwidth: criterion='w1' needs cells that are not anchors")
        c = a
    best, best_score = None, math.inf
    for f in factors:
        s = f * sd
        if criterion == "likelihood":
            z = (c[:, None, :] - a[None]) / s
            ll = -0.5 * z.pow(2).sum(-1) - torch.log(s).sum() - 0.5 * a.shape[1] * _LOG_2PI
            if loo:
                ll.fill_diagonal_(-math.inf)
            score = -float(torch.logsumexp(ll, 1).mean())
        else:
            pick = torch.randint(len(a), (len(c),), generator=gen)
            x = a[pick] + s * torch.randn(len(c), a.shape[1], generator=gen, dtype=torch.float64)
            score = w1(x, c)
        if score < best_score:
            best, best_score = s, score
    return best
