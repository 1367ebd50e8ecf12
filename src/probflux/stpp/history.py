"""History features of event sequences and a learnable encoder for them.

For event ``i`` of a sequence, its *history* is every earlier event of the same sequence with a strictly
smaller time (``t_j < t_i``; events that share a time share a history). :func:`history_context` turns the
newest ``k`` of them into a fixed-size vector that depends on nothing at or after ``t_i`` — the density of
event ``i`` conditioned on it is causal by construction — and that is constant between events, so the
density's continuity equation holds exactly between events (the density jumps when an event arrives).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..data.events import EventSequences
from ..data.points import TemporalPoints
from ..evaluation import mean_nll

__all__ = ["history_context", "history_at", "HistoryEncoder", "model_points", "spatial_log_likelihood"]


def _check_events(events: int) -> int:
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise ValueError(f"events must be a positive integer (how many past events to keep); got {events!r}")
    return events


def _features(t: Tensor, x: Tensor, t_query: Tensor, t0: float, span: float, k: int) -> Tensor:
    """History rows for query times ``t_query: (Q,)`` given one sorted sequence ``t: (n,)``, ``x: (n, D)``."""
    ar = torch.arange(1, k + 1)
    tm = (t - t0) / span
    n = torch.searchsorted(t.contiguous(), t_query.to(t.dtype).contiguous(), right=False)  # events strictly earlier
    idx = n[:, None] - ar[None, :]
    valid = idx >= 0
    idx = idx.clamp_min(0)
    zero = torch.zeros((), dtype=t.dtype)
    s_last = torch.where(n > 0, tm[(n - 1).clamp_min(0)], zero)
    dt = torch.where(valid, s_last[:, None] - tm[idx], zero)
    xs = torch.where(valid[..., None], x[idx], zero)
    slots = torch.cat([valid.to(t.dtype)[..., None], dt[..., None], xs], -1).reshape(len(t_query), -1)
    # the count is capped at k: an uncapped count extrapolates on test windows far busier than any training window
    # (EarthquakeNPP Japan's 2011 test windows hold up to 2,919 events, training windows at most 505)
    return torch.cat([s_last[:, None], torch.log1p(n.clamp_max(k).to(t.dtype))[:, None], slots], -1)


def history_context(seqs: EventSequences, events: int = 16) -> Tensor:
    r"""History features of every event, pooled in the order of ``seqs.events()``.

    Times are in model units ``s = (t - t0) / (t1 - t0)`` of the sequences' window. For event ``i`` with
    history ``H_i = {j : t_j < t_i}`` (same sequence), ``n_i = |H_i|`` and ``s_last`` the newest history time
    (0 when ``H_i`` is empty), the row is

    ``[s_last, log(1 + min(n_i, k)), (m_1, s_last - s_(1), x_(1)), ..., (m_k, s_last - s_(k), x_(k))]``

    with ``(1), ..., (k)`` the newest ``k = events`` history events (newest first), ``m_j = 1`` when slot ``j``
    holds an event and zeros otherwise. Locations ``x`` are taken as they are in ``seqs`` (standardise first).
    Every feature is bounded by the training data's range whatever the window's activity: the count is capped at
    ``k`` (the history is the newest ``k`` events; how busy the window is shows in their ages).

    Returns: ``(N, 2 + k (D + 2))`` in the dtype of ``seqs``.
    """
    k = _check_events(events)
    if not isinstance(seqs, EventSequences):
        raise TypeError(f"seqs must be an EventSequences; got {type(seqs).__name__}")
    t0, t1 = seqs.window
    return torch.cat([_features(s[:, 0], s[:, 1:], s[:, 0], t0, t1 - t0, k) for s in seqs.sequences], 0)


def history_at(seqs: EventSequences, key: str, t: Tensor, events: int = 16) -> Tensor:
    """History features of sequence ``key`` seen at arbitrary times ``t: (Q,)`` (data units, inside the window):
    the context of the density of a hypothetical event at each ``t`` — e.g. to draw the density just before
    and just after an event. Same layout as :func:`history_context`; returns ``(Q, 2 + k (D + 2))``."""
    k = _check_events(events)
    s = seqs[key]
    t = torch.as_tensor(t, dtype=s.dtype).reshape(-1)
    t0, t1 = seqs.window
    if bool(((t < t0) | (t > t1)).any()):
        raise ValueError(f"t must lie in the window [{t0}, {t1}] of {seqs.name}; got values in [{float(t.min())}, {float(t.max())}]")
    return _features(s[:, 0], s[:, 1:], t, t0, t1 - t0, k)


class HistoryEncoder(nn.Module):
    r"""Encode :func:`history_context` rows ``(N, 2 + k (D + 2))`` into ``(N, out_features)``.

    Every present history event is embedded, ``h_j = MLP([x_j, dt_j, log(dt_j + eps)])`` (``eps = 1e-4`` of the
    window), and the slots are pooled in parallel — an attention-weighted sum ``sum_j a_j h_j`` with
    ``a = softmax_j(w . h_j)`` over present slots, and the masked mean — so the cost is one MLP pass per slot,
    no recurrence. The head maps ``[attention pool, mean pool, s_last, log(1 + min(n, k)), newest slot]`` to the output.
    An empty history gives zero pools; ``s_last`` and ``n`` still tell the head where in the window it is.
    """

    def __init__(self, dim: int, events: int = 16, hidden: int = 64, out_features: int = 64) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        self.dim, self.events = dim, _check_events(events)
        self.in_features = 2 + self.events * (dim + 2)
        self.out_features = out_features
        self.embed = nn.Sequential(nn.Linear(dim + 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.score = nn.Linear(hidden, 1)
        self.head = nn.Sequential(nn.Linear(2 * hidden + 2 + dim + 2, hidden), nn.SiLU(), nn.Linear(hidden, out_features))

    def forward(self, c: Tensor) -> Tensor:
        """``c: (N, in_features)`` → ``(N, out_features)``."""
        if c.dim() != 2 or c.shape[1] != self.in_features:
            raise ValueError(f"history context must have shape (N, {self.in_features}) for dim={self.dim}, events={self.events}; "
                             f"got {tuple(c.shape)}")
        n, k, d = c.shape[0], self.events, self.dim
        glob = c[:, :2]
        slots = c[:, 2:].reshape(n, k, d + 2)
        m, dt, xs = slots[..., :1], slots[..., 1:2], slots[..., 2:]
        h = self.embed(torch.cat([xs, dt, torch.log(dt.clamp_min(0) + 1e-4) * m], -1)) * m  # (N, k, H)
        logits = self.score(h).masked_fill(m == 0, float("-inf"))
        a = torch.softmax(logits, 1).nan_to_num(0.0)  # all-absent rows: zero weights
        attn = (a * h).sum(1)
        mean = h.sum(1) / m.sum(1).clamp_min(1.0)
        return self.head(torch.cat([attn, mean, glob, slots[:, 0]], -1))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, events={self.events}, out_features={self.out_features}"


def model_points(seqs: EventSequences, history: Optional[int] = None) -> TemporalPoints:
    """Pooled events in model coordinates: ``t: (N,)`` in ``[0, 1]`` (window mapped), ``x: (N, D)`` as in
    ``seqs``, ``context: (N, 2 + k (D + 2))`` history features (``history=k``) or None."""
    e = seqs.events()
    t0, t1 = seqs.window
    t = ((e.t - t0) / (t1 - t0)).clamp(0.0, 1.0)
    ctx = None if history is None else history_context(seqs, history)
    return TemporalPoints._unchecked(t, e.x, ctx, seqs.name)


def spatial_log_likelihood(density, points: TemporalPoints, *, chunk: int = 8192) -> float:
    """Mean ``log rho(x_i | t_i, context_i)`` per event (nats), in chunks without a graph (:func:`probflux.evaluation.mean_nll`)."""
    dtype = next(density.parameters()).dtype
    ctx = None if points.context is None else points.context.to(dtype)
    n = points.t.shape[0]
    total = -mean_nll(density, points.t.to(dtype), points.x.to(dtype), ctx, n, chunk)
    if not math.isfinite(total):
        raise FloatingPointError("the log-likelihood of some events is not finite")
    return total
