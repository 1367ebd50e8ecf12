"""Temporal point processes on a window ``[t0, t1]`` (time in the data's own units, as Neural STPP reports).

Log-likelihood of one sequence ``t_1 <= ... <= t_n``: ``sum_i log lambda(t_i) - int_{t0}^{t1} lambda(t) dt``.
Both models here have a closed-form compensator, so the likelihood is exact.

For ONE continuous catalog (the continuous protocol of :mod:`probflux.stpp.continuous`): :class:`ConstantRate`
(homogeneous Poisson) and :class:`ETASTemporal`, an ETAS-style self-exciting intensity without magnitudes whose
triggering kernel is a non-negative combination of exponentials on a fixed log-spaced grid of time scales (so it
can take the Omori power-law shape over many decades); its likelihood is concave in the weights and
fitted exactly by L-BFGS-B (scipy). Both implement ``log_intensity(t, history)`` and ``integral(a, b, t_events)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..data.events import EventSequences

__all__ = ["PoissonProcess", "HawkesProcess", "ConstantRate", "ETASTemporal", "CountETASTemporal"]


def _check(seqs: EventSequences) -> EventSequences:
    if not isinstance(seqs, EventSequences):
        raise TypeError(f"seqs must be an EventSequences; got {type(seqs).__name__}")
    return seqs



def _mean_negative_log_likelihood(X: np.ndarray, C: np.ndarray, T: float) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    r"""The objective of a linear intensity :math:`\lambda_i = \mu + X_i \cdot w` over the scored events, as a function
    of ``p = (mu, w)``: ``-(sum_i log lambda_i - mu T - C . w) / n`` and its gradient, with ``X: (n, M)`` the
    excitation of each scored event per unit weight, ``C: (M,)`` the compensator per unit weight and ``T`` the length
    of the scored interval. Concave log-likelihood, so L-BFGS-B with non-negative bounds finds its maximum."""
    n = X.shape[0]

    def f(p: np.ndarray) -> tuple[float, np.ndarray]:
        mu, w = p[0], p[1:]
        lam = mu + X @ w
        ll = np.log(lam).sum() - mu * T - C @ w
        g = np.concatenate([[np.sum(1.0 / lam) - T], X.T @ (1.0 / lam) - C])
        return -ll / n, -g / n

    return f

class PoissonProcess(nn.Module):
    r"""Homogeneous Poisson process ``lambda(t) = rate``; :meth:`fit` is the closed-form MLE
    ``rate = (number of events) / (number of sequences * (t1 - t0))``."""

    def __init__(self, rate: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0; got {rate!r}")
        self.log_rate = nn.Parameter(torch.tensor(math.log(rate), dtype=torch.float64))

    @property
    def rate(self) -> float:
        return float(self.log_rate.detach().exp())

    def fit(self, seqs: EventSequences) -> PoissonProcess:
        seqs = _check(seqs)
        span = seqs.window[1] - seqs.window[0]
        with torch.no_grad():
            self.log_rate.fill_(math.log(seqs.n_events / (len(seqs) * span)))
        return self

    def log_likelihood(self, seqs: EventSequences) -> Tensor:
        """``(S,)`` log-likelihood of each sequence: ``n_s log(rate) - rate (t1 - t0)``."""
        seqs = _check(seqs)
        span = seqs.window[1] - seqs.window[0]
        n = torch.tensor(seqs.lengths, dtype=torch.float64)
        return n * self.log_rate - self.log_rate.exp() * span


class HawkesProcess(nn.Module):
    r"""Exponential-kernel Hawkes process on each sequence independently:

    ``lambda(t) = mu + alpha * beta * sum_{j: t_j < t} exp(-beta (t - t_j))``, with ``mu, alpha, beta > 0``
    (``alpha`` is the branching ratio: the expected number of direct offspring of an event). Compensator
    ``mu (t1 - t0) + alpha sum_j (1 - exp(-beta (t1 - t_j)))``. The sum runs over earlier events in
    sequence order (tied times count as earlier, the usual convention for rounded data).
    """

    def __init__(self, mu: float = 1.0, alpha: float = 0.5, beta: float = 1.0) -> None:
        super().__init__()
        for name, v in (("mu", mu), ("alpha", alpha), ("beta", beta)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
        self.log_params = nn.Parameter(torch.tensor([math.log(mu), math.log(alpha), math.log(beta)], dtype=torch.float64))

    @property
    def params(self) -> dict[str, float]:
        mu, alpha, beta = self.log_params.detach().exp().tolist()
        return {"mu": mu, "alpha": alpha, "beta": beta}

    def log_likelihood(self, seqs: EventSequences) -> Tensor:
        """``(S,)`` exact log-likelihood of each sequence (vectorised over sequences, a loop over event index)."""
        seqs = _check(seqs)
        t0, t1 = seqs.window
        S, L = len(seqs), max(seqs.lengths)
        dtype = self.log_params.dtype
        T = torch.zeros(S, L, dtype=dtype)
        M = torch.zeros(S, L, dtype=dtype)
        for i, s in enumerate(seqs.sequences):
            T[i, : len(s)] = s[:, 0].to(dtype)
            M[i, : len(s)] = 1.0
        mu, alpha, beta = self.log_params.exp()
        # A_i = sum_{j<i} exp(-beta (t_i - t_j)) by the recursion A_i = exp(-beta (t_i - t_{i-1})) (1 + A_{i-1}).
        A = [torch.zeros(S, dtype=dtype)]
        # unbind, not decay[:, i]: each indexing op's backward would write a full (S, L) zero gradient — quadratic
        # in L (minutes per step on EarthquakeNPP windows of 3,484 events); unbind's backward stacks once
        decay = torch.exp(-beta * (T[:, 1:] - T[:, :-1]).clamp_min(0.0)).unbind(1)
        for i in range(1, L):
            A.append(decay[i - 1] * (1.0 + A[-1]))
        A = torch.stack(A, 1)
        log_lam = torch.log(mu + alpha * beta * A)
        compensator = mu * (t1 - t0) + alpha * ((1.0 - torch.exp(-beta * (t1 - T))) * M).sum(1)
        return (log_lam * M).sum(1) - compensator

    def fit(self, seqs: EventSequences, *, steps: int = 200, lr: float = 0.05) -> HawkesProcess:
        """Maximum likelihood by Adam on the log-parameters (the problem is 3-dimensional and smooth).

        Starts from the Poisson rate with ``alpha = 0.5``, ``beta = 1 / (mean inter-event time)``."""
        seqs = _check(seqs)
        span = seqs.window[1] - seqs.window[0]
        rate = seqs.n_events / (len(seqs) * span)
        with torch.no_grad():
            init = [math.log(rate * 0.5), math.log(0.5), math.log(max(rate, 1e-6))]
            self.log_params.copy_(torch.tensor(init, dtype=self.log_params.dtype))
        opt = torch.optim.Adam([self.log_params], lr=lr)
        n = seqs.n_events
        for _ in range(steps):
            opt.zero_grad()
            loss = -self.log_likelihood(seqs).sum() / n
            loss.backward()
            opt.step()
        return self


# ------------------------------------------------------------------------------- one continuous catalog


def _times(t: Tensor, name: str = "t") -> np.ndarray:
    a = np.asarray(torch.as_tensor(t).detach().cpu().double().numpy(), dtype=np.float64).reshape(-1)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    if a.size > 1 and (np.diff(a) < 0).any():
        raise ValueError(f"{name} must be sorted (non-decreasing)")
    return a


def _check_span(a: float, b: float) -> tuple[float, float]:
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b) and a <= b):
        raise ValueError(f"the interval must be finite with a <= b; got ({a}, {b})")
    return a, b


class ConstantRate:
    """Homogeneous Poisson intensity ``lambda(t) = rate`` (events per time unit) for the continuous protocol;
    :meth:`fit` is the MLE ``rate = n / (b - a)`` over the events in ``[a, b]``."""

    def __init__(self, rate: float = 1.0) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0; got {rate!r}")
        self.rate = float(rate)

    def fit(self, t: Tensor, a: float, b: float) -> ConstantRate:
        a, b = _check_span(a, b)
        n = int(((_times(t) >= a) & (_times(t) <= b)).sum())
        if n < 1 or b <= a:
            raise ValueError(f"fit needs at least one event in [{a}, {b}] with a < b")
        self.rate = n / (b - a)
        return self

    def log_intensity(self, t: Tensor, history=None) -> Tensor:
        return torch.full((torch.as_tensor(t).reshape(-1).shape[0],), math.log(self.rate), dtype=torch.float64)

    def integral(self, a: float, b: float, t_events: Optional[Tensor] = None) -> float:
        a, b = _check_span(a, b)
        return self.rate * (b - a)


def _decayed_sums(t: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``S: (n, M)``, ``S[i, m] = sum_{j < i} exp(-beta_m (t_i - t_j))`` (by row index) via
    ``S_i = exp(-beta (t_i - t_{i-1})) (1 + S_{i-1})``."""
    n = t.shape[0]
    S = np.zeros((n, beta.shape[0]))
    if n > 1:
        dec = np.exp(-np.diff(t)[:, None] * beta[None, :])
        for i in range(1, n):
            S[i] = dec[i - 1] * (1.0 + S[i - 1])
    return S


