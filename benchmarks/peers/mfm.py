r"""Metric Flow Matching (Kapusniak et al. 2024, "Metric Flow Matching for Smooth Interpolations on the Data
Manifold"), OT-MFM with the RBF metric, implemented here from the paper for the population benchmark.

Algorithm (per consecutive training snapshot pair ``k``, internal time ``tau`` as :class:`CFMPeer`'s: snapshot 0
at 0, the smallest training gap = 1, ``Delta_k = tau_{k+1} - tau_k``):

1. **Metric.** An RBF network ``h_k(x) = sum_c omega_c exp(-lambda_c |x - m_c|^2 / 2)`` on the pair's cells:
   centres ``m_c`` by k-means (``n_centers``), ``lambda_c = 1 / (kappa sigma_c)^2`` with ``sigma_c`` the RMS
   per-coordinate spread of cluster ``c``, weights ``omega_c >= 0`` fitted so that ``h_k ~ 1`` on the cells
   (the paper's loss ``E (1 - h(x))^2``). The metric is ``G_k(x) = (h_k(x) + eps)^{-alpha} I``: cheap where the
   data are dense, expensive away from them.
2. **Geodesic interpolants.** ``x_s = (1 - s) x0 + s x1 + s (1 - s) phi_eta(x0, x1, s)`` for OT-coupled
   minibatch pairs ``(x0, x1)`` (exact minibatch OT, torchcfm's ``OTPlanSampler``), ``s ~ U(0, 1)``; the network
   ``phi_eta`` (one for all pairs, with the pair's start time as an extra input) is trained to minimise the
   metric kinetic energy ``E[ xdot_s^T G_k(x_s) xdot_s ]`` (``xdot_s = d x_s / ds``, by forward-mode JVP).
3. **Flow matching.** A velocity network ``v_theta(tau, x)`` (torchcfm's MLP, as :class:`CFMPeer`) regresses the
   interpolants' velocities: ``E |v_theta(tau_k + s Delta_k, x_s) - xdot_s / Delta_k|^2`` with ``phi_eta`` frozen.
   Transport integrates ``dx/dtau = v_theta`` (dopri5, inherited from :class:`CFMPeer`).

Simplified relative to the paper and its code (``kksniak/metric-flow-matching``), stated so the comparison is fair:

* the RBF weights are fitted by non-negative least squares on at most 2000 cells of the pair (closed form,
  ``scipy.optimize.nnls``) instead of by Adam with a clamp; k-means is ``scipy.cluster.vq.kmeans2``
  (``++`` initialisation, 25 iterations) instead of scikit-learn's;
* one ``phi_eta`` network for every pair (input ``(x0, x1, s, tau_k)``) instead of the same network fed all
  pairs' batches; no EMA, no validation-based early stopping (no method here has validation passes);
* the two stages share one CPU budget: the first ``geo_fraction`` of the ``clock`` budget trains ``phi_eta``, the
  rest trains ``v_theta``; the metric fit (k-means + NNLS) is counted in the budget too.

Hyper-parameters default to the paper's single-cell values where the paper states them (``alpha = 1``,
``n_centers = 100``); ``kappa = 1``, ``eps = 1e-2`` as the authors' code defaults.
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from scipy.optimize import nnls
from torch import Tensor

from .torchcfm_peer import MLP, CFMPeer, _real, _seeded

try:
    from torchcfm.optimal_transport import OTPlanSampler
except ImportError as exc:  # pragma: no cover
    raise ImportError("benchmarks.peers.mfm needs torchcfm: pip install --no-deps torchcfm") from exc

__all__ = ["MFMPeer", "RBFMetric"]


class RBFMetric(torch.nn.Module):
    """``G(x) = (h(x) + eps)^{-alpha}`` (a scalar multiple of the identity) for ``x: (B, D)``; see the module doc."""

    def __init__(self, cells: Tensor, *, n_centers: int = 100, kappa: float = 1.0, alpha: float = 1.0, eps: float = 1e-2,
                 seed: int = 0, fit_cells: int = 2000) -> None:
        super().__init__()
        x = cells.detach().double().cpu().numpy()
        rng = np.random.default_rng(seed)
        if len(x) > fit_cells:
            x = x[rng.choice(len(x), fit_cells, replace=False)]
        k = int(min(n_centers, len(np.unique(x, axis=0))))
        centres, labels = kmeans2(x, k, iter=25, minit="++", seed=int(seed))
        keep, sig = [], []
        for c in range(k):
            pts = x[labels == c]
            if len(pts) < 2:
                continue
            s = float(np.sqrt(((pts - centres[c]) ** 2).mean()))
            if s > 0:
                keep.append(c)
                sig.append(s)
        if not keep:
            raise ValueError("RBFMetric: every k-means cluster is degenerate (too few distinct cells)")
        centres = centres[keep]
        lam = 1.0 / (kappa * np.asarray(sig)) ** 2
        phi = np.exp(-0.5 * lam[None, :] * ((x[:, None, :] - centres[None]) ** 2).sum(-1))  # (N, K)
        w, _ = nnls(phi, np.ones(len(x)))
        w = np.maximum(w, 1e-4)
        self.register_buffer("centres", torch.from_numpy(centres).float())
        self.register_buffer("lam", torch.from_numpy(lam).float())
        self.register_buffer("w", torch.from_numpy(w).float())
        self.alpha, self.eps = float(alpha), float(eps)

    def h(self, x: Tensor) -> Tensor:
        d2 = torch.cdist(x, self.centres) ** 2
        return torch.exp(-0.5 * self.lam * d2) @ self.w

    def forward(self, x: Tensor) -> Tensor:
        return (self.h(x) + self.eps) ** (-self.alpha)


class _GeoPath(torch.nn.Module):
    """``phi_eta(x0, x1, s, tau_k) -> (B, D)``: the interpolants' correction (three hidden SELU layers)."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2 * dim + 2, width), torch.nn.SELU(), torch.nn.Linear(width, width), torch.nn.SELU(),
            torch.nn.Linear(width, width), torch.nn.SELU(), torch.nn.Linear(width, dim))

    def forward(self, x0: Tensor, x1: Tensor, s: Tensor, tau_k: Tensor) -> Tensor:
        return self.net(torch.cat([x0, x1, s, tau_k], dim=1))


