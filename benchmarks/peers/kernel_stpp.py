r"""The kernel baseline of the events benchmarks: a static KDE of training locations plus Gaussian kernels at the
newest ``k`` strictly earlier events of the same sequence (or catalog).

For an event at time ``t`` with history ``H`` (strictly earlier events; newest first ``x_(1), x_(2), ...``),

``f(x | t, H) = (1 - w) B(x) + w (1 / k') sum_{j <= k'} N(x; x_(j), h_l^2 I)``,  ``k' = min(k, |H|)``,
``B(x) = sum_m c_m N(x; b_m, h_b^2 I) / sum_m c_m``,

with ``b_m`` the distinct training locations and ``c_m`` their multiplicities (so ``B`` is exactly the KDE of the
pooled training events, overlapping windows' repeats included), and ``f = B`` when ``H`` is empty. The bandwidths
``h_b, h_l``, the weight ``w`` and ``k`` are chosen by grid search on the validation events only
(:func:`tune`); the test events are scored once with the chosen values. Everything is evaluated in chunks
(``Q x M`` pairwise blocks of at most ``2^22`` entries), so memory stays bounded whatever the data size.

Two entry points score it exactly like probflux's models:

* Neural STPP protocol: :meth:`KernelSTPP.log_prob` ``(t, x, context)`` reads the history slots of
  :func:`probflux.stpp.history_context` (layout ``[s_last, log(1 + n), (m_j, dt_j, x_j) * K]``, newest first), so
  ``probflux.stpp.spatial_log_likelihood(model, model_points(seqs, history=K))`` scores it;
* continuous protocol: :meth:`KernelSTPP.spatial_log_prob` ``(t, x, history)`` for
  :func:`probflux.stpp.continuous.spatial_scores`.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

BLOCK = 1 << 22  # entries of one pairwise (query x kernel) block


def _log_gauss_sq(d2: Tensor, h: float, dim: int) -> Tensor:
    return -0.5 * d2 / h**2 - dim * math.log(h) - 0.5 * dim * math.log(2 * math.pi)


def dedupe(x: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of ``x: (N, D)`` and their counts ``(M,)`` (float64)."""
    u, c = torch.unique(x.double(), dim=0, return_counts=True)
    return u, c.double()