DEFAULT_SCALES = tuple(float(v) for v in np.logspace(-3, 4, 15))
"""Time scales ``1 / beta_m`` of :class:`ETASTemporal`'s kernel (in the data's time unit; days: 1.4 min to 27 years)."""


class ETASTemporal:
    r"""ETAS-style temporal intensity without magnitudes (one continuous catalog):

    ``lambda*(t) = mu + sum_{t_j < t} g(t - t_j)``,  ``g(s) = sum_m a_m beta_m exp(-beta_m s)``,  ``mu > 0, a_m >= 0``,

    with fixed time scales ``1 / beta_m`` (:data:`DEFAULT_SCALES`): a non-negative combination of exponentials,
    which approximates the Omori–Utsu law ``K / (s + c)^p`` over the decades the scales cover; ``sum_m a_m`` is the
    branching ratio (expected direct offspring per event). Only strictly earlier events excite (ties never see each
    other). Compensator in closed form: ``int_a^b lambda* = mu (b - a) + sum_{t_j < b} sum_m a_m
    [exp(-beta_m (max(a, t_j) - t_j)) - exp(-beta_m (b - t_j))]``.

    :meth:`fit`: maximum likelihood on the events of ``[a, b]`` (events before ``a`` excite but are not scored).
    The log-likelihood is concave in ``(mu, a_1..a_M)`` (log of a linear function minus a linear function), so
    L-BFGS-B with bounds ``>= 0`` finds the global maximum; the sums ``sum_j beta_m exp(-beta_m (t_i - t_j))``
    are computed once by recursion (``O(N M)``).
    """

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES) -> None:
        sc = np.asarray([float(v) for v in scales], dtype=np.float64)
        if sc.ndim != 1 or sc.size < 1 or not (np.isfinite(sc).all() and (sc > 0).all()):
            raise ValueError(f"scales must be a non-empty list of finite numbers > 0; got {scales!r}")
        self.beta = 1.0 / sc
        self.mu = 1.0
        self.weights = np.zeros_like(self.beta)
        self.fit_info: dict = {}

    @property
    def branching_ratio(self) -> float:
        return float(self.weights.sum())

    def _excitation(self, t_hist: np.ndarray, tq: np.ndarray, n: np.ndarray) -> np.ndarray:
        """``(Q, M)``: ``sum_{j < n_q} beta_m exp(-beta_m (t_q - t_j))``."""
        S = _decayed_sums(t_hist, self.beta)
        out = np.zeros((tq.shape[0], self.beta.shape[0]))
        has = n > 0
        last = n[has] - 1
        out[has] = np.exp(-(tq[has] - t_hist[last])[:, None] * self.beta[None, :]) * (1.0 + S[last])
        return out * self.beta[None, :]

    def log_intensity(self, t: Tensor, history) -> Tensor:
        """``(Q,)`` ``log lambda*(t_q)`` given rows ``[0, n_q)`` of ``history`` (:class:`probflux.stpp.continuous.History`)."""
        tq = _times(t, "t") if torch.as_tensor(t).numel() > 1 else np.asarray(torch.as_tensor(t).double().reshape(-1).numpy())
        n = np.asarray(history.n.cpu().numpy(), dtype=np.int64)
        E = self._excitation(_times(history.t, "history.t"), tq, n)
        return torch.from_numpy(np.log(self.mu + E @ self.weights))

    def integral(self, a: float, b: float, t_events: Tensor) -> float:
        a, b = _check_span(a, b)
        t = _times(t_events, "t_events")
        t = t[t < b]
        lo = np.exp(-(np.maximum(a, t) - t)[:, None] * self.beta[None, :])
        hi = np.exp(-(b - t)[:, None] * self.beta[None, :])
        return float(self.mu * (b - a) + ((lo - hi) @ self.weights).sum())

    def fit(self, t: Tensor, a: float, b: float, *, max_iter: int = 500) -> ETASTemporal:
        """Maximum likelihood on the events in ``[a, b]`` of the sorted times ``t: (N,)`` (earlier events excite)."""
        from scipy.optimize import minimize

        a, b = _check_span(a, b)
        tt = _times(t)
        tt = tt[tt <= b]
        first = np.searchsorted(tt, tt, side="left")  # strictly earlier: a tie group shares its first member's history
        S = _decayed_sums(tt, self.beta)
        X = (S[first] * self.beta[None, :])[tt >= a]  # (n, M) excitation at each scored event
        n = X.shape[0]
        if n < 2 or b <= a:
            raise ValueError(f"fit needs at least two events in [{a}, {b}] with a < b")
        C = (np.exp(-(np.maximum(a, tt) - tt)[:, None] * self.beta[None, :])
             - np.exp(-(b - tt)[:, None] * self.beta[None, :])).sum(0)  # (M,) compensator per unit weight
        T = b - a

        f = _mean_negative_log_likelihood(X, C, T)

        p0 = np.concatenate([[0.5 * n / T], np.full(self.beta.shape[0], 0.5 / self.beta.shape[0])])
        res = minimize(f, p0, jac=True, method="L-BFGS-B", bounds=[(1e-12 * n / T, None)] + [(0.0, None)] * self.beta.shape[0],
                       options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-9})
        self.mu, self.weights = float(res.x[0]), np.asarray(res.x[1:], dtype=np.float64)
        self.fit_info = {"train_ll_per_event": float(-res.fun), "iterations": int(res.nit), "converged": bool(res.success),
                         "events": n, "branching_ratio": self.branching_ratio}
        return self


