r"""Exact discrete optimal transport between point clouds, and the displacement (McCann) interpolation.

Two clouds ``x0: (N, D)`` and ``x1: (M, D)`` with weights ``a: (N,)`` and ``b: (M,)`` (each summing to one;
uniform ``1/N`` and ``1/M`` when not given) are the discrete measures
``mu = sum_i a_i delta_{x0_i}`` and ``nu = sum_j b_j delta_{x1_j}``. The quadratic-cost optimal coupling

.. math::

    P^\star = \arg\min_{P \ge 0,\; P 1 = a,\; P^T 1 = b} \sum_{ij} P_{ij} \, |x0_i - x1_j|^2,
    \qquad \sum_{ij} P^\star_{ij} |x0_i - x1_j|^2 = W_2^2(\mu, \nu),

is solved exactly by the network simplex (POT's ``ot.emd``). Its support has at most ``N + M - 1`` pairs
(a vertex of the transport polytope); for ``N = M`` and uniform weights it is a permutation ``j = sigma(i)``
with ``P_{i sigma(i)} = 1/N`` (Birkhoff–von Neumann; the solver returns a vertex).

The displacement interpolation (McCann) at ``s in [0, 1]`` is the law of ``(1 - s) X_0 + s X_1`` for
``(X_0, X_1) ~ P^*``:

.. math::

    \mu_s = \sum_{ij} P^\star_{ij} \, \delta_{(1-s)\,x0_i + s\,x1_j},

the W_2 geodesic from ``mu`` (``s = 0``) to ``nu`` (``s = 1``): ``W_2(mu_s, mu_r) = |s - r| W_2(mu, nu)``.
In 1-D it is the quantile average ``F_s^{-1} = (1 - s) F_0^{-1} + s F_1^{-1}``; between Gaussians it is the
Gaussian whose mean and covariance follow the Brenier map ``T(x) = m_1 + A (x - m_0)``.

Functions (torch tensors or array-likes in, torch tensors out; float64 throughout):

* :func:`ot_plan` — the sparse optimal coupling ``(i, j, w)``;
* :func:`entropic_plan` — the static Schrödinger-bridge (entropic OT) coupling for a Brownian reference;
* :func:`displacement` — the exact weighted measure ``mu_s`` (support points and weights);
* :func:`mccann_interpolation` — unweighted points of ``mu_s`` (deterministic for a permutation plan,
  seeded draws from the plan otherwise);
* :func:`ot_trajectories` — trajectories through ``K >= 2`` clouds by chaining consecutive plans
  (a Markov chain of couplings), and :func:`piecewise_linear` to read them at any time.

Cost: ``N x M`` float64 cost matrix (8 bytes an entry) and the network simplex, about half a second at
``N = M = 2000``.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import numpy as np
import ot
import torch
from scipy.spatial.distance import cdist

__all__ = ["Coupling", "ot_plan", "entropic_plan", "displacement", "mccann_interpolation", "ot_trajectories", "piecewise_linear"]

_ZERO = 1e-15  # plan entries at or below this (relative to the largest) are dropped from the support


class Coupling(NamedTuple):
    """A sparse coupling: pairs ``(i[k], j[k])`` with mass ``w[k]``; ``w`` sums to one.

    ``i: (K,)`` and ``j: (K,)`` int64 row indices into ``x0`` and ``x1``; ``w: (K,)`` float64; ``n0``, ``n1``
    the cloud sizes ``N`` and ``M``. Pairs are sorted by ``i`` then ``j``.
    """

    i: torch.Tensor
    j: torch.Tensor
    w: torch.Tensor
    n0: int
    n1: int

    def is_permutation(self) -> bool:
        """True when ``N = M`` and every row and column carries exactly one pair of mass ``1/N``."""
        n = self.n0
        return (self.n1 == n and self.i.numel() == n and bool((torch.bincount(self.i, minlength=n) == 1).all())
                and bool((torch.bincount(self.j, minlength=n) == 1).all())
                and bool(torch.allclose(self.w, torch.full_like(self.w, 1.0 / n), rtol=1e-9, atol=0.0)))

    def cost(self, x0: Any, x1: Any) -> float:
        """``sum_k w_k |x0_{i_k} - x1_{j_k}|^2`` (= ``W_2^2`` for the optimal plan)."""
        a, b = _points(x0, "x0"), _points(x1, "x1")
        return float((self.w * ((a[self.i] - b[self.j]) ** 2).sum(-1)).sum())


# ---------------------------------------------------------------------------------------------- input
def _points(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu", torch.float64)
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except Exception as exc:
            raise ValueError(f"{name} must be a numeric array of shape (N, D): {exc}") from None
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        row = int(torch.nonzero(~torch.isfinite(t).all(-1))[0, 0])
        raise ValueError(f"{name} contains NaN or inf (first at row {row})")
    return t


def _weights(w: Any, n: int, name: str) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    if isinstance(w, torch.Tensor):
        w = w.detach().cpu().double().numpy()
    arr = np.asarray(w, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one weight per point; got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return arr / arr.sum()


def _s(s: Any) -> float:
    if isinstance(s, torch.Tensor) and s.numel() == 1:
        s = s.item()
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not (0.0 <= float(s) <= 1.0):
        raise ValueError(f"s must be a real number in [0, 1]; got {s!r}")
    return float(s)


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def _check_plan(plan: Any, n0: int, n1: int) -> Coupling:
    if not isinstance(plan, Coupling):
        raise TypeError(f"plan must be a Coupling (from ot_plan); got {type(plan).__name__}")
    if (plan.n0, plan.n1) != (n0, n1):
        raise ValueError(f"plan couples clouds of sizes ({plan.n0}, {plan.n1}); got x0, x1 of sizes ({n0}, {n1})")
    return plan


# -------------------------------------------------------------------------------------------------- OT
def ot_plan(x0: Any, x1: Any, *, a: Any = None, b: Any = None, num_iter_max: int = 1_000_000) -> Coupling:
    r"""The exact quadratic-cost optimal coupling between ``x0: (N, D)`` and ``x1: (M, D)``.

    Solves ``min_P sum_ij P_ij |x0_i - x1_j|^2`` over ``P >= 0`` with row sums ``a`` and column sums ``b``
    (``ot.emd``, network simplex). ``a: (N,)``, ``b: (M,)`` default to uniform weights; given weights are
    normalised to sum to one.

    Returns:
        :class:`Coupling` ``(i, j, w, N, M)``: the plan's support (entries above ``1e-15`` times its largest
        entry), sorted by ``i``; ``w`` renormalised to sum exactly to one. ``coupling.cost(x0, x1)`` is
        ``W_2^2``. Raises ``RuntimeError`` if the solver does not reach optimality (raise ``num_iter_max``).
    """
    A, B = _points(x0, "x0"), _points(x1, "x1")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"x0 and x1 must have the same dimension D; got x0: {tuple(A.shape)}, x1: {tuple(B.shape)}")
    if isinstance(num_iter_max, bool) or not isinstance(num_iter_max, numbers.Integral) or num_iter_max < 1:
        raise ValueError(f"num_iter_max must be a positive integer; got {num_iter_max!r}")
    wa, wb = _weights(a, A.shape[0], "a"), _weights(b, B.shape[0], "b")
    C = cdist(A.numpy(), B.numpy(), "sqeuclidean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns on max iterations; we raise instead
        P, log = ot.emd(wa, wb, C, numItermax=int(num_iter_max), log=True)
    if int(log["result_code"]) != 1:
        raise RuntimeError(f"exact OT (ot.emd) did not reach optimality on a {A.shape[0]} x {B.shape[0]} problem "
                           f"({log.get('warning')}); increase num_iter_max (now {num_iter_max})")
    ii, jj = np.nonzero(P > _ZERO * P.max())
    w = P[ii, jj]
    return Coupling(torch.from_numpy(ii.astype(np.int64)), torch.from_numpy(jj.astype(np.int64)),
                    torch.from_numpy(w / w.sum()), int(A.shape[0]), int(B.shape[0]))


def entropic_plan(x0: Any, x1: Any, eps: float, *, a: Any = None, b: Any = None, tol: float = 1e-6,
                  num_iter_max: int = 5000, threshold: float = 1e-8, max_marginal_error: float = 1e-2) -> Coupling:
    r"""The static Schrödinger-bridge coupling between ``x0: (N, D)`` and ``x1: (M, D)`` for a reference Brownian
    motion of variance ``eps`` over the interval (``dX = sqrt(eps) dW`` on ``[0, 1]``):

    .. math:: P_{ij} = u_i \exp\big(-|x0_i - x1_j|^2 / (2 \varepsilon)\big) v_j, \qquad P 1 = a,\ P^T 1 = b,

    the entropic OT plan ``argmin sum P_ij |x0_i - x1_j|^2 - 2 eps H(P)`` (POT's log-domain Sinkhorn,
    ``ot.sinkhorn(..., reg=2 eps, method="sinkhorn_log")``, stopped at marginal error ``tol``). Conditionally on
    the pair, the bridge is the Brownian bridge ``(1 - s) x0_i + s x1_j + sqrt(eps s (1 - s)) Z``. As ``eps -> 0``
    the plan tends to :func:`ot_plan`'s. A plan further than ``max_marginal_error`` (total variation) from either
    marginal raises ``RuntimeError``. Entries at or below ``threshold`` times the largest are dropped from the
    support and ``w`` is renormalised. Cost: ``N x M`` float64 and one pass per Sinkhorn iteration (tens of ms at
    ``N = M = 2000``); the smaller ``eps`` relative to the squared distances, the more iterations.

    Returns:
        :class:`Coupling` ``(i, j, w, N, M)``, sorted by ``i``.
    """
    A, B = _points(x0, "x0"), _points(x1, "x1")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"x0 and x1 must have the same dimension D; got x0: {tuple(A.shape)}, x1: {tuple(B.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(float(eps)) and float(eps) > 0):
        raise ValueError(f"eps must be a finite number > 0; got {eps!r}")
    if isinstance(num_iter_max, bool) or not isinstance(num_iter_max, numbers.Integral) or num_iter_max < 1:
        raise ValueError(f"num_iter_max must be a positive integer; got {num_iter_max!r}")
    wa, wb = _weights(a, A.shape[0], "a"), _weights(b, B.shape[0], "b")
    C = torch.cdist(A, B).pow(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns when num_iter_max is reached; the marginal error is checked below
        P = ot.sinkhorn(torch.from_numpy(wa), torch.from_numpy(wb), C, 2.0 * float(eps), method="sinkhorn_log",
                        numItermax=int(num_iter_max), stopThr=float(tol))
    if not bool(torch.isfinite(P).all()) or float(P.sum()) <= 0:
        raise RuntimeError(f"entropic_plan: Sinkhorn failed (non-finite plan) at eps={eps}")
    P = P / P.sum()
    gap = max(float((P.sum(1) - torch.from_numpy(wa)).abs().sum()), float((P.sum(0) - torch.from_numpy(wb)).abs().sum()))
    if gap > max_marginal_error:
        raise RuntimeError(f"entropic_plan: Sinkhorn stopped {gap:.2g} (total variation) from the marginals after "
                           f"{num_iter_max} iterations at eps={eps}; increase num_iter_max or eps")
    ii, jj = torch.nonzero(P > threshold * P.max(), as_tuple=True)
    w = P[ii, jj]
    return Coupling(ii.to(torch.int64), jj.to(torch.int64), w / w.sum(), int(A.shape[0]), int(B.shape[0]))


def displacement(x0: Any, x1: Any, s: float, *, plan: Optional[Coupling] = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The exact McCann interpolant ``mu_s = sum_k w_k delta_{(1-s) x0_{i_k} + s x1_{j_k}}`` as (points, weights).

    Args:
        x0: ``(N, D)``; x1: ``(M, D)``; s: ``in [0, 1]``; plan: a :class:`Coupling` of these clouds
            (default: :func:`ot_plan` with uniform weights).

    Returns:
        ``points: (K, D)`` and ``weights: (K,)`` (summing to one), ``K`` the plan's support size.
    """
    A, B = _points(x0, "x0"), _points(x1, "x1")
    s = _s(s)
    plan = ot_plan(A, B) if plan is None else _check_plan(plan, A.shape[0], B.shape[0])
    return (1.0 - s) * A[plan.i] + s * B[plan.j], plan.w.clone()