def log_kde(x: Tensor, centres: Tensor, log_weights: Tensor, h: float) -> Tensor:
    """``(Q,)`` ``log sum_m exp(lw_m) N(x; b_m, h^2 I)`` (``log_weights`` normalised), chunked over queries and kernels."""
    q, m, d = x.shape[0], centres.shape[0], x.shape[1]
    rows = max(1, min(q, BLOCK // max(m, 1)))
    cols = m if rows > 1 or m <= BLOCK else BLOCK
    out = []
    for i in range(0, q, rows):
        xi = x[i:i + rows]
        acc = torch.full((xi.shape[0],), -math.inf, dtype=torch.float64)
        for j in range(0, m, cols):
            d2 = torch.cdist(xi, centres[j:j + cols]).square()
            acc = torch.logaddexp(acc, torch.logsumexp(_log_gauss_sq(d2, h, d) + log_weights[j:j + cols][None, :], 1))
        out.append(acc)
    return torch.cat(out)


def log_local(x: Tensor, xs: Tensor, valid: Tensor, h: float, k: int) -> Tensor:
    """``(Q,)`` ``log (1 / k') sum_{j < k'} N(x; xs_j, h^2 I)`` over the first ``k`` slots of ``xs: (Q, K, D)`` (newest
    first) that are ``valid: (Q, K)``; ``-inf`` where no slot is valid."""
    xs, valid = xs[:, :k], valid[:, :k]
    d2 = (x[:, None, :] - xs).square().sum(-1)
    lg = _log_gauss_sq(d2, h, x.shape[1]).masked_fill(~valid, -math.inf)
    cnt = valid.sum(1)
    return torch.logsumexp(lg, 1) - torch.log(cnt.clamp_min(1).double())


def mix(log_b: Tensor, log_l: Tensor, w: float) -> Tensor:
    """``log((1 - w) B + w L)``, and ``log B`` where there is no history (``log_l = -inf``)."""
    both = torch.logaddexp(math.log1p(-w) + log_b, math.log(w) + log_l)
    return torch.where(torch.isfinite(log_l), both, log_b)


def slots_from_context(context: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """History slots of :func:`probflux.stpp.history_context` rows ``(N, 2 + K (D + 2))``: ``xs (N, K, D)``, ``valid (N, K)``."""
    n = context.shape[0]
    k = (context.shape[1] - 2) // (dim + 2)
    s = context[:, 2:].reshape(n, k, dim + 2)
    return s[..., 2:].double(), s[..., 0] > 0.5


class KernelSTPP(nn.Module):
    """The kernel baseline with fixed ``h_b, h_l, w, k`` (see the module docstring); ``background: (N, D)`` training
    locations (duplicates collapse into weights). The bandwidths are parameters only so that
    :func:`probflux.stpp.spatial_log_likelihood` finds a dtype; nothing is trained."""

    def __init__(self, background: Tensor, h_b: float, h_l: float, w: float, k: int) -> None:
        super().__init__()
        if not (h_b > 0 and h_l > 0 and 0.0 <= w < 1.0) or isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"need h_b, h_l > 0, 0 <= w < 1, integer k >= 1; got {h_b}, {h_l}, {w}, {k}")
        centres, counts = dedupe(background)
        self.register_buffer("centres", centres)
        self.register_buffer("log_weights", torch.log(counts / counts.sum()))
        self.log_h = nn.Parameter(torch.tensor([math.log(h_b), math.log(h_l)], dtype=torch.float64), requires_grad=False)
        self.w, self.k = float(w), int(k)

    @property
    def h_b(self) -> float:
        return float(self.log_h[0].exp())

    @property
    def h_l(self) -> float:
        return float(self.log_h[1].exp())

    def _score(self, x: Tensor, xs: Tensor, valid: Tensor) -> Tensor:
        x = x.double()
        lb = log_kde(x, self.centres, self.log_weights, self.h_b)
        if self.w == 0.0:
            return lb
        return mix(lb, log_local(x, xs.double(), valid, self.h_l, self.k), self.w)

    def log_prob(self, t: Tensor, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Neural STPP protocol: ``x: (N, D)``, ``context``: :func:`probflux.stpp.history_context` rows with ``K >= k``."""
        if context is None:
            return log_kde(x.double(), self.centres, self.log_weights, self.h_b)
        xs, valid = slots_from_context(context, x.shape[1])
        if xs.shape[1] < self.k:
            raise ValueError(f"the history context holds {xs.shape[1]} events; k = {self.k} needs at least k")
        return self._score(x, xs, valid)

    def spatial_log_prob(self, t: Tensor, x: Tensor, history) -> Tensor:
        """Continuous protocol (:class:`probflux.stpp.continuous.History`): kernels at the newest ``k`` visible events."""
        idx, valid = history.last(self.k)
        return self._score(x, history.x.double()[idx], valid)


@dataclass
class Tuned:
    h_b: float
    h_l: float
    w: float
    k: int
    val_ll: float
    grid_points: int


DEFAULT_W = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
DEFAULT_K = (1, 2, 4, 8, 16, 32, 64)


def bandwidth_grid(x: Tensor, n: int = 13, lo: float = 1e-3, hi: float = 1.0) -> list[float]:
    """``n`` log-spaced bandwidths from ``lo`` to ``hi`` times the mean coordinate sd of ``x``."""
    s = float(x.double().std(0).mean())
    return [s * lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def tune(background: Tensor, val_x: Tensor, val_slots: tuple[Tensor, Tensor], *, h_b: Sequence[float], h_l: Sequence[float],
         ks: Sequence[int] = DEFAULT_K, ws: Sequence[float] = DEFAULT_W) -> Tuned:
    """Grid search of ``(h_b, h_l, k, w)`` maximising the mean validation log-density; ``val_slots = (xs (V, K, D), valid (V, K))``
    are the validation events' newest-first history slots (``K >= max(ks)``). The background and local parts are
    computed once per bandwidth (and ``k``) and combined for every ``w``."""
    val_x = val_x.double()
    xs, valid = val_slots
    if xs.shape[1] < max(ks):
        raise ValueError(f"validation slots hold {xs.shape[1]} events; ks needs {max(ks)}")
    centres, counts = dedupe(background)
    lw = torch.log(counts / counts.sum())
    bgs = {hb: log_kde(val_x, centres, lw, hb) for hb in h_b}
    locs = {(hl, k): log_local(val_x, xs.double(), valid, hl, k) for hl, k in itertools.product(h_l, ks)}
    best, n = None, 0
    for hb, (hl, k), w in itertools.product(h_b, locs, ws):
        if w == 0.0 and (hl, k) != next(iter(locs)):
            continue  # w = 0 ignores the local part
        n += 1
        v = float(mix(bgs[hb], locs[(hl, k)], w).mean()) if w > 0 else float(bgs[hb].mean())
        if best is None or v > best.val_ll:
            best = Tuned(hb, hl, w, k, v, 0)
    best.grid_points = n
    return best


def tune_refined(background: Tensor, val_x: Tensor, val_slots: tuple[Tensor, Tensor], *, coarse: int = 13,
                 ks: Sequence[int] = DEFAULT_K, ws: Sequence[float] = DEFAULT_W) -> Tuned:
    """:func:`tune` on a coarse bandwidth grid (:func:`bandwidth_grid`, ``coarse`` points over three decades), then on a
    grid 4x finer around the best ``h_b, h_l`` (same ``k``) with ``w`` refined to steps of 0.025 around its best."""
    grid = bandwidth_grid(background, coarse)
    first = tune(background, val_x, val_slots, h_b=grid, h_l=grid, ks=ks, ws=ws)
    step = (grid[1] / grid[0]) ** 0.25
    fine = lambda h: [h * step ** i for i in range(-4, 5)]  # noqa: E731
    w_fine = sorted({min(0.99, max(0.0, round(first.w + 0.025 * i, 4))) for i in range(-4, 5)})
    second = tune(background, val_x, val_slots, h_b=fine(first.h_b), h_l=fine(first.h_l), ks=(first.k,), ws=w_fine)
    second.grid_points += first.grid_points
    return second if second.val_ll >= first.val_ll else first