def _following_counts(t: np.ndarray, x: np.ndarray, delay: float, radius: float) -> np.ndarray:
    """``(n,)`` int: for each event ``j``, how many events ``i`` have ``t_j < t_i <= t_j + delay`` and
    ``|x_i - x_j| < radius`` (a loop over index offsets, each step vectorised over the events)."""
    n = t.shape[0]
    out = np.zeros(n, dtype=np.int64)
    hi = np.searchsorted(t, t + delay, side="right")  # events i < hi[j] have t_i <= t_j + delay
    r2 = radius * radius
    o = 1
    while True:
        j = np.nonzero(np.arange(n) + o < hi)[0]
        if j.size == 0:
            return out
        i = j + o
        near = (t[i] > t[j]) & (((x[i] - x[j]) ** 2).sum(1) < r2)
        np.add.at(out, j[near], 1)
        o += 1


def _binned_decayed_sums(t: np.ndarray, beta: np.ndarray, f: np.ndarray, bins: int) -> np.ndarray:
    """``R: (n, F, M)``, ``R[q, f, m] = sum_{j <= q, f_j = f} exp(-beta_m (t_q - t_j))`` (by row index)."""
    n = t.shape[0]
    R = np.zeros((n, bins, beta.shape[0]))
    if n == 0:
        return R
    dec = np.exp(-np.diff(t, prepend=t[0])[:, None] * beta[None, :])
    cur = np.zeros((bins, beta.shape[0]))
    for q in range(n):
        cur *= dec[q][None, :]
        cur[f[q]] += 1.0
        R[q] = cur
    return R