def mccann_interpolation(x0: Any, x1: Any, s: float, *, plan: Optional[Coupling] = None, n: Optional[int] = None,
                         seed: int = 0) -> torch.Tensor:
    r"""Unweighted points of the displacement interpolation ``mu_s`` between ``x0`` and ``x1``.

    * If the plan is a permutation (``N = M``, uniform weights: the default case of equal sizes) and ``n`` is
      ``None``: the ``N`` points ``(1 - s) x0_i + s x1_{sigma(i)}`` in the order of ``i`` — exact, no randomness.
    * Otherwise: ``n`` pairs (default ``max(N, M)``) drawn i.i.d. with replacement from the plan's weights,
      ``k ~ Categorical(w)`` (``torch.multinomial`` under a ``torch.Generator`` seeded with ``seed``; the
      caller's random state is untouched), giving ``(1 - s) x0_{i_k} + s x1_{j_k}``. These are i.i.d.
      samples of ``mu_s``.

    Args:
        x0: ``(N, D)``; x1: ``(M, D)``; s: ``in [0, 1]``; plan: a :class:`Coupling` of these clouds
            (default: :func:`ot_plan`, uniform weights); n: number of points to draw; seed: the draw's seed.

    Returns:
        ``(N, D)`` (permutation case) or ``(n, D)`` float64 points.
    """
    A, B = _points(x0, "x0"), _points(x1, "x1")
    s = _s(s)
    seed = _seed(seed)
    plan = ot_plan(A, B) if plan is None else _check_plan(plan, A.shape[0], B.shape[0])
    if n is None and plan.is_permutation():
        order = torch.argsort(plan.i)
        return (1.0 - s) * A[plan.i[order]] + s * B[plan.j[order]]
    n = max(A.shape[0], B.shape[0]) if n is None else n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer (or None); got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    k = torch.multinomial(plan.w, int(n), replacement=True, generator=gen)
    return (1.0 - s) * A[plan.i[k]] + s * B[plan.j[k]]


