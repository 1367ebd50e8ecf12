r"""Self-exciting spatial densities: Gaussian kernels at the past events, weighted by their age, over a background.

.. math:: \rho(x \mid t, H) \;=\; \frac{e^{\ell_0(t)}\, b_t(x) + \sum_{j \in H} e^{\ell(a_j)}\,
          \mathcal N\big(x;\ x_j,\ s(a_j)^2 I\big)}{e^{\ell_0(t)} + \sum_{j \in H} e^{\ell(a_j)}},
          \qquad a_j = t - t_j,

ETAS-like in spirit: the conditional law of the next event's location is a background plus one kernel per past
event whose weight (its share of the intensity) and bandwidth are learned functions of the event's age (an MLP of
``log(eps + a)``, ``a`` and the slot's rank); ``ell_0`` is learned from the time since the newest event and the
history's size. ``H`` is the newest ``k`` strictly earlier events, read from the rows of
:func:`probflux.stpp.history_context` (``[s_last, log(1 + min(n, k)), (m_j, s_last - s_j, x_j) * k]``), so the
density is causal by construction (a later event changes no earlier row).

Flux. The background ``b`` is a Gaussian mixture with exact component rates (a
:class:`~probflux.densities.anchored_events.KernelMixture` or a Gaussian :class:`~probflux.FactorizedMixture`
without context), so the whole density is one Gaussian mixture whose weights and scales vary in time with the
context held fixed: :class:`~probflux.densities.anchored_events.ComponentMixture` gives it the exact
``"mixture"`` (or ``"kr"``) flux of docs/mathematics.md §2/§3b. Between events the continuity equation holds to
round-off; when an event arrives the context changes and the density jumps. Kernels are isotropic, never products
of 1-D components along the axes, so no mass streaks along rows or columns.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from ..densities.anchored_events import ComponentMixture, KernelMixture, knn_bandwidth, split_anchors
from ..densities.factorized import FactorizedMixture, Params
from ..nn import MLP
from .continuous import History
from .history import _features

__all__ = ["SelfExciting", "CatalogSpatial", "kernel_background", "catalog_context", "follower_counts"]

_ABSENT = -1e4  # logit of an empty history slot: exp underflows to 0 in float32 and float64


def kernel_background(x: Tensor, kernels: int = 2000, *, knn: int = 8, min_scale: float = 1e-3, rank: int = 0,
                      seed: int = 0) -> tuple[KernelMixture, Tensor]:
    """A data-anchored background from training locations ``x: (N, D)``: ``kernels`` of them drawn as centres
    (:func:`~probflux.densities.anchored_events.split_anchors` with ``seed``), initial bandwidths the distance to the
    ``knn``-th nearest other centre (floored at ``2 min_scale``). Returns ``(KernelMixture, rest)``: ``rest: (N - kernels,)``
    are the indices of the points to fit on (no kernel sits on a fitted point). Float32, like the data it is fitted on."""
    centre_idx, rest = split_anchors(x, kernels, seed=seed)
    centres = x[centre_idx].float()
    bw = knn_bandwidth(centres, k=knn).clamp_min(2 * min_scale)
    return KernelMixture(centres, bandwidth=bw, min_scale=min_scale, rank=rank), rest


class SelfExciting(ComponentMixture):
    """Background + age-weighted isotropic Gaussian kernels at the newest ``events`` past events.

    >>> import torch, probflux as pf
    >>> from probflux.densities import KernelMixture
    >>> from probflux.stpp import SelfExciting
    >>> rho = SelfExciting(KernelMixture(torch.randn(50, 2), bandwidth=0.5, rank=0), events=4).double()
    >>> ctx = torch.tensor([[0.3, 1.1] + [1.0, 0.0, 0.5, 0.5] + [1.0, 0.1, -1.0, 0.0] + [0.0] * 8], dtype=torch.float64)
    >>> x = rho.sample(0.35, 6, ctx[0])
    >>> bool(pf.continuity_residual(rho, torch.full((6,), 0.35, dtype=torch.float64), x, ctx.expand(6, -1)).relative.max() < 1e-10)
    True

    Args:
        background: a Gaussian mixture with ``context_dim == 0``: a :class:`ComponentMixture` (e.g. ``KernelMixture``)
            or ``FactorizedMixture(..., family="gaussian")``.
        events: ``k``, the history slots (the context is ``history_context(seqs, events=k)``: ``2 + k (D + 2)``).
        hidden, layers: the MLPs of the kernel weights/bandwidths and of the background weight.
        init_scale: initial kernel bandwidth; min_scale: its floor. age_eps: ``eps`` of the age feature
            ``log(eps + a)`` in model time units (``1e-4`` of a 30-day window is about 4 minutes).
        flux: ``"mixture"`` or ``"kr"``. chunk_elements: see :class:`ComponentMixture`.
        scales: ``S``, Gaussian kernels per past event, all centred at the event, each with its own age-dependent
            logit and bandwidth (initial bandwidths ``init_scale * 4^(s - (S - 1) / 2)``): a scale mixture, which can
            take the heavy, power-law-like tail of ETAS's spatial kernel ``(r^2 + d)^(-q)`` while the density stays
            one Gaussian mixture (same exact flux). ``1`` (default) is the single-kernel model.
        marks: ``M``, extra per-slot features that the kernel MLP reads next to the age features: each slot of the
            context is then ``(present, age, mark_1 .. mark_M, x)``, width ``2 + k (D + 2 + M)``. A mark must be a
            function of the history only, constant between events (e.g. :func:`catalog_context`'s
            ``count_radius`` mark, ``log(1 +`` the number of later history events within a radius of ``x_j)``, a causal
            magnitude proxy; or a real magnitude): the weights and bandwidths then still vary in time only through the
            ages, and the flux stays exact. ``0`` (default) is the layout of :func:`~probflux.stpp.history_context`.
    """

    def __init__(self, background: FactorizedMixture, events: int = 16, *, hidden: int = 32, layers: int = 2,
                 init_scale: float = 0.05, min_scale: float = 1e-3, age_eps: float = 1e-4, flux: str = "mixture",
                 chunk_elements: int = 2**21, scales: int = 1, marks: int = 0) -> None:
        if not isinstance(background, FactorizedMixture) or background.family_name != "gaussian":
            raise TypeError("background must be a Gaussian mixture (KernelMixture, ComponentMixture or "
                            f"FactorizedMixture(family='gaussian')); got {type(background).__name__}")
        if background.context_dim != 0:
            raise ValueError(f"background must have context_dim=0; got {background.context_dim}")
        if isinstance(events, bool) or not isinstance(events, int) or events < 1:
            raise ValueError(f"events must be a positive integer; got {events!r}")
        if isinstance(scales, bool) or not isinstance(scales, int) or scales < 1:
            raise ValueError(f"scales must be a positive integer; got {scales!r}")
        if isinstance(marks, bool) or not isinstance(marks, int) or marks < 0:
            raise ValueError(f"marks must be a non-negative integer; got {marks!r}")
        for name, v in (("init_scale", init_scale), ("min_scale", min_scale), ("age_eps", age_eps)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name} must be a positive number; got {v!r}")
        if not init_scale > min_scale:
            raise ValueError(f"init_scale={init_scale} must exceed min_scale={min_scale}")
        D = background.dim
        super().__init__(D, 2 + events * (D + 2 + marks), flux=flux, chunk_elements=chunk_elements)
        self.background, self.events = background, events
        self.isotropic = bool(getattr(background, "isotropic", False))  # a FactorizedMixture's scales differ per axis
        self.scales, self.marks = scales, marks
        self.components = background.components + events * scales
        self.min_scale, self.age_eps = float(min_scale), float(age_eps)
        # (S logits, S raw log-scales) of an event's kernels from its age features (and its marks)
        self.kernel_net = MLP(3 + marks, 2 * scales, hidden, layers)
        self.background_net = MLP(2, 1, hidden, layers)  # background logit from (time since newest event, size)
        with torch.no_grad():
            for j in range(scales):
                s0 = init_scale * 4.0 ** (j - (scales - 1) / 2)
                if not s0 > min_scale:
                    raise ValueError(f"init_scale={init_scale} with scales={scales} puts an initial bandwidth {s0:.3g} "
                                     f"at or below min_scale={min_scale}")
                self.kernel_net.linears[-1].bias[scales + j] = math.log(math.expm1(math.log(s0 / min_scale)))

    @classmethod
    def from_events(cls, x: Tensor, *, kernels: int = 2000, events: int = 16, knn: int = 8, rank: int = 0,
                    min_scale: float = 1e-3, init_scale: float = 0.05, hidden: int = 32, age_eps: float = 1e-4,
                    seed: int = 0, scales: int = 1, marks: int = 0) -> tuple[SelfExciting, Tensor]:
        """The model of ``examples/events_selfexciting.py`` and ``benchmarks/bench_events.py``
        (``probflux-selfexciting``): a :func:`kernel_background` of ``kernels`` training locations ``x: (N, D)``
        under ``events`` self-exciting slots. Returns ``(model, rest)``; fit on the rows ``rest`` of the training
        points (the others are the background's centres). Seed torch before calling for reproducible weights."""
        bg, rest = kernel_background(x, kernels, knn=knn, min_scale=min_scale, rank=rank, seed=seed)
        return cls(bg, events=events, hidden=hidden, init_scale=init_scale, min_scale=min_scale, age_eps=age_eps,
                   scales=scales, marks=marks), rest

    # ------------------------------------------------------------------ parameters
    def _ages(self, t: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        N, k, D, M = ctx.shape[0], self.events, self.dim, self.marks
        slots = ctx[:, 2:].reshape(N, k, D + 2 + M)
        present = slots[..., 0] > 0.5
        gap = t - ctx[:, 0]  # time since the newest history event
        age = gap[:, None] + slots[..., 1]
        return slots[..., 2 + M:], present, gap, age, ctx[:, 1], slots[..., 2:2 + M]

    def _log_features(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """``log(eps + a_+)`` and its time derivative (``da/dt = 1``)."""
        pos = a.clamp_min(0.0)  # the tangent's mask a >= 0 is autograd's for clamp_min (also at a = 0 exactly)
        return torch.log(self.age_eps + pos), (a >= 0).to(a.dtype) / (self.age_eps + pos)

    def _assemble(self, t: Tensor, ctx: Optional[Tensor], tangent: bool) -> tuple[Params, Optional[Params]]:
        if ctx is None:
            raise ValueError(f"SelfExciting needs a context (history_context rows of width {self.context_dim})")
        N, k, D = t.shape[0], self.events, self.dim
        xs, present, gap, age, size, marks = self._ages(t, ctx)
        # kernels: features (log(eps + a), a, rank, marks) -> (logit, raw log-scale)
        la, dla = self._log_features(age)
        rank = (torch.arange(k, dtype=t.dtype, device=t.device) / k).expand(N, k)
        M = self.marks
        feat = torch.cat([torch.stack([la, age.clamp_min(0.0), rank], -1), marks], -1).reshape(N * k, 3 + M)
        S = self.scales
        lg, dlg = self._log_features(gap)
        g_feat = torch.stack([lg, size], -1)
        if tangent:  # the MLPs' forward-mode tangents only when the rates are needed (a likelihood needs none)
            dfeat = torch.cat([torch.stack([dla, (age >= 0).to(t.dtype), torch.zeros_like(rank)], -1), torch.zeros_like(marks)],
                              -1).reshape(N * k, 3 + M)  # marks are constant between events
            out, dout, _ = self.kernel_net.jvp(feat, dfeat)
            dout = dout.reshape(N, k, 2 * S)
            g_out, g_dout, _ = self.background_net.jvp(g_feat, torch.stack([dlg, torch.zeros_like(size)], -1))
        else:
            out, g_out = self.kernel_net(feat), self.background_net(g_feat)
        out = out.reshape(N, k, 2 * S)
        absent = torch.full_like(out[..., :S], _ABSENT)
        here = present.unsqueeze(-1)
        # (N, k, S) -> (N, k S): slot j's S kernels are components j S .. j S + S - 1, all centred at x_j
        k_logit = torch.where(here, out[..., :S], absent).reshape(N, k * S)
        raw = out[..., S:]
        k_log_scale = (math.log(self.min_scale) + F.softplus(raw)).reshape(N, k * S)
        if S > 1:
            xs = xs.repeat_interleave(S, dim=1)
        # background: its own mixture, weighted by ell_0(time since the newest event, history size)
        if tangent:
            (b_logits, b_loc, b_ls), (db_logits, db_loc, db_ls) = (self._full(p, N) for p in self.background._params_and_rates(t, None))
        else:
            b_logits, b_loc, b_ls = self._full(self.background._params(t, None), N)
        b_logw = torch.log_softmax(b_logits, -1)
        logits = torch.cat([g_out + b_logw, k_logit], -1)
        loc = torch.cat([b_loc, xs], 1)
        log_scale = torch.cat([b_ls, k_log_scale.unsqueeze(-1).expand(N, k * S, D)], 1)
        if not tangent:
            return (logits, loc, log_scale), None
        dk_logit = torch.where(here, dout[..., :S], torch.zeros_like(absent)).reshape(N, k * S)
        dk_log_scale = (torch.sigmoid(raw) * dout[..., S:]).reshape(N, k * S)
        db_logw = db_logits - (b_logw.exp() * db_logits).sum(-1, keepdim=True)
        dlogits = torch.cat([g_dout + db_logw, dk_logit], -1)
        dloc = torch.cat([db_loc, torch.zeros_like(xs)], 1)
        dlog_scale = torch.cat([db_ls, dk_log_scale.unsqueeze(-1).expand(N, k * S, D)], 1)
        return (logits, loc, log_scale), (dlogits, dloc, dlog_scale)

    @torch.no_grad()
    def kernel_parameters(self, age: Tensor, marks: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """The learned kernel logit and bandwidth at ages ``age: (A,)`` (model time units, rank 0) and marks
        ``marks: (A, M)`` (default zeros): ``(A,)`` each, ``(A, S)`` with ``scales = S > 1``."""
        age = torch.as_tensor(age, dtype=self.dtype).reshape(-1)
        if marks is None:
            marks = torch.zeros(age.shape[0], self.marks, dtype=self.dtype)
        marks = torch.as_tensor(marks, dtype=self.dtype).reshape(age.shape[0], -1)
        if marks.shape[1] != self.marks:
            raise ValueError(f"marks must have shape (A, {self.marks}); got {tuple(marks.shape)}")
        la, _ = self._log_features(age)
        out = self.kernel_net(torch.cat([torch.stack([la, age.clamp_min(0.0), torch.zeros_like(age)], -1), marks], -1))
        S = self.scales
        logit, bw = out[:, :S], (math.log(self.min_scale) + F.softplus(out[:, S:])).exp()
        return (logit[:, 0], bw[:, 0]) if S == 1 else (logit, bw)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, events={self.events}, scales={self.scales}, marks={self.marks}, "
                f"background components={self.background.components}, flux={self.flux_name!r}")


def follower_counts(t: Tensor, x: Tensor, rows: Tensor, events: int, radius: float,
                    scale: Optional[Tensor] = None) -> Tensor:
    """``(R, k)`` int64: ``C[r, d]`` = how many of the events ``J + 1 .. J + d`` (``J = rows[r]``) of one sorted catalog
    ``t: (N,)``, ``x: (N, D)`` lie within ``radius`` of ``x_J`` (distance of ``(x_i - x_J) * scale``) and strictly after
    ``t_J``; ``d = 0 .. k - 1`` (``C[:, 0] = 0``; events past the catalog's end count nothing)."""
    if not (isinstance(radius, (int, float)) and radius > 0):
        raise ValueError(f"radius must be a positive number; got {radius!r}")
    N = t.shape[0]
    sc = torch.ones(x.shape[1], dtype=x.dtype) if scale is None else torch.as_tensor(scale, dtype=x.dtype).reshape(-1)
    near = torch.zeros(rows.shape[0], events, dtype=torch.int64)
    xr, tr = x[rows], t[rows]
    for d in range(1, events):
        i = rows + d
        inside = i < N
        ic = i.clamp_max(N - 1)
        close = (((x[ic] - xr) * sc).square().sum(-1) <= radius**2) & (t[ic] > tr)
        near[:, d] = (inside & close).to(torch.int64)
    return near.cumsum(1)


def _with_counts(t: Tensor, x: Tensor, t_query: Tensor, rows: Tensor, events: int, radius: float,
                 scale: Optional[Tensor]) -> Tensor:
    """Insert each slot's mark ``log(1 + n_j)`` after its ``(present, age)``, ``n_j`` = the history events (strictly
    before the query) after ``t_j`` within ``radius`` of ``x_j``: slots ``(present, age, mark, x)``."""
    k, D, Q = events, x.shape[1], t_query.shape[0]
    n = torch.searchsorted(t.contiguous(), t_query.to(t.dtype).contiguous(), right=False)
    J = n[:, None] - torch.arange(1, k + 1)[None, :]  # slot j (0-based) holds event n - 1 - j; newer history: j events
    valid = J >= 0
    if not bool(valid.any()):  # no query has a history: every slot is empty, every mark 0
        mark = torch.zeros(Q, k, dtype=rows.dtype)
    else:
        base = int(J[valid].min())
        C = follower_counts(t, x, torch.arange(base, int(n.max())), k, radius, scale)
        cnt = torch.where(valid, C[(J - base).clamp_min(0), torch.arange(k).expand(Q, k)], torch.zeros((), dtype=torch.int64))
        mark = torch.log1p(cnt.to(rows.dtype))
    slots = rows[:, 2:].reshape(Q, k, D + 2)
    return torch.cat([rows[:, :2], torch.cat([slots[..., :2], mark[..., None], slots[..., 2:]], -1).reshape(Q, -1)], -1)


def catalog_context(t: Tensor, x: Tensor, t_query: Tensor, window: tuple[float, float], events: int, *,
                    chunk: int = 4096, count_radius: Optional[float] = None, count_scale: Optional[Tensor] = None) -> Tensor:
    """``(Q, 2 + k (D + 2))`` :func:`~probflux.stpp.history_context` rows at ``t_query: (Q,)`` from the strictly
    earlier events of one sorted catalog ``t: (N,)``, ``x: (N, D)``, model time ``(t - t0) / (t1 - t0)`` over
    ``window = (t0, t1)``; built ``chunk`` queries at a time so a long history (``k`` in the hundreds) stays bounded.

    With ``count_radius``, each slot carries one mark (:class:`SelfExciting` ``marks=1``; rows ``(Q, 2 + k (D + 3))``,
    slots ``(present, age, mark, x)``): ``log(1 + n_j)``, ``n_j`` the events strictly before the query, strictly
    after ``t_j`` and within ``count_radius`` of ``x_j`` (distances of ``(x_i - x_j) * count_scale``, e.g. the
    standardisation's std to count in km) — a causal proxy of event ``j``'s magnitude (a large shock is soon followed by
    many events close to it), a function of the history only, constant between events."""
    t0, t1 = float(window[0]), float(window[1])
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    marks = 0 if count_radius is None else 1
    if t_query.shape[0] == 0:
        return torch.zeros(0, 2 + events * (x.shape[1] + 2 + marks), dtype=t.dtype)
    out = []
    for i in range(0, t_query.shape[0], chunk):
        q = t_query[i:i + chunk]
        rows = _features(t, x, q, t0, t1 - t0, events)
        out.append(rows if count_radius is None else _with_counts(t, x, q, rows, events, count_radius, count_scale))
    return torch.cat(out)


class CatalogSpatial:
    """A history-conditioned density (e.g. :class:`SelfExciting`) as a :class:`probflux.stpp.continuous.SpatialModel`
    of one catalog: model time ``s = (t - t0) / (t1 - t0)`` over the whole catalog span and, for each query, the
    :func:`~probflux.stpp.history_context` row of its strictly earlier events (``history.n``, nothing later).

    ``model``: a :class:`probflux.TimeDensity` whose context is that row (``2 + k (D + 2)``; ``2 + k (D + 3)`` with
    ``count_radius``, see :func:`catalog_context`); ``window = (t0, t1)``; ``events = k``. Wrap it in
    :class:`~probflux.stpp.continuous.StandardizedSpatial` when the model works in
    standardised coordinates.
    """

    def __init__(self, model, window: tuple[float, float], events: int, *, count_radius: Optional[float] = None,
                 count_scale: Optional[Tensor] = None) -> None:
        self.model, self.events = model, events
        self.count_radius, self.count_scale = count_radius, count_scale
        self.t0, self.t1 = float(window[0]), float(window[1])
        if not self.t1 > self.t0:
            raise ValueError(f"window must be (t0, t1) with t0 < t1; got {window}")
        marks = 0 if count_radius is None else 1
        if model.context_dim != 2 + events * (model.dim + 2 + marks):
            raise ValueError(f"model.context_dim={model.context_dim} is not a history row of events={events}"
                             + (" with one count mark per slot" if marks else ""))

    def context(self, t: Tensor, history: History) -> Tensor:
        """``(Q, 2 + k (D + 2))`` history rows of the queries ``t: (Q,)`` (catalog units)."""
        ctx = catalog_context(history.t, history.x, t, (self.t0, self.t1), self.events, count_radius=self.count_radius,
                              count_scale=self.count_scale)
        n = torch.searchsorted(history.t.contiguous(), t.to(history.t.dtype).contiguous(), right=False)
        if not torch.equal(n, history.n):
            raise ValueError("history.n must count the strictly earlier events of each query")
        return ctx

    @torch.no_grad()
    def spatial_log_prob(self, t: Tensor, x: Tensor, history: History) -> Tensor:
        dtype = self.model.dtype
        s = ((t - self.t0) / (self.t1 - self.t0)).clamp(0.0, 1.0)
        return self.model.log_prob(s.to(dtype), x.to(dtype), self.context(t, history).to(dtype)).double()