class CountETASTemporal:
    r"""ETAS-style temporal intensity without magnitudes whose productivity of each event, once a delay has passed,
    depends on how many events followed it nearby — a causal proxy for the magnitude that ETAS's productivity
    ``exp(alpha (m - M_c))`` uses (a large shock is followed within minutes by many events close to it):

    ``lambda*(t) = mu + sum_{t_j < t} sum_m w_m(s(t - t_j), f_j^{s}) beta_m exp(-beta_m (t - t_j))``,

    with fixed time scales ``1 / beta_m`` (as :class:`ETASTemporal`), stages ``s(a)`` = the number of ``delays``
    ``d_1 < d_2 < ...`` that the age ``a`` has passed (stage 0: ``a < d_1``), and ``f_j^s`` the bin
    ``min(floor(log2(1 + n_j^s)), bins - 1)`` of ``n_j^s`` = the number of events within ``radius`` of ``x_j`` in
    ``(t_j, t_j + d_s]`` (stage 0 has one bin). ``n_j^s`` is used only at times ``t > t_j + d_s``, when every event
    it counts is strictly earlier: the intensity is causal. Every ``w >= 0``, and ``w`` is non-decreasing in the bin
    (more followers, more offspring): a bin that no fitted event reached takes the weight of the highest bin below it.

    The intensity is linear in ``(mu, w)`` and ``w`` is linear in non-negative increments, so the log-likelihood stays
    concave (log of a linear function minus a linear compensator) and L-BFGS-B with bounds ``>= 0`` finds its global
    maximum. Compensator in closed form: event
    ``j`` contributes ``w_m(s, f_j^s) [exp(-beta_m (lo - t_j)) - exp(-beta_m (hi - t_j))]`` over each stage's time
    interval ``[lo, hi) = [t_j + d_s, t_j + d_{s+1}) ∩ [a, b]``. With ``delays=()`` it is :class:`ETASTemporal`.

    ``log_intensity(t, history)`` reads ``history.x`` as well as its times, and ``integral(a, b, t_events, x_events)``
    needs the events' locations (``needs_locations = True`` tells :func:`probflux.stpp.continuous.temporal_scores`).
    """

    needs_locations = True

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES, delays: Sequence[float] = (0.005,), radius: float = 30.0,
                 bins: int = 7) -> None:
        sc = np.asarray([float(v) for v in scales], dtype=np.float64)
        if sc.ndim != 1 or sc.size < 1 or not (np.isfinite(sc).all() and (sc > 0).all()):
            raise ValueError(f"scales must be a non-empty list of finite numbers > 0; got {scales!r}")
        d = np.asarray([float(v) for v in delays], dtype=np.float64).reshape(-1)
        if not (np.isfinite(d).all() and (d > 0).all() and (np.diff(d) > 0).all()):
            raise ValueError(f"delays must be increasing finite numbers > 0; got {delays!r}")
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a finite number > 0; got {radius!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer; got {bins!r}")
        self.beta, self.delays, self.radius, self.bins = 1.0 / sc, d, float(radius), bins
        self.mu = 1.0
        self.weights = [np.zeros((1, sc.size))] + [np.zeros((bins, sc.size)) for _ in d]  # per stage: (F_s, M)
        self.fit_info: dict = {}

    # ------------------------------------------------------------------ features
    def _bins(self, t: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
        """Per stage ``s >= 1``: ``(n,)`` bin of each event's following count within ``d_s``."""
        return [np.minimum(np.floor(np.log2(1.0 + _following_counts(t, x, float(d), self.radius))).astype(np.int64),
                           self.bins - 1) for d in self.delays]

    def _design(self, t: np.ndarray, x: np.ndarray, tq: np.ndarray, first: np.ndarray) -> np.ndarray:
        """``(Q, P)`` excitation per unit weight at queries ``tq`` whose histories are rows ``[0, first_q)`` of ``t``."""
        beta = self.beta
        fs = [np.zeros(t.shape[0], dtype=np.int64)] + self._bins(t, x)
        edges = [0.0, *self.delays.tolist(), math.inf]
        cols = []
        for s, f in enumerate(fs):
            R = _binned_decayed_sums(t, beta, f, 1 if s == 0 else self.bins)

            def at(P: np.ndarray, R: np.ndarray = R) -> np.ndarray:
                out = np.zeros((tq.shape[0],) + R.shape[1:])
                has = P > 0
                last = P[has] - 1
                out[has] = np.exp(-(tq[has] - t[last])[:, None, None] * beta[None, None, :]) * R[last]
                return out

            lo = first if s == 0 else np.minimum(first, np.searchsorted(t, tq - edges[s], side="left"))
            block = at(lo)
            if edges[s + 1] < math.inf:  # minus the events old enough for the next stage
                block = block - at(np.minimum(lo, np.searchsorted(t, tq - edges[s + 1], side="left")))
            cols.append(np.clip(block, 0.0, None).reshape(tq.shape[0], -1) * np.tile(beta, block.shape[1])[None, :])
        return np.concatenate(cols, 1)

    def _compensator(self, t: np.ndarray, x: np.ndarray, a: float, b: float) -> np.ndarray:
        """``(P,)``: ``int_a^b`` of each design column (events ``t_j < b``)."""
        keep = t < b
        t, x = t[keep], x[keep]
        fs = [np.zeros(t.shape[0], dtype=np.int64)] + self._bins(t, x)
        edges = [0.0, *self.delays.tolist(), math.inf]
        out = []
        for s, f in enumerate(fs):
            lo = np.maximum(a, t + edges[s])
            hi = np.minimum(b, t + edges[s + 1])
            e = np.where((hi > lo)[:, None], np.exp(-(lo - t)[:, None] * self.beta[None, :])
                         - np.exp(-(np.maximum(hi, lo) - t)[:, None] * self.beta[None, :]), 0.0)
            C = np.zeros((1 if s == 0 else self.bins, self.beta.shape[0]))
            np.add.at(C, f, e)
            out.append(C.reshape(-1))
        return np.concatenate(out)

    def _cumulative(self, X: np.ndarray) -> np.ndarray:
        """``(Q, P)`` design columns per bin -> per increment: within each stage, column ``(f', m)`` is the sum of the
        columns ``(f, m)`` with ``f >= f'``."""
        out, i = [], 0
        for w in self.weights:
            F, M = w.shape
            block = X[:, i:i + F * M].reshape(X.shape[0], F, M)
            out.append(np.flip(np.cumsum(np.flip(block, 1), 1), 1).reshape(X.shape[0], F * M))
            i += F * M
        return np.concatenate(out, 1)

    def _flat(self) -> np.ndarray:
        return np.concatenate([w.reshape(-1) for w in self.weights])

    # ------------------------------------------------------------------ the continuous protocol
    def log_intensity(self, t: Tensor, history) -> Tensor:
        """``(Q,)`` ``log lambda*(t_q)`` given rows ``[0, n_q)`` of ``history`` (times and locations)."""
        tq = np.asarray(torch.as_tensor(t).detach().double().reshape(-1).numpy())
        th, xh = _times(history.t, "history.t"), np.asarray(history.x.detach().double().numpy())
        n = np.asarray(history.n.cpu().numpy(), dtype=np.int64)
        return torch.from_numpy(np.log(self.mu + self._design(th, xh, tq, n) @ self._flat()))

    def integral(self, a: float, b: float, t_events: Tensor, x_events: Optional[Tensor] = None) -> float:
        if x_events is None:
            raise ValueError("CountETASTemporal.integral needs x_events, the locations of t_events")
        a, b = _check_span(a, b)
        t = _times(t_events, "t_events")
        x = np.asarray(torch.as_tensor(x_events).detach().double().numpy()).reshape(t.shape[0], -1)
        return float(self.mu * (b - a) + self._compensator(t, x, a, b) @ self._flat())

    def fit(self, t: Tensor, a: float, b: float, *, x: Tensor, max_iter: int = 2000) -> CountETASTemporal:
        """Maximum likelihood on the events in ``[a, b]`` of the sorted times ``t: (N,)`` with locations ``x: (N, D)``."""
        from scipy.optimize import minimize

        a, b = _check_span(a, b)
        tt = _times(t)
        xx = np.asarray(torch.as_tensor(x).detach().double().numpy())
        if xx.ndim != 2 or xx.shape[0] != tt.shape[0]:
            raise ValueError(f"x must have shape (N, D) with N = len(t) = {tt.shape[0]}; got {tuple(xx.shape)}")
        keep = tt <= b
        tt, xx = tt[keep], xx[keep]
        q = np.nonzero(tt >= a)[0]
        n = q.shape[0]
        if n < 2 or b <= a:
            raise ValueError(f"fit needs at least two events in [{a}, {b}] with a < b")
        # monotone in the count: w(s, f) = sum_{f' <= f} u(s, f') with u >= 0, so the design column of u(s, f') sums
        # the columns of the bins f >= f'. A bin no fitted event reached (e.g. more followers than any training event
        # had) then takes the weight of the highest bin below it: its increment has no data and is held at 0.
        X = self._cumulative(self._design(tt, xx, tt[q], np.searchsorted(tt, tt[q], side="left")))
        C = self._cumulative(self._compensator(tt, xx, a, b)[None, :])[0]
        T = b - a
        free = C > 0
        # optimise v = u * scale, scale_p = C_p / n (the expected events per scored event per unit weight): the columns
        # of X differ by orders of magnitude (beta from 1e-4 to 1e3), and L-BFGS-B stalls without this diagonal scaling
        scale = np.where(free, C, 1.0) / n
        X, C = X / scale[None, :], C / scale

        f = _mean_negative_log_likelihood(X, C, T)

        # half the events from the background, half excited; increments without data start and stay at 0
        p0 = np.concatenate([[0.5 * n / T], np.where(free, 0.5 / max(int(free.sum()), 1), 0.0)])
        bounds = [(1e-12 * n / T, None)] + [(0.0, None) if ok else (0.0, 0.0) for ok in free]
        res = minimize(f, p0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-9})
        self.mu = float(res.x[0])
        sizes = [w.size for w in self.weights]
        parts = np.split(np.asarray(res.x[1:], dtype=np.float64) / scale, np.cumsum(sizes)[:-1])
        self.weights = [np.cumsum(p.reshape(w.shape), 0) for p, w in zip(parts, self.weights)]
        self.fit_info = {"train_ll_per_event": float(-res.fun), "iterations": int(res.nit), "converged": bool(res.success),
                         "events": n}
        return self