def ot_trajectories(clouds: Sequence[Any], *, plans: Optional[Sequence[Coupling]] = None, n: Optional[int] = None,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Trajectories through ``K >= 2`` clouds by chaining the consecutive optimal couplings.

    The chain is the Markov gluing of the plans ``P^(k)`` between clouds ``k`` and ``k + 1``: a path starts
    at ``i_0`` and steps to ``i_{k+1} = j`` with probability ``P^(k)_{i_k j} / a^(k)_{i_k}`` (the plan's row
    conditional). Its pairwise marginals ``(i_k, i_{k+1})`` are exactly the plans (when the paths start from
    cloud 0's law). Starts: ``n = None`` starts one path at every point of cloud 0 (``i_0 = 0..N_0-1``),
    otherwise ``n`` starts drawn uniformly with replacement. Every random choice uses one
    ``torch.Generator`` seeded with ``seed``. For equal sizes and uniform weights every plan is a
    permutation, and the paths (``n = None``) are deterministic.

    Args:
        clouds: ``K`` arrays ``(N_k, D)``. plans: the ``K - 1`` couplings (default: :func:`ot_plan` of each
            consecutive pair, uniform weights). n: number of paths. seed: the seed.

    Returns:
        ``index: (P, K)`` int64 (``index[p, k]`` the row of cloud ``k`` visited by path ``p``) and
        ``points: (P, K, D)`` float64 (``points[p, k] = clouds[k][index[p, k]]``), ``P = N_0`` or ``n``.
    """
    xs = [_points(c, f"clouds[{k}]") for k, c in enumerate(clouds)]
    if len(xs) < 2:
        raise ValueError(f"clouds must hold at least 2 point clouds; got {len(xs)}")
    for k, x in enumerate(xs[1:], 1):
        if x.shape[1] != xs[0].shape[1]:
            raise ValueError(f"clouds[{k}] has dimension {x.shape[1]}; clouds[0] has {xs[0].shape[1]}")
    seed = _seed(seed)
    if plans is None:
        plans = [ot_plan(xs[k], xs[k + 1]) for k in range(len(xs) - 1)]
    if len(plans) != len(xs) - 1:
        raise ValueError(f"plans must hold {len(xs) - 1} couplings (one per consecutive pair); got {len(plans)}")
    plans = [_check_plan(p, xs[k].shape[0], xs[k + 1].shape[0]) for k, p in enumerate(plans)]
    gen = torch.Generator().manual_seed(seed)
    if n is None:
        idx = torch.arange(xs[0].shape[0])
    else:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive integer (or None); got {n!r}")
        idx = torch.randint(xs[0].shape[0], (int(n),), generator=gen)
    path = [idx]
    for p in plans:
        # rows of the plan as a CSR-like layout: pairs sorted by i, offsets[i]..offsets[i+1]
        counts = torch.bincount(p.i, minlength=p.n0)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        cur = path[-1]
        nxt = torch.empty_like(cur)
        single = counts[cur] == 1
        nxt[single] = p.j[offsets[cur[single]]]
        for q in torch.nonzero(~single).flatten().tolist():  # split rows (at most M - 1 of them)
            r = int(cur[q])
            lo, hi = int(offsets[r]), int(offsets[r + 1])
            if hi == lo:
                raise ValueError(f"row {r} of a plan carries no mass: the chain cannot continue from it")
            k = int(torch.multinomial(p.w[lo:hi], 1, generator=gen))
            nxt[q] = p.j[lo + k]
        path.append(nxt)
    index = torch.stack(path, dim=1)
    points = torch.stack([xs[k][index[:, k]] for k in range(len(xs))], dim=1)
    return index, points


def piecewise_linear(times: Sequence[float], paths: torch.Tensor, t: float) -> torch.Tensor:
    r"""Paths ``(P, K, D)`` known at ``K`` increasing ``times``, read at ``t`` by linear interpolation.

    For ``t_k <= t <= t_{k+1}``: ``x(t) = (1 - s) x_k + s x_{k+1}`` with ``s = (t - t_k) / (t_{k+1} - t_k)`` —
    along chained OT paths, the McCann interpolation of the two neighbouring clouds. ``t`` outside
    ``[t_0, t_{K-1}]`` raises ``ValueError``. Returns ``(P, D)``.
    """
    ts = [float(v) for v in times]
    if paths.dim() != 3 or paths.shape[1] != len(ts):
        raise ValueError(f"paths must have shape (P, {len(ts)}, D), one point per time; got {tuple(paths.shape)}")
    if len(ts) < 2 or not all(b > a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"times must be at least 2 strictly increasing values; got {ts}")
    t = float(t)
    if not math.isfinite(t) or not (ts[0] <= t <= ts[-1]):
        raise ValueError(f"t must lie in [{ts[0]}, {ts[-1]}]; got {t}")
    k = min(int(np.searchsorted(ts, t, side="right")) - 1, len(ts) - 2)
    s = (t - ts[k]) / (ts[k + 1] - ts[k])
    return (1.0 - s) * paths[:, k] + s * paths[:, k + 1]
