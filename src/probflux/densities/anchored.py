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
``rsample`` uses the library's implicit reparameterisation (gradients reach weights, knots and scales); with untrained
weights (``learn_weights=False``) a Rao-Blackwellised pathwise one, ``O(N M D)`` instead of ``D`` sweeps.

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

(``examples/anchored_populations.py`` trains and scores one held-out snapshot this way.) ``select="loo"`` instead chooses
the time map, the bridge and a bandwidth factor by leave-one-out over the training snapshots (:meth:`from_snapshots`);
``probflux fit ... model.type=anchored`` builds the model this way from the training snapshots of the split.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import mixture1d as m1
from .base import TimeDensity

__all__ = ["AnchoredMixture", "natural_spline_matrix", "select_bandwidth", "LOO_TIME_MAPS", "LOO_BRIDGES", "LOO_BANDWIDTH_FACTORS"]

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
            interpolant with ``phi(warp[k]) = knots[k]`` (the velocity gains the factor ``phi'(t)``). warp_progress:
            with it, ``warp`` holds any ``J >= 2`` increasing clock times and ``phi(warp[j]) = warp_progress[j]``.
        scale: ``"diagonal"`` (one bandwidth per coordinate) or ``"isotropic"``. per_kernel_scale: a bandwidth
            path per kernel (``True``) or one shared by all kernels (``False``, default). min_scale: ``s_min``.
        init_scale: the initial bandwidth. context_dim: a context shifts every kernel by ``(W_0 + t W_1) c``
            (velocity ``+ W_1 c``). learn_weights: whether the weight logits are trained (initially uniform).
        chunk_elements: memory bound of the per-point path (numbers per intermediate).
    """

    has_rosenblatt = True

    def __init__(self, dim: int, components: int = 64, *, knots: Optional[Sequence[float]] = None, curvature: float = 0.0,
                 scale: str = "diagonal", per_kernel_scale: bool = False, min_scale: float = 1e-3, init_scale: float = 0.5,
                 bridge: float = 0.0, warp: Optional[Sequence[float]] = None, warp_progress: Optional[Sequence[float]] = None,
                 context_dim: int = 0, learn_weights: bool = True, chunk_elements: int = 2 ** 22) -> None:
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
            if warp_progress is None:
                if len(clock) != K or not all(b > a for a, b in zip(clock, clock[1:])):
                    raise ValueError(f"warp must hold {K} strictly increasing clock times (one per knot); got {clock}")
                progress = knots
            else:
                progress = [float(v) for v in warp_progress]
                if len(clock) < 2 or not all(b > a for a, b in zip(clock, clock[1:])):
                    raise ValueError(f"warp must hold at least 2 strictly increasing clock times; got {clock}")
                if len(progress) != len(clock) or not all(b > a for a, b in zip(progress, progress[1:])):
                    raise ValueError(f"warp_progress must hold {len(clock)} strictly increasing values (one per warp time); got {progress}")
            pp = PchipInterpolator(np.asarray(clock), np.asarray(progress))
            self.register_buffer("warp_clock", torch.tensor(clock, dtype=torch.float64))
            self.register_buffer("warp_coef", torch.tensor(pp.c.T.copy(), dtype=torch.float64))  # (J-1, 4), highest power first
        # Brownian-bridge spread between knots: s^2 = s_spline^2 + bridge^2 beta(t), beta = (t - tau_i)(tau_{i+1} - t)/h_i
        self.bridge = nn.Parameter(torch.full((D if scale == "diagonal" else 1,), float(bridge)))
        if context_dim:
            self.context_shift = nn.Parameter(torch.zeros(2, D, context_dim))

    def adopt_shapes(self, state_dict: dict, prefix: str = "") -> AnchoredMixture:
        """Resize knots, warp and path parameters to those of ``state_dict`` (keys ``prefix + name``), so that a model
        built without data (``AnchoredMixture(dim, components)``, e.g. a run rebuilt from its config) can load a
        state built from snapshots. Values are left uninitialised until loaded. Returns ``self``."""
        for name in ("knots", "spline", "curvature", "warp_clock", "warp_coef"):
            value = state_dict.get(prefix + name)
            if value is not None and (name not in self._buffers or self._buffers[name].shape != value.shape):
                self.register_buffer(name, torch.empty_like(value, dtype=torch.float64 if name != "curvature" else value.dtype))
        self.has_warp = "warp_clock" in self._buffers
        for name in ("loc", "raw_scale", "bridge"):
            value = state_dict.get(prefix + name)
            param = self._parameters.get(name)
            if value is not None and param is not None and param.shape != value.shape:
                self._parameters[name] = nn.Parameter(torch.empty_like(value, dtype=param.dtype), requires_grad=param.requires_grad)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        self.adopt_shapes(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

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
                       bandwidth: str = "w1", warp: Union[bool, str] = False, time_map: Optional[str] = None,
                       select: Optional[str] = None, loo_cells: int = 1000, loo_metric: str = "w1",
                       loo_grid: Optional[dict] = None, entropy: float = 0.0, sinkhorn_tol: float = 1e-6,
                       **kwargs) -> AnchoredMixture:
        """Kernels on chained exact OT couplings of the snapshots ``cells[k]: (N_k, D)`` at ``times[k]`` (model units).

        If every snapshot has at least ``M = components`` cells, ``M`` cells are drawn without replacement from each
        (seeded): the couplings between these equal-size clouds are permutations (:func:`probflux.transport.ot_plan`)
        and chaining them (:func:`probflux.transport.ot_trajectories`) gives ``M`` paths through distinct observed
        cells. Otherwise every snapshot keeps at most ``M`` cells and ``M`` paths are drawn through the Markov chain
        of the (non-permutation) couplings, so a small snapshot's cells carry several kernels.
        Bandwidths per knot: :func:`select_bandwidth` with ``criterion=bandwidth`` on the snapshot's cells that carry
        no kernel (all its cells when every one does), times ``bandwidth_factor`` (keyword, default 1).

        ``time_map`` (clock time -> the knots' progress; ``warp=True`` is ``time_map="w2"``):

        * ``"clock"`` (default): no warp, straight paths at constant speed between consecutive snapshots;
        * ``"w2"``: the paths run at constant Wasserstein speed in a progress variable, knots at the cumulative
          ``W_2`` of the consecutive couplings (rescaled to span the same interval as ``times``), clock time mapped
          to progress monotonically (PCHIP through the snapshots), so the speed between snapshots is read off the
          other snapshots;
        * ``"exp:k"`` (a number ``k``): progress ``p(u) = expm1(k u) / expm1(k)`` of the clock fraction
          ``u = (t - t_0)/(t_{K-1} - t_0)`` (``k < 0``: fast early, ``k > 0``: fast late; ``k = 0`` is the clock),
          knots at ``p(times)``, so the speed inside a gap follows one global curve.

        ``select="loo"``: choose ``time_map``, the bridge spread ``bridge`` and ``bandwidth_factor`` on the given
        snapshots alone — every interior snapshot is held out in turn, a model is built from the others, and the
        settings with the smallest mean exact ``W_1`` (:func:`probflux.metrics.w1`, model units, at most
        ``loo_cells`` cells and as many samples, common random numbers) at the held-out times win, chosen one after
        the other (time map, then bridge, then bandwidth factor; grids :data:`LOO_TIME_MAPS`, :data:`LOO_BRIDGES`,
        :data:`LOO_BANDWIDTH_FACTORS`; ``loo_grid``, a dict with any of the keys ``"time_map"``, ``"bridge"``,
        ``"bandwidth_factor"``, replaces them). ``loo_metric="energy"`` scores by
        :func:`probflux.metrics.energy_distance_lightsb` instead of ``W_1``. With fewer than 3 snapshots there is
        nothing to hold out and the given settings stay. The choice and its scores are in ``model.selection`` (a
        dict).

        ``entropy = eps > 0``: the Schrödinger-bridge variant. Consecutive snapshots are coupled by the entropic
        plan of a reference Brownian motion with variance ``eps`` per unit time
        (:func:`probflux.transport.entropic_plan` with ``eps * (t_{k+1} - t_k)``) instead of exact OT, and the
        bridge spread is ``bridge = sqrt(eps)`` (a Brownian bridge's variance ``eps beta(t)``); ``bridge`` is then
        not selected. A kernel whose path joins ``(x_k, x_{k+1})`` is the Brownian bridge between them, so the
        mixture at any time is the Schrödinger bridge between the two drawn clouds (smoothed by the snapshot
        bandwidths), with exact density and flux. The kernels are then ``M`` paths drawn from the chained plans.
        ``sinkhorn_tol``: the Sinkhorn stopping threshold (``tol`` of :func:`~probflux.transport.entropic_plan`;
        measured on CITE 50 PCs, 2000 x 2000 cells at ``eps = 0.25``: ``1e-4`` stops after 620 iterations, 37 CPU s,
        3e-3 from the marginals in total variation). Keyword arguments go to :meth:`from_paths`.
        """
        if len(cells) != len(times) or len(cells) < 2:
            raise ValueError(f"cells must hold one cloud per time (at least 2); got {len(cells)} clouds for {len(times)} times")
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be a positive integer; got {components!r}")
        if select not in (None, "loo"):
            raise ValueError(f"select must be None or 'loo'; got {select!r}")
        if time_map is None:
            time_map = "w2" if warp is True else ("clock" if warp is False else str(warp))
        _time_map_kind(time_map)
        if loo_metric not in ("w1", "energy"):
            raise ValueError(f"loo_metric must be 'w1' or 'energy'; got {loo_metric!r}")
        grid = {"time_map": LOO_TIME_MAPS, "bridge": LOO_BRIDGES, "bandwidth_factor": LOO_BANDWIDTH_FACTORS}
        if loo_grid is not None:
            unknown = set(loo_grid) - set(grid)
            if unknown:
                raise ValueError(f"loo_grid keys must be among {sorted(grid)}; got {sorted(unknown)}")
            grid.update({k: tuple(v) for k, v in loo_grid.items()})
        for name in grid["time_map"]:
            _time_map_kind(name)
        if not (isinstance(entropy, (int, float)) and not isinstance(entropy, bool) and math.isfinite(entropy) and entropy >= 0):
            raise ValueError(f"entropy must be a finite number >= 0; got {entropy!r}")
        if not (isinstance(sinkhorn_tol, (int, float)) and not isinstance(sinkhorn_tol, bool) and sinkhorn_tol > 0):
            raise ValueError(f"sinkhorn_tol must be a number > 0; got {sinkhorn_tol!r}")
        chain = _Chain(times, cells, components, int(seed), bandwidth, entropy=float(entropy), tol=float(sinkhorn_tol))
        settings = {"time_map": time_map, "bridge": float(kwargs.pop("bridge", 0.0)),
                    "bandwidth_factor": float(kwargs.pop("bandwidth_factor", 1.0))}
        if entropy > 0:
            settings["bridge"] = math.sqrt(entropy)
            grid["bridge"] = (settings["bridge"],)
        selection = None
        if select == "loo":
            settings, selection = chain.select(settings, kwargs, loo_cells, metric=loo_metric, grid=grid)
        model = chain.build(range(len(times)), settings, kwargs, cls)
        model.selection = {"settings": settings, **({"scores": selection} if selection else {})}
        return model

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

    # ------------------------------------------------------------------ transport along the kernels
    def _kernels_at(self, t: float, like: Tensor) -> tuple[Tensor, Tensor]:
        """Centres ``mu: (M, D)`` and scales ``s: (Ms, Ds)`` at one time ``t``."""
        mu, _, s, _ = self._kernels(torch.full((1,), float(t), dtype=like.dtype, device=like.device))
        return mu[0], s[0]

    def _log_joint(self, x: Tensor, mu: Tensor, s: Tensor) -> Tensor:
        """``log pi_m + log N(x; mu_m, diag s_m^2)`` up to the constant ``-D/2 log 2 pi``: ``(n, M)`` for ``x: (n, D)``."""
        D = x.shape[1]
        inv = s.expand(-1, D).pow(-2) if s.shape[-1] == 1 else s.pow(-2)  # (Ms, D)
        c = mu.mean(0)
        xc, muc = x - c, mu - c
        quad = (xc * xc) @ inv.T - 2 * xc @ (muc * inv).T + (muc * muc * inv).sum(-1)
        return torch.log_softmax(self.logits, 0) - 0.5 * quad - torch.log(s).sum(-1) * (D / s.shape[-1])

    @torch.no_grad()
    def kernel_flow(self, x0: Tensor, t0: float, t1: float, steps: int = 100, *, stochastic: bool = False,
                    context: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Move ``x0: (N, D)`` from ``t0`` to ``t1`` by steps that are exact for every kernel; ``(steps + 1, N, D)`` path.

        Kernel ``m`` is the push-forward of ``N(0, I)`` by ``x = mu_m(t) + s_m(t) z``, so its own flow over a step
        ``t -> t'`` is the affine map ``F_m(x) = mu_m(t') + (s_m(t')/s_m(t)) (x - mu_m(t))`` whatever the step size.

        * ``stochastic=False``: the probability-flow ODE ``dx/dt = u_t(x) = sum_m r_m(x) v_m(x)`` by the steps
          ``x <- sum_m r_m(x_h, t_h) F_m(x)``, responsibilities ``r`` at the step's midpoint ``t_h``, where a half
          step ``x_h = sum_m r_m(x, t) F_m^{t -> t_h}(x)`` puts the point. To first order this is Euler's
          ``x + u dt``; to second order it is exact when all kernels share one bandwidth (the missing term is
          ``(dt^2/2) sum_m r_m (s_m'/s_m)(v_m - u)``), and it is exact for one kernel at any step. Unlike Euler it
          cannot be thrown off where ``s'/s`` is stiff (a narrow kernel at a snapshot time with a bridge spread,
          ``s'/s ~ g^2 / (2 s^2)``): each step is a convex combination of the kernels' own maps, and with one
          bandwidth for all kernels the scale factors telescope to ``s(t1)/s(t0)``.
        * ``stochastic=True``: each step draws a kernel ``m ~ r(x, t)`` and moves ``x`` to
          ``mu_m(t') + c (x - mu_m(t)) + sqrt(s_m(t')^2 - c^2 s_m(t)^2) xi`` with ``c = min(1, s_m(t')/s_m(t))``
          per coordinate, ``xi ~ N(0, I)``. If ``x ~ rho_t`` then ``(m, x)`` is distributed as ``pi_m N_m(x)``
          and the step's output is ``N_m`` at ``t'`` — the step maps ``rho_t`` to ``rho_t'`` exactly, for any step
          count. A cell off every kernel keeps its offset instead of having it multiplied by ``s(t')/s(t)``.

        ``O(N M D)`` per step (chunks of at most ``chunk_elements`` numbers). ``context: (N, C)`` shifts as in
        the density.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer; got {steps!r}")
        if x0.dim() != 2 or x0.shape[1] != self.dim:
            raise ValueError(f"x0 must have shape (N, {self.dim}); got {tuple(x0.shape)}")
        N, D = x0.shape
        ts = torch.linspace(float(t0), float(t1), steps + 1, dtype=torch.float64).tolist()
        shift = (lambda t: self._shift(torch.full((N,), t, dtype=x0.dtype, device=x0.device), context)[0]) if context is not None \
            else (lambda t: None)
        rows = max(1, self.chunk_elements // self.components)
        x, path = x0, [x0]
        def affine(r: Tensor, xc: Tensor, mu_a: Tensor, mu_b: Tensor, ratio: Tensor) -> Tensor:
            """``sum_m r_m F_m(xc)`` for the maps ``F_m(x) = mu_b + ratio (x - mu_a)``."""
            a = ratio.expand(-1, D)
            if a.shape[0] == 1:
                return r @ (mu_b - a * mu_a) + a * xc
            return r @ mu_b + xc * (r @ a) - r @ (a * mu_a)

        for ta, tb in zip(ts, ts[1:]):
            sa, sb = shift(ta), shift(tb)
            xb = x if sa is None else x - sa
            mu_a, s_a = self._kernels_at(ta, x0)
            mu_b, s_b = self._kernels_at(tb, x0)
            ratio = s_b / s_a  # (Ms, Ds)
            if not stochastic:
                th = 0.5 * (ta + tb)
                mu_h, s_h = self._kernels_at(th, x0)
            out = []
            for lo in range(0, N, rows):
                xc = xb[lo:lo + rows]
                joint = self._log_joint(xc, mu_a, s_a)
                if stochastic:
                    m = torch.multinomial(torch.softmax(joint, -1), 1, generator=generator).squeeze(1)
                    k = m if s_a.shape[0] > 1 else torch.zeros_like(m)
                    c = ratio[k].clamp(max=1.0)
                    sd = (s_b[k].pow(2) - (c * s_a[k]).pow(2)).clamp_min(0).sqrt()
                    noise = torch.randn(xc.shape, dtype=xc.dtype, device=xc.device, generator=generator)
                    out.append(mu_b[m] + c * (xc - mu_a[m]) + sd * noise)
                else:
                    xh = affine(torch.softmax(joint, -1), xc, mu_a, mu_h, s_h / s_a)  # half step to the midpoint
                    r = torch.softmax(self._log_joint(xh, mu_h, s_h), -1)
                    out.append(affine(r, xc, mu_a, mu_b, ratio))
            x = torch.cat(out)
            x = x if sb is None else x + sb
            path.append(x)
        return torch.stack(path)

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
        if not self.logits.requires_grad:
            return self._reparameterize_fixed_weights(t, x_hat, ctx)
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

    def _reparameterize_fixed_weights(self, t: Tensor, x_hat: Tensor, ctx: Optional[Tensor]) -> Tensor:
        r"""With constant, untrained weights a draw is ``x = mu_m(t) + s_m(t) z`` for a kernel ``m ~ w``: its pathwise
        gradient, averaged over the kernel's posterior given ``x_hat`` (``r_m``, stopped), is
        ``x = sum_m r_m (mu_m + s_m z_m)`` with ``z_m = (x_hat - mu_m) / s_m`` stopped: equal to ``x_hat`` in value,
        an unbiased (Rao-Blackwellised) reparameterisation, in ``O(N M D)`` instead of the ``D`` Rosenblatt sweeps."""
        mu, log_s, shift = self._per_point(t, ctx)
        base = x_hat if shift is None else x_hat - shift
        z = ((base[:, None, :] - mu) / log_s.exp()).detach()
        log_r = torch.log_softmax(self.logits, 0)[None, :] + (m1.Gaussian.log_pdf(z) - log_s).sum(-1)
        r = torch.softmax(log_r, 1).detach()
        x = torch.einsum("nm,nmd->nd", r, mu + log_s.exp() * z)
        x = x + (base - x).detach()  # round-off: the value is x_hat exactly
        return x if shift is None else x + shift


LOO_TIME_MAPS = ("clock", "w2", "exp:-1.5", "exp:1.5")
"""Time maps :meth:`AnchoredMixture.from_snapshots` tries with ``select="loo"``."""
LOO_BRIDGES = (0.0, 0.25, 0.5, 1.0)
"""Bridge spreads ``g`` (model units) tried with ``select="loo"``."""
LOO_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)
"""Multipliers of the selected per-snapshot bandwidths tried with ``select="loo"``."""


def _time_map_kind(name: str) -> tuple[str, float]:
    """``("clock"|"w2"|"exp", k)`` for a time-map name; a clear error naming ``time_map`` otherwise."""
    if name in ("clock", "w2"):
        return name, 0.0
    if isinstance(name, str) and name.startswith("exp:"):
        try:
            k = float(name[4:])
        except ValueError:
            k = math.nan
        if math.isfinite(k):
            return "exp", k
    raise ValueError(f"time_map must be 'clock', 'w2' or 'exp:<number>'; got {name!r}")


class _Chain:
    """The kernel paths of :meth:`AnchoredMixture.from_snapshots` for any subset of the snapshots: cells drawn once,
    couplings between the clouds of a subset computed on demand and cached (a held-out snapshot's neighbours get one
    new coupling), bandwidths per snapshot."""

    def __init__(self, times: Sequence[float], cells: Sequence[Tensor], components: int, seed: int, bandwidth: str,
                 entropy: float = 0.0, tol: float = 1e-6) -> None:
        self.times = [float(v) for v in times]
        self.M, self.seed, self.bandwidth, self.entropy, self.tol = components, seed, bandwidth, entropy, tol
        xs = [torch.as_tensor(c, dtype=torch.float64) for c in cells]
        gen = torch.Generator().manual_seed(seed)
        perms = [torch.randperm(len(x), generator=gen) for x in xs]
        self.used = [x[p[:components]] for x, p in zip(xs, perms)]
        self.rest = [x[p[components:]] if len(x) > components else x for x, p in zip(xs, perms)]
        self.cells = xs
        self.plans: dict[tuple[int, int], object] = {}

    def plan(self, a: int, b: int):
        from ..transport import entropic_plan, ot_plan  # layer 0

        if (a, b) not in self.plans:
            if self.entropy > 0:
                eps = self.entropy * (self.times[b] - self.times[a])
                self.plans[(a, b)] = entropic_plan(self.used[a], self.used[b], eps, tol=self.tol)
            else:
                self.plans[(a, b)] = ot_plan(self.used[a], self.used[b])
        return self.plans[(a, b)]

    def paths(self, keep: Sequence[int]) -> tuple[Tensor, Tensor, list[float]]:
        """``paths: (M, len(keep), D)``, ``scales: (len(keep), D)`` and the cumulative ``W_2`` at the kept snapshots."""
        from ..transport import ot_trajectories  # layer 0

        keep = list(keep)
        used = [self.used[k] for k in keep]
        plans = [self.plan(a, b) for a, b in zip(keep, keep[1:])]
        if all(len(u) == self.M for u in used) and all(p.is_permutation() for p in plans):
            index, paths = ot_trajectories(used, plans=plans)
        else:
            index, paths = ot_trajectories(used, plans=plans, n=self.M, seed=self.seed)
        steps = [math.sqrt(max(p.cost(used[i], used[i + 1]), 0.0)) for i, p in enumerate(plans)]
        progress = [0.0] + list(np.cumsum(steps))
        scales = torch.stack([select_bandwidth(self.used[k][index[:, i].unique()], self.rest[k], criterion=self.bandwidth, seed=self.seed)
                              for i, k in enumerate(keep)])
        return paths, scales, progress

    def build(self, keep: Sequence[int], settings: dict, kwargs: dict, cls=None, cache: Optional[dict] = None) -> AnchoredMixture:
        keep = list(keep)
        key = tuple(keep)
        if cache is not None and key in cache:
            paths, scales, progress = cache[key]
        else:
            paths, scales, progress = self.paths(keep)
            if cache is not None:
                cache[key] = (paths, scales, progress)
        clock = [self.times[k] for k in keep]
        t0, t1 = clock[0], clock[-1]
        kind, k = _time_map_kind(settings["time_map"])
        kw = dict(kwargs, bridge=settings["bridge"])
        knots = clock
        if kind == "w2":
            total = max(progress[-1], 1e-12)
            knots = [t0 + (t1 - t0) * p / total for p in progress]
            kw["warp"] = clock
        elif kind == "exp" and abs(k) > 1e-12:
            def phi(t):
                return t0 + (t1 - t0) * np.expm1(k * (np.asarray(t) - t0) / (t1 - t0)) / math.expm1(k)
            knots = [float(v) for v in phi(clock)]
            dense = np.union1d(np.linspace(t0, t1, 65), np.asarray(clock))
            kw["warp"] = [float(v) for v in dense]
            kw["warp_progress"] = [float(v) for v in phi(dense)]
        floor = 2 * float(kwargs.get("min_scale", 1e-3))  # a small factor must not push a coordinate below s_min
        return (cls or AnchoredMixture).from_paths(knots, paths, scales=(scales * settings["bandwidth_factor"]).clamp_min(floor), **kw)

    def select(self, settings: dict, kwargs: dict, cells: int, metric: str = "w1", grid: Optional[dict] = None) -> tuple[dict, dict]:
        """Coordinate-wise leave-one-out choice of the time map, the bridge and the bandwidth factor."""
        from ..metrics import energy_distance_lightsb, w1  # layer 0

        distance = w1 if metric == "w1" else energy_distance_lightsb
        grid = grid or {"time_map": LOO_TIME_MAPS, "bridge": LOO_BRIDGES, "bandwidth_factor": LOO_BANDWIDTH_FACTORS}

        K = len(self.times)
        if K < 3:
            return settings, {}
        cache: dict = {}
        held = []
        for j in range(1, K - 1):
            x = self.cells[j]
            if len(x) > cells:
                x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed + j))[:cells]]
            held.append((j, x))

        def score(s: dict) -> float:
            total = 0.0
            for j, x in held:
                model = self.build([i for i in range(K) if i != j], s, kwargs, cache=cache)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed + 7919 * j)  # the same kernels and noise for every candidate
                    with torch.no_grad():
                        y = model.sample(torch.full((len(x),), self.times[j], dtype=torch.float64))
                total += distance(y, x)
            return total / len(held)

        scores: dict = {}
        best = dict(settings)
        for key in ("time_map", "bridge", "bandwidth_factor"):
            trial = {v: score(dict(best, **{key: v})) for v in grid[key]}
            best[key] = min(trial, key=trial.get)
            scores[key] = trial
        return best, scores



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