def _interpolant(geo: _GeoPath, x0: Tensor, x1: Tensor, s: Tensor, tau_k: Tensor, *, create_graph: bool) -> tuple[Tensor, Tensor]:
    """``x_s`` and ``d x_s / ds`` for ``s: (B, 1)`` (the derivative of ``phi`` in ``s`` by a JVP)."""
    def corr(ss: Tensor) -> Tensor:
        return ss * (1 - ss) * geo(x0, x1, ss, tau_k)

    c, dc = torch.autograd.functional.jvp(corr, s, torch.ones_like(s), create_graph=create_graph)
    return (1 - s) * x0 + s * x1 + c, x1 - x0 + dc


class MFMPeer(CFMPeer):
    """OT-MFM with the RBF metric (module doc), with :class:`CFMPeer`'s transport and input checks.

    Args:
        dim: ``D``. width: hidden width of both networks. lr: Adam(W) learning rate of both networks.
        batch_size: cells per snapshot per step. n_centers, kappa, alpha, eps: the RBF metric (module doc).
        geo_fraction: share of the budget spent on the interpolant network (the rest on the flow).
        seed, device: as :class:`CFMPeer`.
    """

    def __init__(self, dim: int, *, width: int = 64, lr: float = 1e-3, batch_size: int = 256, n_centers: int = 100,
                 kappa: float = 1.0, alpha: float = 1.0, eps: float = 1e-2, geo_fraction: float = 0.3, seed: int = 0,
                 device: Any = "cpu") -> None:
        super().__init__("otcfm", dim, sigma=0.0, width=width, lr=lr, batch_size=batch_size, seed=seed, device=device)
        for name, v in (("kappa", kappa), ("alpha", alpha), ("eps", eps)):
            if _real(v, name) <= 0:
                raise ValueError(f"{name} must be > 0; got {v!r}")
        if isinstance(n_centers, bool) or not isinstance(n_centers, numbers.Integral) or n_centers < 1:
            raise ValueError(f"n_centers must be a positive integer; got {n_centers!r}")
        if not 0.0 < _real(geo_fraction, "geo_fraction") < 1.0:
            raise ValueError(f"geo_fraction must lie in (0, 1); got {geo_fraction!r}")
        self.n_centers, self.kappa, self.alpha, self.eps = int(n_centers), float(kappa), float(alpha), float(eps)
        self.geo_fraction = float(geo_fraction)
        self.geo: Optional[_GeoPath] = None

    def fit(self, times: Sequence[float], samples: Sequence[Tensor], *, steps: Optional[int] = None,
            wall_seconds: Optional[float] = None, clock: Callable[[], float] = time.perf_counter) -> dict:
        """Metric, interpolant and flow within one budget: ``wall_seconds`` of ``clock`` (or ``steps`` optimiser
        steps per stage). Same arguments and return value as :meth:`CFMPeer.fit` (plus ``geo_steps``)."""
        if steps is None and wall_seconds is None:
            raise ValueError("give steps, wall_seconds or both")
        ts = [_real(t, f"times[{i}]") for i, t in enumerate(times)]
        if len(ts) < 2 or len(samples) != len(ts) or not (np.diff(ts) > 0).all():
            raise ValueError("times must hold K >= 2 strictly increasing values, one per sample")
        xs = [self._check_cells(x, f"samples[{k}]").detach().to(self.device, torch.float32) for k, x in enumerate(samples)]
        self._t_first, self._unit = ts[0], float(np.diff(ts).min())
        taus = [self._tau(t) for t in ts]
        deltas = [taus[k + 1] - taus[k] for k in range(len(ts) - 1)]
        bs = self.batch_size
        start = clock()
        budget = math.inf if wall_seconds is None else float(wall_seconds)

        def left(stage_end: float) -> bool:
            return clock() - start < stage_end

        with _seeded(self.seed, self.device):
            metrics = [RBFMetric(torch.cat([xs[k], xs[k + 1]]), n_centers=self.n_centers, kappa=self.kappa, alpha=self.alpha,
                                 eps=self.eps, seed=self.seed + k).to(self.device) for k in range(len(xs) - 1)]
            ot = OTPlanSampler(method="exact")
            self.geo = _GeoPath(self.dim, self.width).to(self.device)
            self.flow = MLP(dim=self.dim, w=self.width, time_varying=True).to(self.device)
            self.score = None

            def batch() -> list[tuple[int, Tensor, Tensor]]:
                out = []
                for k in range(len(xs) - 1):
                    i0 = torch.from_numpy(np.random.randint(xs[k].shape[0], size=bs)).to(self.device)
                    i1 = torch.from_numpy(np.random.randint(xs[k + 1].shape[0], size=bs)).to(self.device)
                    x0, x1 = ot.sample_plan(xs[k][i0], xs[k + 1][i1])
                    out.append((k, x0, x1))
                return out

            # stage 1: the interpolant network minimises the metric kinetic energy
            opt = torch.optim.Adam(self.geo.parameters(), lr=self.lr)
            geo_steps, geo_loss = 0, float("nan")
            geo_end = self.geo_fraction * budget
            n_geo = None if steps is None else int(steps)
            while (n_geo is None or geo_steps < n_geo) and left(geo_end):
                loss = 0.0
                for k, x0, x1 in batch():
                    s = torch.rand(x0.shape[0], 1, device=self.device)
                    tk = torch.full_like(s, taus[k])
                    xt, ut = _interpolant(self.geo, x0, x1, s, tk, create_graph=True)
                    loss = loss + (metrics[k](xt) * (ut ** 2).sum(-1)).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                geo_steps += 1
                geo_loss = float(loss.detach())
            # stage 2: flow matching on the frozen interpolants
            for p in self.geo.parameters():
                p.requires_grad_(False)
            opt = torch.optim.AdamW(self.flow.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            done, last = 0, float("nan")
            while (steps is None or done < steps) and left(budget):
                z_l, u_l = [], []
                for k, x0, x1 in batch():
                    s = torch.rand(x0.shape[0], 1, device=self.device)
                    xt, ut = _interpolant(self.geo, x0, x1, s, torch.full_like(s, taus[k]), create_graph=False)
                    z_l.append(torch.cat([xt.detach(), taus[k] + s * deltas[k]], dim=1))
                    u_l.append(ut.detach() / deltas[k])
                z, ut = torch.cat(z_l), torch.cat(u_l)
                loss = torch.mean((self.flow(z) - ut) ** 2)  # the peer's own training loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                last = float(loss.detach())
            elapsed = clock() - start
        self.flow.eval()
        return {"steps": done, "geo_steps": geo_steps, "wall_seconds": elapsed, "loss": last, "geo_loss": geo_loss}
