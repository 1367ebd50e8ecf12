r"""The validation-tuned kernel baseline as a trainable density: tune it, start there, refine by gradient.

.. math:: \rho(x \mid t, H) \;=\; (1 - W)\, B(x) \;+\; W \sum_{j \le k} \pi_j\, \mathcal N\big(x;\ x_j,\ s_j^2 I\big),

with ``B`` the kernel density estimate of the training locations (bandwidth ``h_b``, one kernel per distinct location
weighted by its count), ``x_1, ..., x_k`` the newest ``k`` strictly earlier events of the sequence (read from the
rows of :func:`probflux.stpp.history_context`), ``pi = softmax_j(a_j + f_0(age_j))`` over the present slots,
``s_j = s_min exp(softplus(r + f_1(age_j)))``, and ``W = sigmoid(beta + g(time since the newest event, history size))``
(``W = 0`` without history; optionally plus ``size_slope log(1 + min(|H|, k)) + gap_slope log(eps + gap)``).
``f`` and ``g`` are MLPs whose last layers start at zero and ``a_j = 0``, so at
construction the density *is* the kernel baseline with parameters ``(h_b, h_l, w, k)``:
``(1 - w) B(x) + (w / k') sum_{j <= k'} N(x; x_j, h_l^2 I)`` with ``k' = min(k, |H|)``. :func:`tune` /
:func:`tune_refined` find those parameters by grid search on validation events only
(:func:`probflux.stpp.kernel_search.tune_fast` searches the whole family from scratch, by coordinate descent);
:func:`refine` then trains the age dependence by gradient with early stopping on the validation events, starting
from (and never keeping anything worse than) the tuned baseline's validation score.

Flux. The background is fixed and the history kernels' centres are constant between events, so the density is one
Gaussian mixture whose weights and bandwidths vary in time with the context held fixed: :class:`ComponentMixture`
gives it the exact ``"mixture"`` (or ``"kr"``) flux (docs/mathematics.md §2/§3b); :meth:`KernelHistory._assemble`
supplies the parameters and their exact time derivatives. At an event the context changes and the density jumps.

Cost. ``B`` has one kernel per distinct training location (tens of thousands): every evaluation against it is
chunked (``Q x M`` pairwise blocks of at most ``2^22`` numbers). :func:`refine` computes ``B`` at the points it fits
once (it has no parameters) by two-fold cross-fitting over blocks of sequences (:func:`cross_fit_background`):
a point's background never contains its own kernel, which would otherwise drive the history weight to zero.
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from ..densities.anchored_events import ComponentMixture
from ..densities.factorized import Params
from ..nn import MLP
from .kernel_sums import BLOCK, _block, dedupe, log_kde, log_kde_near, log_kde_var, near_abramson_log_bandwidths

__all__ = ["KernelHistory", "Tuned", "TunedHistory", "tune", "tune_refined", "tune_extended", "log_kde_t", "log_local_decay",
           "log_kde_var", "abramson_log_bandwidths",
           "slot_ages", "bandwidth_grid", "log_kde", "log_local", "mix", "dedupe",
           "slots_from_context", "cross_fit_background", "refine", "DEFAULT_K", "DEFAULT_W"]

_ABSENT = -1e4  # logit of an empty slot: exp underflows to 0 in float32 and float64
_LOG2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------------ kernel sums

def log_kde_t(t: Tensor, x: Tensor, times: Tensor, centres: Tensor, log_weights: Tensor, h: float, h_t: float) -> Tensor:
    """``(Q,)`` log-density of ``x: (Q, D)`` under the KDE whose kernel ``m`` (at ``centres[m]``, time ``times[m]``) is
    weighted by ``exp(lw_m) N(t; times_m, h_t^2)`` at the query time ``t: (Q,)``, normalised over ``m``: the
    conditional KDE of ``x`` given ``t`` (Nadaraya–Watson weights in time). Chunked; float64; no graph."""
    t, x, times = t.double(), x.double(), times.double()
    centres, log_weights = centres.double(), log_weights.double()
    q, m, d = x.shape[0], centres.shape[0], x.shape[1]
    rows, cols = _block(q, m)
    out = []
    for i in range(0, q, rows):
        xi, ti = x[i:i + rows], t[i:i + rows]
        num = torch.full((xi.shape[0],), -math.inf, dtype=torch.float64)
        den = num.clone()
        for j in range(0, m, cols):
            lt = log_weights[j:j + cols][None, :] - 0.5 * (ti[:, None] - times[j:j + cols][None, :]).square() / h_t**2
            d2 = torch.cdist(xi, centres[j:j + cols]).square()
            num = torch.logaddexp(num, torch.logsumexp(lt - 0.5 * d2 / h**2, 1))
            den = torch.logaddexp(den, torch.logsumexp(lt, 1))
        out.append(num - den)
    return torch.cat(out) - d * math.log(h) - 0.5 * d * _LOG2PI


def abramson_log_bandwidths(centres: Tensor, log_weights: Tensor, h: float, alpha: float) -> Tensor:
    """``(M,)`` log bandwidths of an adaptive KDE (Abramson's law for ``alpha = 1/2``):
    ``log h_m = log h - alpha (log f(b_m) - sum_i pi_i log f(b_i))`` with ``f`` the fixed-bandwidth pilot KDE
    (bandwidth ``h``) at the centres, ``pi = exp(log_weights)``: narrower kernels where the data are dense."""
    pilot = log_kde(centres, centres, log_weights, h)
    return math.log(h) - alpha * (pilot - (log_weights.double().exp() * pilot).sum())


def log_local(x: Tensor, xs: Tensor, valid: Tensor, h: float, k: int) -> Tensor:
    """``(Q,)`` ``log (1 / k') sum_{j < k'} N(x; xs_j, h^2 I)`` over the first ``k`` slots of ``xs: (Q, K, D)`` (newest
    first) that are ``valid: (Q, K)``; ``-inf`` where no slot is valid."""
    xs, valid = xs[:, :k], valid[:, :k]
    d2 = (x[:, None, :] - xs).square().sum(-1)
    lg = (-0.5 * d2 / h**2 - x.shape[1] * math.log(h) - 0.5 * x.shape[1] * _LOG2PI).masked_fill(~valid, -math.inf)
    return torch.logsumexp(lg, 1) - torch.log(valid.sum(1).clamp_min(1).double())


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


# ------------------------------------------------------------------------------------------------ grid search

@dataclass
class Tuned:
    """Kernel-baseline parameters and the mean validation log-density they reach."""
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
    bgs = dict(zip(h_b, log_kde(val_x, centres, lw, list(h_b))))
    locs = {(hl, k): log_local(val_x, xs.double(), valid, hl, k) for hl, k in itertools.product(h_l, ks)}
    best, n = None, 0
    for hb, (hl, k), w in itertools.product(h_b, locs, ws):
        if w == 0.0 and (hl, k) != next(iter(locs)):
            continue  # w = 0 ignores the local part
        n += 1
        v = float(mix(bgs[hb], locs[(hl, k)], w).mean()) if w > 0 else float(bgs[hb].mean())
        if best is None or v > best.val_ll:
            best = Tuned(hb, hl, w, k, v, 0)
    assert best is not None
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


def slot_ages(t: Tensor, context: Tensor, dim: int) -> Tensor:
    """``(N, K)`` ages ``t - t_j`` (model time) of the history slots of :func:`probflux.stpp.history_context` rows."""
    n = context.shape[0]
    k = (context.shape[1] - 2) // (dim + 2)
    dt = context[:, 2:].reshape(n, k, dim + 2)[..., 1]
    return ((t - context[:, 0])[:, None] + dt).double().clamp_min(0.0)


def log_local_decay(x: Tensor, xs: Tensor, valid: Tensor, ages: Tensor, h: float, k: int, decay: float) -> Tensor:
    """``(Q,)`` ``log sum_{j < k} pi_j N(x; xs_j, h^2 I)`` with ``pi_j ∝ exp(-decay a_j)`` over the valid slots among the
    first ``k`` (``decay = 0``: :func:`log_local`); ``-inf`` where no slot is valid."""
    xs, valid, ages = xs[:, :k], valid[:, :k], ages[:, :k]
    d2 = (x[:, None, :] - xs).square().sum(-1)
    lg = (-0.5 * d2 / h**2 - x.shape[1] * math.log(h) - 0.5 * x.shape[1] * _LOG2PI).masked_fill(~valid, -math.inf)
    lw = (-decay * ages).masked_fill(~valid, -math.inf)
    norm = torch.logsumexp(lw, 1, keepdim=True)
    lw = torch.where(valid, lw - torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm)), lw)
    return torch.logsumexp(lg + lw, 1)


@dataclass
class TunedHistory(Tuned):
    """:class:`Tuned` plus the age decay of the history weights (per model time unit; 0: uniform, the baseline) and
    the time bandwidth of the background's weights (model time; None: a static KDE, the baseline)."""
    decay: float = 0.0
    h_t: Optional[float] = None
    size_slope: float = 0.0
    gap_slope: float = 0.0
    alpha: float = 0.0
    pilot_h: Optional[float] = None


DEFAULT_DECAYS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
DEFAULT_HT = (0.02, 0.05, 0.1, 0.2, 0.5)


def tune_extended(background: Tensor, times: Tensor, val_t: Tensor, val_x: Tensor, val_context: Tensor, base: Tuned, *,
                  ks: Sequence[int] = DEFAULT_K, decays: Sequence[float] = DEFAULT_DECAYS,
                  h_ts: Sequence[float] = DEFAULT_HT, ws: Sequence[float] = DEFAULT_W, max_pairs: float = 5e8,
                  keep: int = 10, slopes: bool = True, size_slopes: Sequence[float] = (0.0, 0.25, 0.5, 1.0),
                  gap_slopes: Sequence[float] = (0.0, -0.1, -0.2, -0.4), age_eps: float = 1e-4,
                  alphas: Sequence[float] = (0.25, 0.5), scales: Sequence[float] = (0.7, 1.0, 1.4)) -> TunedHistory:
    """Grid search on validation events of the family :class:`KernelHistory` spans without training, around the
    kernel baseline's ``base`` (:func:`tune_refined`): ``k`` in ``ks``, the history weights' age decay in ``decays``,
    ``h_l`` within a factor 1.33 of ``base.h_l``, ``w`` in ``ws`` plus steps of 0.025 around ``base.w``, then the
    background's time bandwidth ``h_t`` in ``h_ts`` (a :func:`log_kde_t` pass per value, skipped when validation
    events x training events exceed ``max_pairs``) with the ``keep`` best history settings, then (``slopes``) the
    history weight's dependence on the history size and on the time since the newest event (``size_slopes`` x
    ``gap_slopes``, :class:`KernelHistory`'s ``size_slope, gap_slope``) with those settings. First of all, the
    background: the fixed ``base.h_b`` or an adaptive KDE (:func:`abramson_log_bandwidths`, ``alpha`` in ``alphas``,
    global bandwidth ``base.h_b`` times ``scales``), chosen with the baseline's history setting (skipped when the
    passes would exceed ``4 max_pairs`` pairs; the time-weighted background is only tried with a fixed bandwidth).
    ``background: (N, D)``, ``times: (N,)`` the training events (model time); ``val_context``:
    :func:`probflux.stpp.history_context` rows with at least ``max(ks)`` slots. The baseline's own point
    ``(h_b, h_l, w, k, decay 0, no h_t)`` is on the grid, so the result is never worse on validation."""
    D = val_x.shape[1]
    val_x = val_x.double()
    xs, valid = slots_from_context(val_context, D)
    if xs.shape[1] < max(ks):
        raise ValueError(f"validation context holds {xs.shape[1]} slots; ks needs {max(ks)}")
    ages = slot_ages(val_t.double(), val_context, D)
    centres, counts = dedupe(background)
    lw0 = torch.log(counts / counts.sum())
    b0 = log_kde(val_x, centres, lw0, base.h_b)
    step = 1000 ** (1 / 48)  # tune_refined's fine step
    hls = [base.h_l * step ** i for i in (-2, -1, 0, 1, 2)]
    w_all = sorted({v for v in ws if v > 0} | {min(0.99, max(0.01, round(base.w + 0.025 * i, 4))) for i in range(-4, 5)})
    locs = {(k, dc, hl): log_local_decay(val_x, xs, valid, ages, hl, k, dc) for k in ks for dc in decays for hl in hls}
    n = 0
    h_b, alpha = base.h_b, 0.0

    def best_w(lb: Tensor, ll: Tensor) -> tuple[float, float]:
        nonlocal n
        out = (0.0, -math.inf)
        for w in w_all:
            n += 1
            v = float(mix(lb, ll, w).mean())
            if v > out[1]:
                out = (w, v)
        return out

    M = centres.shape[0]
    if alphas and val_x.shape[0] * M * len(alphas) * len(scales) <= max_pairs * 4 and M * M <= max_pairs * 4:
        ref_local = locs[(base.k, 0.0, hls[2])] if base.k in ks else None
        pick = lambda lb: best_w(lb, ref_local)[1] if ref_local is not None else float(lb.mean())  # noqa: E731
        top = pick(b0)
        pilot = log_kde(centres, centres, lw0, base.h_b)
        for a in alphas:
            for sc in scales:
                lh = math.log(sc * base.h_b) - a * (pilot - (lw0.exp() * pilot).sum())
                lb = log_kde_var(val_x, centres, lw0, lh)
                v = pick(lb)
                if v > top:
                    top, b0, h_b, alpha = v, lb, sc * base.h_b, a
    scored = sorted(((best_w(b0, ll), key) for key, ll in locs.items()), key=lambda r: -r[0][1])
    (w, v), (k, dc, hl) = scored[0]
    pilot_h = base.h_b if alpha > 0 else None  # the pilot the search scored (the model recomputes it there)
    best, bt_best = TunedHistory(h_b, hl, w, k, v, 0, dc, None, alpha=alpha, pilot_h=pilot_h), None
    if alpha == 0.0 and val_x.shape[0] * background.shape[0] <= max_pairs:
        tc, tcounts = dedupe(torch.cat([times.double()[:, None], background.double()], 1))
        lw_t = torch.log(tcounts / tcounts.sum())
        for h_t in h_ts:
            bt = log_kde_t(val_t, val_x, tc[:, 0], tc[:, 1:], lw_t, base.h_b, h_t)
            for _, key in scored[:keep]:
                w, v = best_w(bt, locs[key])
                if v > best.val_ll:
                    best, bt_best = TunedHistory(base.h_b, key[2], w, key[0], v, 0, key[1], h_t), bt
    if slopes:
        size = val_context[:, 1].double()
        lgap = torch.log(age_eps + (val_t.double() - val_context[:, 0].double()).clamp_min(0.0))
        bgs = {None: b0} if best.h_t is None else {None: b0, best.h_t: bt_best}
        for h_t, lb in bgs.items():
            for _, key in scored[:keep]:
                ll = locs[key]
                has = valid[:, :key[0]].any(1)
                for ss, gs in itertools.product(size_slopes, gap_slopes):
                    base_gl = ss * size + gs * lgap
                    for w in w_all:
                        n += 1
                        gl = math.log(w / (1 - w)) + base_gl
                        v = torch.where(has, torch.logaddexp(F.logsigmoid(-gl) + lb, F.logsigmoid(gl) + ll), lb)
                        v = float(v.mean())
                        if v > best.val_ll:
                            best = TunedHistory(h_b, key[2], w, key[0], v, 0, key[1], h_t, ss, gs, alpha, pilot_h)
    best.grid_points = n
    return best


# ------------------------------------------------------------------------------------------------ the density

class KernelHistory(ComponentMixture):
    """The kernel baseline ``(h_b, h_l, w, k)`` as a trainable density (module docstring): a fixed KDE of
    ``background: (N, D)`` training locations plus ``k`` age-weighted history kernels.

    >>> import torch, probflux as pf
    >>> from probflux.stpp.kernel_history import KernelHistory
    >>> rho = KernelHistory(torch.randn(40, 2), h_b=0.4, h_l=0.2, w=0.3, k=2).double()
    >>> ctx = torch.tensor([[0.3, 1.1, 1.0, 0.0, 0.5, 0.5, 1.0, 0.1, -1.0, 0.0]], dtype=torch.float64)
    >>> x = rho.sample(0.35, 6, ctx[0])
    >>> bool(pf.continuity_residual(rho, torch.full((6,), 0.35, dtype=torch.float64), x, ctx.expand(6, -1)).relative.max() < 1e-10)
    True

    Args:
        background: ``(N, D)`` training locations (repeats become kernel weights). h_b, h_l, w, k: the baseline's
            parameters (``0 < w < 1``). Keyword-only: hidden, layers: the MLPs ``f`` (per slot, of
            ``log(eps + age), age, rank``) and ``g`` (of ``log(eps + gap), size``). decay: the history weights' age
            decay (``a_j -> a_j - decay age_j``). times, h_t: the background events' model times and the time
            bandwidth of its weights (None: a static KDE). alpha, pilot_h: adaptive background bandwidths
            ``h_m = h_b (f(b_m) / g)^(-alpha)``, ``f`` the KDE of bandwidth ``pilot_h`` (default ``h_b``) at the
            centres, ``g`` its weighted geometric mean (:func:`abramson_log_bandwidths`). size_slope, gap_slope:
            ``beta -> beta + size_slope log(1 + min(n, k)) + gap_slope log(eps + gap)``. min_scale: floor of the
            history bandwidths (default ``h_l / 20``). age_eps: ``eps`` in model time units. flux, chunk_elements:
            see :class:`ComponentMixture`.
    """

    def __init__(self, background: Tensor, h_b: float, h_l: float, w: float, k: int, *, decay: float = 0.0,
                 times: Optional[Tensor] = None, h_t: Optional[float] = None, alpha: float = 0.0,
                 pilot_h: Optional[float] = None, size_slope: float = 0.0,
                 gap_slope: float = 0.0, hidden: int = 32, layers: int = 2,
                 min_scale: Optional[float] = None, age_eps: float = 1e-4, flux: str = "mixture",
                 chunk_elements: int = 2**21) -> None:
        background = torch.as_tensor(background)
        if background.dim() != 2 or background.shape[0] < 1 or not torch.isfinite(background).all():
            raise ValueError(f"background must be a finite (N, D) tensor with N >= 1; got shape {tuple(background.shape)}")
        if not (h_b > 0 and h_l > 0):
            raise ValueError(f"h_b and h_l must be positive; got {h_b}, {h_l}")
        if not 0.0 < w < 1.0:
            raise ValueError(f"w must lie in (0, 1) (w = 0 has no history part to refine); got {w}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}")
        min_scale = h_l / 20 if min_scale is None else min_scale
        if not 0 < min_scale < h_l:
            raise ValueError(f"min_scale must lie in (0, h_l={h_l}); got {min_scale}")
        if not age_eps > 0:
            raise ValueError(f"age_eps must be positive; got {age_eps}")
        if not decay >= 0:
            raise ValueError(f"decay must be a rate >= 0; got {decay}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0; got {alpha}")
        if pilot_h is not None and not pilot_h > 0:
            raise ValueError(f"pilot_h must be positive (or None: h_b); got {pilot_h}")
        if alpha > 0 and h_t is not None:
            raise ValueError("alpha (adaptive bandwidths) and h_t (time-weighted background) cannot be combined")
        if h_t is not None:
            if not h_t > 0:
                raise ValueError(f"h_t must be positive (or None: no time weighting); got {h_t}")
            if times is None or torch.as_tensor(times).shape != background.shape[:1]:
                raise ValueError(f"h_t needs times: (N,) = ({background.shape[0]},), the training events' model times")
        D = background.shape[1]
        super().__init__(D, 2 + k * (D + 2), flux=flux, chunk_elements=chunk_elements)
        dt = background.dtype if background.is_floating_point() else torch.get_default_dtype()
        if h_t is None:
            centres, counts = dedupe(background)
            self.bg_times: Optional[Tensor] = None
        else:
            tc, counts = dedupe(torch.cat([torch.as_tensor(times).double()[:, None], background.double()], 1))
            centres = tc[:, 1:]
            self.register_buffer("bg_times", tc[:, 0].to(dt))
        self.h_t = None if h_t is None else float(h_t)
        self.register_buffer("decay", torch.tensor(float(decay), dtype=dt))
        self.register_buffer("centres", centres.to(dt))
        self.register_buffer("bg_log_weights", torch.log(counts / counts.sum()).to(dt))
        lw = torch.log(counts / counts.sum())
        if alpha > 0:  # the pilot by truncated sums, exact to 1e-9 (kernel_sums.log_kde_near): O(pairs), not O(M^2)
            log_h = near_abramson_log_bandwidths(centres, lw, h_b, alpha, pilot_h)
        else:
            log_h = torch.full_like(lw, math.log(h_b))
        self.register_buffer("bg_log_scale", log_h.to(dt))  # (M,) per-kernel log bandwidths
        self._h_b, self.alpha = float(h_b), float(alpha)
        self.events, self.min_scale, self.age_eps = k, float(min_scale), float(age_eps)
        self.components = centres.shape[0] + k
        self.slot_logits = torch.nn.Parameter(torch.zeros(k))
        self.raw_scale = torch.nn.Parameter(torch.tensor(math.log(math.expm1(math.log(h_l / min_scale)))))
        self.bias = torch.nn.Parameter(torch.tensor(math.log(w / (1 - w))))
        self.size_slope = torch.nn.Parameter(torch.tensor(float(size_slope)))
        self.gap_slope = torch.nn.Parameter(torch.tensor(float(gap_slope)))
        self.kernel_net = MLP(3, 2, hidden, layers, last_init_scale=0.0)
        self.group_net = MLP(2, 1, hidden, layers, last_init_scale=0.0)

    @classmethod
    def from_tuned(cls, background: Tensor, tuned: Tuned, times: Optional[Tensor] = None, **kw) -> KernelHistory:
        """The model at a :func:`tune` / :func:`tune_refined` / :func:`tune_extended` result (``w`` clipped into
        ``[0.01, 0.99]``); ``times: (N,)`` the background events' model times (needed when the result has ``h_t``)."""
        extra = ({"decay": tuned.decay, "h_t": tuned.h_t, "times": times, "size_slope": tuned.size_slope,
                  "gap_slope": tuned.gap_slope, "alpha": tuned.alpha, "pilot_h": tuned.pilot_h}
                 if isinstance(tuned, TunedHistory) else {})
        return cls(background, tuned.h_b, tuned.h_l, min(0.99, max(0.01, tuned.w)), tuned.k, **extra, **kw)

    @property
    def h_b(self) -> float:
        """The background's global bandwidth (per-kernel bandwidths scatter around it when ``alpha > 0``)."""
        return self._h_b

    # ------------------------------------------------------------------ history part
    def _feat(self, a: Tensor) -> tuple[Tensor, Tensor]:
        pos = a.clamp_min(0.0)
        return torch.log(self.age_eps + pos), (a >= 0).to(a.dtype) / (self.age_eps + pos)

    def _history(self, t: Tensor, ctx: Tensor, tangent: bool):
        """Slots ``xs (N, k, D)``, ``present (N, k)``, within-group log weights ``lz (N, k)``, history bandwidths
        ``log s (N, k)``, group log weights ``log W, log(1 - W) (N,)``, and with ``tangent`` their time derivatives."""
        if ctx is None:
            raise ValueError(f"KernelHistory needs a context (history_context rows of width {self.context_dim})")
        N, k, D = t.shape[0], self.events, self.dim
        slots = ctx[:, 2:].reshape(N, k, D + 2)
        present, xs = slots[..., 0] > 0.5, slots[..., 2:]
        gap = t - ctx[:, 0]
        age = gap[:, None] + slots[..., 1]
        la, dla = self._feat(age)
        rank = (torch.arange(k, dtype=t.dtype, device=t.device) / k).expand(N, k)
        feat = torch.stack([la, age.clamp_min(0.0), rank], -1).reshape(N * k, 3)
        dfeat = torch.stack([dla, (age >= 0).to(t.dtype), torch.zeros_like(rank)], -1).reshape(N * k, 3)
        if tangent:
            out, dout, _ = self.kernel_net.jvp(feat, dfeat)
            dout = dout.reshape(N, k, 2)
        else:
            out, dout = self.kernel_net(feat), None
        out = out.reshape(N, k, 2)
        z = torch.where(present, self.slot_logits - self.decay * age.clamp_min(0.0) + out[..., 0], torch.full_like(out[..., 0], _ABSENT))
        lz = torch.log_softmax(z, -1)
        raw = self.raw_scale + out[..., 1]
        log_s = math.log(self.min_scale) + F.softplus(raw)
        lg, dlg = self._feat(gap)
        size = ctx[:, 1]
        ginp = torch.stack([lg, size], -1)
        if tangent:
            g, dg, _ = self.group_net.jvp(ginp, torch.stack([dlg, torch.zeros_like(size)], -1))
            dg = dg[:, 0]
        else:
            g, dg = self.group_net(ginp), None
        gl = self.bias + self.size_slope * size + self.gap_slope * lg + g[:, 0]
        if tangent:
            dg = dg + self.gap_slope * dlg
        has = present.any(-1)
        absent = torch.full_like(gl, _ABSENT)
        log_w = torch.where(has, F.logsigmoid(gl), absent)
        log_1mw = torch.where(has, F.logsigmoid(-gl), torch.zeros_like(gl))
        if not tangent:
            return xs, present, lz, log_s, log_w, log_1mw, None
        dz = torch.where(present, dout[..., 0] - self.decay * (age >= 0).to(t.dtype), torch.zeros_like(z))
        dlz = dz - (lz.exp() * dz).sum(-1, keepdim=True)
        dlog_s = torch.sigmoid(raw) * dout[..., 1]
        dlog_w = torch.where(has, torch.sigmoid(-gl) * dg, torch.zeros_like(gl))
        dlog_1mw = torch.where(has, -torch.sigmoid(gl) * dg, torch.zeros_like(gl))
        return xs, present, lz, log_s, log_w, log_1mw, (dlz, dlog_s, dlog_w, dlog_1mw)

    def _bg_logw(self, t: Tensor, tangent: bool) -> tuple[Tensor, Optional[Tensor]]:
        """Background log-weights ``(N or 1, M)`` at ``t: (N,)`` (time-weighted when ``h_t`` is set) and their rates."""
        if self.bg_times is None:
            return self.bg_log_weights[None, :], (torch.zeros_like(self.bg_log_weights)[None, :] if tangent else None)
        dt = t[:, None] - self.bg_times
        lw = torch.log_softmax(self.bg_log_weights - 0.5 * dt.square() / self.h_t**2, -1)
        if not tangent:
            return lw, None
        r = -dt / self.h_t**2
        return lw, r - (lw.exp() * r).sum(-1, keepdim=True)

    def _assemble(self, t: Tensor, ctx: Optional[Tensor], tangent: bool) -> tuple[Params, Optional[Params]]:
        xs, _, lz, log_s, log_w, log_1mw, d = self._history(t, ctx, tangent)
        N, M, D = t.shape[0], self.centres.shape[0], self.dim
        bg_lw, dbg_lw = self._bg_logw(t, tangent)
        logits = torch.cat([log_1mw[:, None] + bg_lw, log_w[:, None] + lz], -1)
        loc = torch.cat([self.centres.expand(N, M, D), xs], 1)
        log_scale = torch.cat([self.bg_log_scale[:, None].expand(N, M, D), log_s[..., None].expand(N, self.events, D)], 1)
        if not tangent:
            return (logits, loc, log_scale), None
        dlz, dlog_s, dlog_w, dlog_1mw = d
        dlogits = torch.cat([dlog_1mw[:, None] + dbg_lw, dlog_w[:, None] + dlz], -1)
        dloc = torch.zeros_like(loc)
        dls = torch.cat([torch.zeros(N, M, D, dtype=t.dtype, device=t.device), dlog_s[..., None].expand(N, self.events, D)], 1)
        return (logits, loc, log_scale), (dlogits, dloc, dls)

    # ------------------------------------------------------------------ fast log-density
    def log_background(self, t: Tensor, x: Tensor) -> Tensor:
        """``log B_t(x)`` for ``t: (N,)``, ``x: (N, D)`` (``t`` matters only with ``h_t``): differentiable when ``x`` or
        ``t`` requires a gradient, else by the truncated sums of :func:`probflux.stpp.kernel_sums.log_kde_near`
        (within ``log(1 + 1e-9)`` of the exact value) or the chunked :func:`log_kde_t` (float64, returned in ``x``'s
        dtype)."""
        if not (x.requires_grad or t.requires_grad):
            if self.alpha > 0:
                return log_kde_near(x, self.centres, self.bg_log_weights, log_h=self.bg_log_scale).to(x.dtype)
            if self.bg_times is None:
                return log_kde_near(x, self.centres, self.bg_log_weights, self.h_b).to(x.dtype)
            return log_kde_t(t, x, self.bg_times, self.centres, self.bg_log_weights, self.h_b, self.h_t).to(x.dtype)
        lh, D = self.bg_log_scale, self.dim
        rows = max(1, BLOCK // max(self.centres.shape[0] * D, 1))
        parts = []
        for i in range(0, x.shape[0], rows):
            lw, _ = self._bg_logw(t[i:i + rows], False)
            d2 = (x[i:i + rows, None, :] - self.centres).pow(2).sum(-1)
            parts.append(torch.logsumexp(lw - 0.5 * d2 * torch.exp(-2 * lh) - D * lh, -1))
        return torch.cat(parts) - 0.5 * D * _LOG2PI

    def _parts(self, t: Tensor, x: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """``log W, log(1 - W)`` and ``log L(x) = log sum_j pi_j N(x; x_j, s_j^2 I)``, each ``(N,)``."""
        xs, _, lz, log_s, log_w, log_1mw, _ = self._history(t, ctx, False)
        d2 = (x[:, None, :] - xs).pow(2).sum(-1)
        D = self.dim
        log_n = -0.5 * d2 * torch.exp(-2 * log_s) - D * log_s - 0.5 * D * _LOG2PI
        return log_w, log_1mw, torch.logsumexp(lz + log_n, -1)

    def log_prob_given_background(self, t: Tensor, x: Tensor, ctx: Tensor, log_b: Tensor) -> Tensor:
        """``log rho(x | t, ctx)`` from a given ``log_b = log B(x): (N,)`` (what :func:`refine` trains on)."""
        log_w, log_1mw, log_l = self._parts(t, x, ctx)
        return torch.logaddexp(log_1mw + log_b, log_w + log_l)

    @torch.no_grad()
    def best_bias_shift(self, t: Tensor, x: Tensor, ctx: Tensor, log_b: Tensor,
                        shifts: Sequence[float] = tuple(0.1 * i for i in range(-30, 31))) -> tuple[float, float]:
        """The shift ``delta`` of the history weight's logit ``beta`` (among ``shifts``) that maximises the mean
        log-density of the given points, and that mean: a one-parameter grid search (as the baseline's ``w``)."""
        log_w, _, log_l = self._parts(t, x, ctx)
        has = log_w > _ABSENT / 2
        gl = (log_w - torch.log1p(-log_w.exp().clamp_max(1 - 1e-12)))[has]  # the logit of W
        best = (0.0, -math.inf)
        for d in shifts:
            v = torch.logaddexp(F.logsigmoid(-(gl + d)) + log_b[has], F.logsigmoid(gl + d) + log_l[has])
            mean = float((v.sum() + log_b[~has].sum()) / t.shape[0])
            if mean > best[1]:
                best = (float(d), mean)
        return best

    def _log_prob(self, t: Tensor, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
        if ctx is None:
            raise ValueError(f"KernelHistory needs a context (history_context rows of width {self.context_dim})")
        return self.log_prob_given_background(t, x, ctx, self.log_background(t, x))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, k={self.events}, background kernels={self.centres.shape[0]}, h_b={self.h_b:.4g}, "
                f"h_t={self.h_t}, decay={float(self.decay):.4g}, flux={self.flux_name!r}")


# ------------------------------------------------------------------------------------------------ training

def cross_fit_background(x: Tensor, groups: Tensor, h_b: float, *, block: int = 1, folds: int = 10,
                         points: Optional[Tensor] = None) -> Tensor:
    """``log B(x_i)`` at training points from the KDE (bandwidth ``h_b``) of the training points of the *other folds*.

    ``x: (N, D)`` all training locations; ``groups: (N,)`` integer labels (e.g. each event's sequence index), cut into
    consecutive blocks of ``block`` labels dealt round-robin to ``folds`` folds, so a point's own event (and, for
    overlapping windows in time order, mostly its copies in neighbouring windows) is no kernel of its background, while
    the background still holds ``(folds - 1) / folds`` of the data. ``points``: indices of the points to score (default
    all). Returns ``(len(points),)`` float64."""
    if groups.shape != (x.shape[0],):
        raise ValueError(f"groups must have shape ({x.shape[0]},); got {tuple(groups.shape)}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2; got {folds!r}")
    fold = torch.div(groups, max(1, int(block)), rounding_mode="floor") % folds
    if torch.unique(fold).numel() < 2:
        raise ValueError("cross-fitting needs points in at least two folds; use a smaller block")
    points = torch.arange(x.shape[0]) if points is None else points
    out = torch.empty(points.shape[0], dtype=torch.float64)
    for f in torch.unique(fold[points]).tolist():
        centres, counts = dedupe(x[fold != f])
        q = fold[points] == f
        out[q] = log_kde(x[points[q]], centres, torch.log(counts / counts.sum()), h_b)
    return out


@dataclass
class Refined:
    """What :func:`refine` did: steps taken, the step whose weights it kept (0: the start), validation mean
    log-densities at the start and of the kept weights, CPU seconds, and the validation curve ``[(step, val_ll)]``."""
    steps: int
    best_step: int
    start_val_ll: float
    val_ll: float
    seconds: float
    curve: list


def _shifted(model: KernelHistory, d: float) -> dict:
    state = copy.deepcopy(model.state_dict())
    state["bias"] = state["bias"] + d
    return state


def refine(model: KernelHistory, fit: tuple[Tensor, Tensor, Tensor, Tensor], val: tuple[Tensor, Tensor, Tensor, Tensor], *,
           seconds: float = 30.0, lr: float = 3e-3, batch: int = 1024, eval_every: int = 50, seed: int = 0,
           tune_bias: bool = True, clock: Callable[[], float] = time.process_time, max_steps: int = 1_000_000) -> Refined:
    """Train ``model``'s history part by maximum likelihood on ``fit = (t, x, context, log_b)`` (``log_b``: the
    background at those points, e.g. :func:`cross_fit_background`) with Adam, for ``seconds`` of ``clock``; every
    ``eval_every`` steps score ``val = (t, x, context, log_b)`` (all of it) and keep the best weights, the starting
    ones (step 0) included. With ``tune_bias`` each validation pass also re-chooses the history weight's logit
    ``beta`` on the validation events (:meth:`KernelHistory.best_bias_shift`, as the baseline chooses ``w``), so
    training shapes the age dependence while the overall history/background balance stays a validation choice.
    Leaves ``model`` at the kept weights, in eval mode."""
    start = clock()
    g = torch.Generator().manual_seed(seed)
    dtype = model.bias.dtype
    fit = tuple(v.to(dtype) for v in fit)
    val = tuple(v.to(dtype) for v in val)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)

    @torch.no_grad()
    def score() -> tuple[float, float]:
        model.eval()
        if tune_bias:
            d, v = model.best_bias_shift(*val)
        else:
            d, v = 0.0, float(model.log_prob_given_background(*val).mean())
        model.train()
        return d, v

    with torch.no_grad():
        start_val = float(model.log_prob_given_background(*val).mean())
    d, best_val = score()
    if best_val <= start_val:
        d, best_val = 0.0, start_val
    best_state, best_step, curve = _shifted(model, d), 0, [(0, best_val)]
    n, step = fit[0].shape[0], 0
    while clock() - start < seconds and step < max_steps:
        idx = torch.randint(n, (min(batch, n),), generator=g)
        loss = -model.log_prob_given_background(*(a[idx] for a in fit)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % eval_every == 0:
            d, v = score()
            curve.append((step, v))
            if v > best_val:
                best_val, best_state, best_step = v, _shifted(model, d), step
    model.load_state_dict(best_state)
    model.eval()
    return Refined(step, best_step, start_val, best_val, clock() - start, curve)
