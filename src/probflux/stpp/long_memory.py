r"""A long-memory self-exciting density: one Gaussian kernel at EVERY earlier event of a catalog, weighted by an
Omori-like power of its age.

.. math:: \rho_t(x \mid \tau) \;=\; \frac{\sum_{j:\, t_j < \tau} w_j(t)\, \mathcal N(x;\ x_j,\ h^2 I)}
          {\sum_{j:\, t_j < \tau} w_j(t)}, \qquad w_j(t) = (\max(t - t_j, 0) + c)^{-p},

``tau`` (the context, one column) is the cut of the history: the events strictly before ``tau`` are visible. Scoring a
catalog event by event sets ``tau = t`` (each query sees exactly its strictly earlier events,
:class:`AgedKernelSpatial`); between two events the visible set is fixed and only the weights move.

Where :class:`~probflux.stpp.SelfExciting` keeps the newest ``k`` events (weeks of a busy catalog), this density keeps
them all: a sequence that went quiet months ago still holds mass where it was, in proportion to ``(age + c)^{-p}``
(``p = 0`` is a KDE of the whole earlier catalog, large ``p`` forgets fast). Three numbers (``h, c, p``), so it is
tuned, not trained: :func:`tune_long_memory` picks them with the weight ``lam`` of the mixture
``(1 - lam) rho_base + lam rho`` by validation log-likelihood.

Flux. The kernels are fixed Gaussians and only the weights vary in time, with exact rates
``d/dt log w_j = -p / (t - t_j + c)``: a :class:`~probflux.densities.anchored_events.ComponentMixture` with the exact
``"mixture"`` flux of docs/mathematics.md §2/§3b. A constant-weight mixture of two densities with exact fluxes has the
weighted sum of their fluxes as an exact flux (the continuity equation is linear), so ``(1 - lam) rho_base + lam rho``
is exact between events too.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..data.events import EventCatalog
from ..densities.anchored_events import ComponentMixture
from .continuous import History, SpatialMixture, mixture_log_prob, spatial_scores

__all__ = ["AgedKernelDensity", "AgedKernelSpatial", "LongMemoryTuning", "tune_long_memory"]

_ABSENT = -1e4  # logit of an invisible event: exp underflows to 0 in float32 and float64


def _positive(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {v!r}")
    return float(v)


def _non_negative(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a non-negative finite number; got {v!r}")
    return float(v)


class AgedKernelDensity(ComponentMixture):
    """Isotropic Gaussian kernels of bandwidth ``h`` at the events ``times: (M,)``, ``locations: (M, D)`` (sorted by
    time), weighted by ``(t - t_j + c)^(-p)``; the context ``(N, 1)`` is the history cut ``tau`` (see the module).

    >>> import torch, probflux as pf
    >>> from probflux.stpp.long_memory import AgedKernelDensity
    >>> rho = AgedKernelDensity(torch.tensor([-2.0, -1.5, -1.0]), torch.randn(3, 2), bandwidth=0.5, offset=0.1,
    ...                         power=1.2).double()
    >>> t, ctx = torch.full((5,), 0.3, dtype=torch.float64), torch.full((5, 1), 0.3, dtype=torch.float64)
    >>> x = rho.sample(t, context=ctx)
    >>> bool(pf.continuity_residual(rho, t, x, ctx).relative.max() < 1e-10)
    True

    Args:
        times, locations: the catalog in model time (sorted; queries lie in ``[0, 1]`` like every
            :class:`probflux.TimeDensity`, events may precede 0; :class:`AgedKernelSpatial` maps catalog days there)
            and in the units of ``x``.
        bandwidth: ``h > 0``; offset: ``c > 0`` (time units); power: ``p >= 0``. All three are parameters
            (``log h``, ``log c``, ``p``) and can be trained by gradient, though :func:`tune_long_memory` grids them.
        flux, chunk_elements: see :class:`ComponentMixture` (rows are chunked so ``rows * M * D <= chunk_elements``).

    Every query needs at least one visible event (else ``ValueError``). The age is ``max(t - t_j, 0)``: with the
    protocol's ``tau = t`` it is always positive; a cut past the query (``t < t_j < tau``) gives that event the
    constant weight ``c^(-p)`` (rate 0), so the density and its rates stay defined for any ``(t, tau)``.
    """

    def __init__(self, times: Tensor, locations: Tensor, *, bandwidth: float, offset: float, power: float,
                 flux: str = "mixture", chunk_elements: int = 2**22) -> None:
        times, locations = torch.as_tensor(times), torch.as_tensor(locations)
        if times.ndim != 1 or locations.ndim != 2 or locations.shape[0] != times.shape[0] or times.shape[0] == 0:
            raise ValueError(f"times must be (M,) and locations (M, D) with M >= 1; got {tuple(times.shape)} and "
                             f"{tuple(locations.shape)}")
        if not (bool(torch.isfinite(times).all()) and bool(torch.isfinite(locations).all())):
            raise ValueError("times and locations must be finite")
        if times.shape[0] > 1 and bool((times[1:] < times[:-1]).any()):
            raise ValueError("times must be sorted (non-decreasing)")
        _positive("bandwidth", bandwidth)
        _positive("offset", offset)
        _non_negative("power", power)
        super().__init__(locations.shape[1], 1, flux=flux, chunk_elements=chunk_elements)
        self.components = times.shape[0]
        self.register_buffer("times", times.clone())
        self.register_buffer("locations", locations.clone())
        dt = times.dtype if times.is_floating_point() else torch.get_default_dtype()  # float64 events keep exact values
        self.log_bandwidth = nn.Parameter(torch.tensor(math.log(bandwidth), dtype=dt))
        self.log_offset = nn.Parameter(torch.tensor(math.log(offset), dtype=dt))
        self.power = nn.Parameter(torch.tensor(float(power), dtype=dt))

    def _assemble(self, t: Tensor, ctx: Optional[Tensor], tangent: bool):
        if ctx is None:
            raise ValueError("AgedKernelDensity needs a context: (N, 1) history cuts tau")
        tau = ctx[:, 0]
        visible = self.times[None, :] < tau[:, None]  # (N, M)
        if not bool(visible[:, 0].all()):
            raise ValueError("every query needs at least one visible event (times[0] < tau)")
        a = t[:, None] - self.times[None, :]
        age = a.clamp_min(0.0) + self.log_offset.exp()  # an event "after" t (t < t_j < tau) has age 0, weight c^-p
        la = torch.log(age)
        logits = torch.where(visible, -self.power * la, torch.full_like(la, _ABSENT))
        loc = self.locations[None].to(t.dtype)
        log_scale = self.log_bandwidth.to(t.dtype).expand(1, self.components, self.dim)
        if not tangent:
            return (logits, loc, log_scale), None
        dlogits = torch.where(visible & (a >= 0), -self.power / age, torch.zeros_like(age))  # autograd's mask of clamp_min
        return (logits, loc, log_scale), (dlogits, torch.zeros_like(loc), torch.zeros_like(log_scale))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, events={self.components}, bandwidth={float(self.log_bandwidth.exp()):.4g}, "
                f"offset={float(self.log_offset.exp()):.4g}, power={float(self.power):.4g}")


class AgedKernelSpatial:
    """:class:`AgedKernelDensity` as a :class:`~probflux.stpp.continuous.SpatialModel` of a catalog (catalog units:
    ``x`` in km gives log densities per km^2): each query ``t_q`` sees the rows ``[0, n_q)`` of ``history`` (its
    strictly earlier events), float64."""

    def __init__(self, bandwidth: float, offset: float, power: float, *, chunk_elements: int = 2**22) -> None:
        self.bandwidth, self.offset = _positive("bandwidth", bandwidth), _positive("offset", offset)
        self.power = _non_negative("power", power)
        self.chunk_elements = chunk_elements

    @torch.no_grad()
    def spatial_log_prob(self, t: Tensor, x: Tensor, history: History) -> Tensor:
        m = int(history.n.max())
        if int(history.n.min()) < 1:
            raise ValueError("every query needs at least one earlier event")
        ht = history.t[:m].double()
        tq = t.double()
        # the cut tau = t: a query sees the events t_j < t, exactly its rows [0, n_q) of the protocol
        if not torch.equal(torch.searchsorted(ht.contiguous(), tq.contiguous(), right=False), history.n):
            raise ValueError("history.n must count the strictly earlier events of each query")
        # model time s = (t - lo) / span in [0, 1]: the weights' ratios, hence the density, are unchanged when the ages
        # and the offset are divided by one span (the factor span^p cancels in the normalisation)
        lo, span = float(ht[0]), max(float(tq.max() - ht[0]), 1e-12)
        rho = AgedKernelDensity((ht - lo) / span, history.x[:m].double(), bandwidth=self.bandwidth,
                                offset=self.offset / span, power=self.power, chunk_elements=self.chunk_elements).double()
        sq = ((tq - lo) / span).clamp(0.0, 1.0)
        return rho.log_prob(sq, x.double(), sq[:, None])


@dataclass(frozen=True)
class LongMemoryTuning:
    """:func:`tune_long_memory`'s choice: kernel ``bandwidth`` (km), ``offset`` c (days), ``power`` p, mixture weight
    ``lam`` of the long-memory part, the validation LL per event with it (``val_ll``) and of the base model alone
    (``base_val_ll``), over ``queries`` validation events and ``grid_points`` settings."""

    bandwidth: float
    offset: float
    power: float
    lam: float
    val_ll: float
    base_val_ll: float
    queries: int
    grid_points: int

    def model(self, base) -> SpatialMixture:
        """``(1 - lam) base + lam AgedKernelSpatial(...)``, a SpatialModel."""
        return SpatialMixture([base, AgedKernelSpatial(self.bandwidth, self.offset, self.power)], [1 - self.lam, self.lam])


GRID = {"bandwidth": (1.0, 2.5, 6.0), "offset": (0.1, 1.0, 10.0), "power": (0.5, 1.0, 1.5)}
"""The settings :func:`tune_long_memory` searches (km, days, exponent)."""
LAMS = tuple(i / 100 for i in range(61))
"""The mixture weights searched for each setting (0 keeps the base model alone)."""


def tune_long_memory(catalog: EventCatalog, base, *, period: str = "val", queries: int = 1500, seed: int = 0,
                     grid: Optional[dict[str, Sequence[float]]] = None, chunk: int = 256) -> LongMemoryTuning:
    """Grid search of ``(h, c, p)`` (:data:`GRID`) and of ``lam`` (:data:`LAMS`) for ``(1 - lam) base + lam
    AgedKernelSpatial(h, c, p)`` by the mean log-likelihood of ``queries`` events of ``period`` (a random subset,
    ``seed``), each conditioned on all its strictly earlier catalog events (the continuous protocol,
    :func:`~probflux.stpp.continuous.spatial_scores`). ``base`` is a SpatialModel; its log densities are computed once."""
    grid = dict(GRID if grid is None else grid)
    sl = catalog.indices(period)
    n = sl.stop - sl.start
    g = torch.Generator().manual_seed(seed)
    pick = torch.sort(torch.randperm(n, generator=g)[:min(queries, n)]).values + sl.start
    lp_base = spatial_scores(catalog, base, rows=pick, chunk=chunk)
    lams = torch.tensor(LAMS, dtype=torch.float64)
    best, points = None, 0
    for h in grid["bandwidth"]:
        for c in grid["offset"]:
            for p in grid["power"]:
                lp = spatial_scores(catalog, AgedKernelSpatial(h, c, p), rows=pick, chunk=chunk)
                ll = mixture_log_prob(torch.stack([lp_base, lp]), torch.stack([1 - lams, lams], -1)).mean(1)
                i = int(ll.argmax())
                points += 1
                print(f"    long memory h {h:g} c {c:g} p {p:g}: best lam {float(lams[i]):.2f}, LL {float(ll[i]):.4f} "
                      f"(base {float(lp_base.mean()):.4f})", flush=True)
                if best is None or float(ll[i]) > best[0]:
                    best = (float(ll[i]), h, c, p, float(lams[i]))
    v, h, c, p, lam = best
    return LongMemoryTuning(h, c, p, lam, v, float(lp_base.mean()), int(pick.shape[0]), points)
