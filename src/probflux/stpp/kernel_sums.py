r"""Sums of Gaussian kernels over many centres, chunked: dense (every pair) and truncated with an exact bound.

Dense: :func:`log_kde` (one or several bandwidths) and :func:`log_kde_var` (one bandwidth per kernel) visit every
``(query, kernel)`` pair in blocks of at most ``BLOCK`` numbers, so memory stays bounded whatever the data size.

Truncated: :func:`log_kde_near` sums only the kernels within ``radius`` bandwidths of each query (pairs from
``scipy.spatial.cKDTree``). A dropped kernel ``m`` (weight ``pi_m``, bandwidth ``h_m``, at distance
``> radius h_m``) contributes at most ``pi_m (2 pi)^{-D/2} h_m^{-D} exp(-radius^2 / 2)``, so the dropped mass is at
most ``eps = (2 pi)^{-D/2} h_min^{-D} exp(-radius^2 / 2)`` (the weights sum to one). Rows whose kept sum is not above
``eps / tol`` are recomputed densely, so every value is within ``log(1 + tol)`` of the exact log-density, below it.
Clustered data (epicentres, stations) keep a few per cent of the pairs at the bandwidths that matter.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

__all__ = ["BLOCK", "dedupe", "log_kde", "log_kde_var", "log_kde_near", "near_abramson_log_bandwidths"]

BLOCK = 1 << 22  # entries of one pairwise (query x kernel) block
_LOG2PI = math.log(2 * math.pi)
_PAIRS = 1 << 22  # pairs of one truncated block (queries are cut so that a block rarely holds more)


def dedupe(x: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of ``x: (N, D)`` in lexicographic order (as ``torch.unique(dim=0)``) and their counts ``(M,)``
    (float64), by a lexsort: a tenth of ``torch.unique``'s time on 10^5 rows."""
    xn = np.ascontiguousarray(x.detach().double().cpu().numpy())
    if xn.shape[0] == 0:
        return torch.from_numpy(xn), torch.zeros(0, dtype=torch.float64)
    s = xn[np.lexsort(xn.T[::-1])]
    new = np.ones(s.shape[0], dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(1)
    starts = np.flatnonzero(new)
    return torch.from_numpy(s[starts].copy()), torch.from_numpy(np.diff(np.append(starts, s.shape[0])).astype(np.float64))


def _block(q: int, m: int) -> tuple[int, int]:
    """Rows and columns of one ``(queries x kernels)`` block of at most ``BLOCK`` entries (whole rows when they fit)."""
    rows = max(1, min(q, BLOCK // max(m, 1)))
    return rows, (m if rows > 1 or m <= BLOCK else BLOCK)


def log_kde(x: Tensor, centres: Tensor, log_weights: Tensor, h: Union[float, Sequence[float]]) -> Tensor:
    """``log sum_m exp(lw_m) N(x; b_m, h^2 I)`` for ``x: (Q, D)``, ``centres: (M, D)``, normalised ``log_weights: (M,)``:
    ``(Q,)`` for one bandwidth ``h``, ``(H, Q)`` for a sequence of ``H`` bandwidths (the distances are computed once
    per block for all of them). Chunked over queries and kernels; float64; no graph through the distances."""
    scalar = isinstance(h, (int, float))
    hs = [float(h)] if scalar else [float(v) for v in h]
    if not hs or min(hs) <= 0:
        raise ValueError(f"bandwidths must be positive; got {h}")
    x, centres, log_weights = x.double(), centres.double(), log_weights.double()
    q, m, d = x.shape[0], centres.shape[0], x.shape[1]
    rows, cols = _block(q, m)
    out = []
    for i in range(0, q, rows):
        xi = x[i:i + rows]
        acc = torch.full((len(hs), xi.shape[0]), -math.inf, dtype=torch.float64)
        for j in range(0, m, cols):
            d2 = torch.cdist(xi, centres[j:j + cols]).square()
            lw = log_weights[j:j + cols][None, :]
            for a, hh in enumerate(hs):
                acc[a] = torch.logaddexp(acc[a], torch.logsumexp(d2 * (-0.5 / hh**2) + lw, 1))
        out.append(acc)
    res = torch.cat(out, 1) - torch.tensor([d * math.log(hh) + 0.5 * d * _LOG2PI for hh in hs], dtype=torch.float64)[:, None]
    return res[0] if scalar else res


def log_kde_var(x: Tensor, centres: Tensor, log_weights: Tensor, log_h: Tensor) -> Tensor:
    """``(Q,)`` ``log sum_m exp(lw_m) N(x; b_m, h_m^2 I)`` with one bandwidth per kernel, ``log_h: (M,)``. Chunked;
    float64; no graph through the distances."""
    x, centres, log_weights, log_h = x.double(), centres.double(), log_weights.double(), log_h.double()
    q, m, d = x.shape[0], centres.shape[0], x.shape[1]
    rows, cols = _block(q, m)
    out = []
    for i in range(0, q, rows):
        xi = x[i:i + rows]
        acc = torch.full((xi.shape[0],), -math.inf, dtype=torch.float64)
        for j in range(0, m, cols):
            lh = log_h[j:j + cols][None, :]
            d2 = torch.cdist(xi, centres[j:j + cols]).square()
            acc = torch.logaddexp(acc, torch.logsumexp(log_weights[j:j + cols][None, :] - 0.5 * d2 * torch.exp(-2 * lh) - d * lh, 1))
        out.append(acc)
    return torch.cat(out) - 0.5 * d * _LOG2PI


_PAIRS = 1 << 22  # pairs of one block (queries are cut so that a block rarely holds more)
FAST_KS = (1, 2, 4, 8, 16, 32, 64, 128)


def _pairs(tree: cKDTree, x: np.ndarray, r: float, rows: int):
    """Blocks ``(start, i, j, dist)`` of the (query, centre) pairs within ``r``, ``rows`` queries at a time."""
    for s in range(0, x.shape[0], rows):
        qt = cKDTree(x[s:s + rows])
        m = qt.sparse_distance_matrix(tree, r, output_type="ndarray")
        yield s, torch.from_numpy(m["i"].astype(np.int64)), torch.from_numpy(m["j"].astype(np.int64)), torch.from_numpy(m["v"])


def _segment_logsumexp(i: Tensor, v: Tensor, n: int) -> Tensor:
    mx = torch.full((n,), -math.inf, dtype=torch.float64).scatter_reduce(0, i, v, "amax")
    safe = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = torch.zeros(n, dtype=torch.float64).index_add_(0, i, torch.exp(v - safe[i]))
    return safe + torch.log(s)


def log_kde_near(x: Tensor, centres: Tensor, log_weights: Tensor, h: Union[float, Sequence[float], None] = None, *,
                 log_h: Optional[Tensor] = None, radius: float = 10.0, tol: float = 1e-9) -> Tensor:
    """:func:`~probflux.stpp.kernel_history.log_kde` (one bandwidth ``h`` -> ``(Q,)``, a sequence of ``H`` -> ``(H, Q)``)
    or, with ``log_h: (M,)`` per-kernel log bandwidths, :func:`~probflux.stpp.kernel_history.log_kde_var` (``(Q,)``),
    summed over the kernels within ``radius`` bandwidths of each query only; rows where the dropped mass could
    exceed ``tol`` times the kept one are recomputed densely (module docstring), so the result is exact to
    ``log(1 + tol)``. ``x: (Q, D)``, ``centres: (M, D)``, normalised ``log_weights: (M,)``; float64; no graph."""
    if (h is None) == (log_h is None):
        raise ValueError("give exactly one of h (a bandwidth or a sequence of them) and log_h (one per kernel)")
    if not radius > 0 or not 0 < tol < 1:
        raise ValueError(f"need radius > 0 and 0 < tol < 1; got radius={radius}, tol={tol}")
    x, centres, log_weights = x.double(), centres.double(), log_weights.double()
    q, m, d = x.shape[0], centres.shape[0], x.shape[1]
    xn, cn = x.numpy(), centres.numpy()
    if log_h is not None:
        log_h = log_h.double()
        if log_h.shape != (m,):
            raise ValueError(f"log_h must have shape ({m},); got {tuple(log_h.shape)}")
        out = torch.full((q,), -math.inf, dtype=torch.float64)
        # buckets of kernels whose bandwidths lie within a factor 2: one tree and one radius per bucket
        b = torch.floor(log_h / math.log(2)).long()
        parts = []
        for key in torch.unique(b).tolist():
            idx = torch.nonzero(b == key).squeeze(1)
            lh = log_h[idx]
            tree = cKDTree(cn[idx.numpy()])
            rows = max(1, min(q, _PAIRS // max(idx.shape[0], 1)))
            for s, i, j, dist in _pairs(tree, xn, radius * float(lh.max().exp()), rows):
                lj = lh[j]
                v = log_weights[idx][j] - 0.5 * dist.square() * torch.exp(-2 * lj) - d * lj
                parts.append(_segment_logsumexp(i + s, v, q) if i.numel() else None)
        for p in parts:
            if p is not None:
                out = torch.logaddexp(out, p)
        out = out - 0.5 * d * _LOG2PI
        log_eps = -0.5 * d * _LOG2PI - d * float(log_h.min()) - 0.5 * radius**2
        bad = ~(out > log_eps - math.log(tol))
        if bad.any():
            out[bad] = log_kde_var(x[bad], centres, log_weights, log_h)
        return out
    scalar = isinstance(h, (int, float))
    hs = [float(h)] if scalar else [float(v) for v in h]
    if not hs or min(hs) <= 0:
        raise ValueError(f"bandwidths must be positive; got {h}")
    tree = cKDTree(cn)
    out = torch.empty(len(hs), q, dtype=torch.float64)
    rows = max(1, min(q, _PAIRS // max(m, 1)))
    for s, i, j, dist in _pairs(tree, xn, radius * max(hs), rows):
        n = min(rows, q - s)
        d2 = dist.square()
        lw = log_weights[j]
        for a, hh in enumerate(hs):
            out[a, s:s + n] = (_segment_logsumexp(i, lw - 0.5 * d2 / hh**2, n) if i.numel()
                               else torch.full((n,), -math.inf, dtype=torch.float64))
    out = out - torch.tensor([d * math.log(hh) + 0.5 * d * _LOG2PI for hh in hs], dtype=torch.float64)[:, None]
    for a, hh in enumerate(hs):
        log_eps = -0.5 * d * _LOG2PI - d * math.log(hh) - 0.5 * radius**2
        bad = ~(out[a] > log_eps - math.log(tol))
        if bad.any():
            out[a, bad] = log_kde(x[bad], centres, log_weights, hh)
    return out[0] if scalar else out


def near_abramson_log_bandwidths(centres: Tensor, log_weights: Tensor, h: float, alpha: float,
                                 pilot_h: Optional[float] = None) -> Tensor:
    """:func:`~probflux.stpp.kernel_history.abramson_log_bandwidths` with the pilot from :func:`log_kde_near`, at the
    bandwidth ``pilot_h`` (default ``h``): ``log h_m = log h - alpha (log f(b_m) - sum_i pi_i log f(b_i))``."""
    pilot = log_kde_near(centres, centres, log_weights, h if pilot_h is None else pilot_h)
    return math.log(h) - alpha * (pilot - (log_weights.double().exp() * pilot).sum())
