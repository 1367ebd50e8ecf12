r"""The kernel baseline of the events benchmarks: a static KDE of training locations plus Gaussian kernels at the
newest ``k`` strictly earlier events of the same sequence (or catalog).

For an event at time ``t`` with history ``H`` (strictly earlier events; newest first ``x_(1), x_(2), ...``),

``f(x | t, H) = (1 - w) B(x) + w (1 / k') sum_{j <= k'} N(x; x_(j), h_l^2 I)``,  ``k' = min(k, |H|)``,
``B(x) = sum_m c_m N(x; b_m, h_b^2 I) / sum_m c_m``,

with ``b_m`` the distinct training locations and ``c_m`` their multiplicities (so ``B`` is exactly the KDE of the
pooled training events, overlapping windows' repeats included), and ``f = B`` when ``H`` is empty. The bandwidths
``h_b, h_l``, the weight ``w`` and ``k`` are chosen by grid search on the validation events only
(:func:`tune`); the test events are scored once with the chosen values. Everything is evaluated in chunks
(``Q x M`` pairwise blocks of at most ``2^22`` entries), so memory stays bounded whatever the data size. The
mathematics and the grid search are :mod:`probflux.stpp.kernel_history`'s (``probflux-kernelhistory`` starts at them).

Two entry points score it exactly like probflux's models:

* Neural STPP protocol: :meth:`KernelSTPP.log_prob` ``(t, x, context)`` reads the history slots of
  :func:`probflux.stpp.history_context` (layout ``[s_last, log(1 + n), (m_j, dt_j, x_j) * K]``, newest first), so
  ``probflux.stpp.spatial_log_likelihood(model, model_points(seqs, history=K))`` scores it;
* continuous protocol: :meth:`KernelSTPP.spatial_log_prob` ``(t, x, history)`` for
  :func:`probflux.stpp.continuous.spatial_scores`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

# the baseline's mathematics and grid search live in the library (probflux-kernelhistory starts from them)
from probflux.stpp.kernel_history import (  # noqa: F401  (re-exported: bench_events*.py and the tests import them here)
    BLOCK,
    DEFAULT_K,
    DEFAULT_W,
    Tuned,
    bandwidth_grid,
    dedupe,
    log_kde,
    log_local,
    mix,
    slots_from_context,
    tune,
    tune_refined,
)


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
