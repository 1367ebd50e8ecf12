"""Training objectives: small callables ``objective(dynamics, batch) -> {"loss": ..., term: ...}``.

An objective returns a dict of named scalar terms plus ``"loss"``, the weighted total that is
differentiated. Terms are estimated from data and from exact samples of ``rho_t`` — no ODE/SDE solver.
Objectives compose with ``+`` (:class:`Sum`); a new objective is any callable with this signature.

Randomness (times and samples of the Monte-Carlo terms) comes from ``batch.generator`` when given, and
every rank of a distributed run draws the *global* set of random numbers and keeps its shard
``batch.shard = (rank, world)``: a run on ``world`` processes then computes exactly the same gradient as
one process on the same global batch, and a resumed run repeats the same draws.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

import torch
from torch import Tensor

from ._random import draw_seed, seeded
from .dynamics import Dynamics

Terms = dict[str, Tensor]


@dataclass
class Batch:
    """A mini-batch of observed points and the sources of randomness for Monte-Carlo terms.

    Attributes:
        t: ``(N,)`` times in the model's interval ``[0, 1]``.
        x: ``(N, D)`` positions.
        context: ``(N, C)`` or None.
        generator: seeds the Monte-Carlo draws (None: torch's global generator).
        shard: ``(rank, world)``: this process keeps every ``world``-th draw starting at ``rank``.
        step: the optimiser step (staged objectives switch terms on by step).
    """

    t: Tensor
    x: Tensor
    context: Optional[Tensor] = None
    generator: Optional[torch.Generator] = None
    shard: tuple[int, int] = (0, 1)
    step: int = 0

    def __len__(self) -> int:
        return self.t.shape[0]


class Objective(Protocol):
    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms: ...


class _Weighted:
    name: str = "term"

    def __init__(self, weight: float = 1.0) -> None:
        weight = float(weight)
        if not weight >= 0.0 or weight == float("inf"):
            raise ValueError(f"{type(self).__name__}: weight must be a finite number >= 0; got {weight!r}")
        self.weight = weight

    def __add__(self, other: Objective) -> Sum:
        return Sum(self, other)

    def _terms(self, value: Tensor) -> Terms:
        return {self.name: value.detach(), "loss": self.weight * value}


class Sum:
    """``loss = sum_k loss_k``; the terms of all parts are reported (names must differ)."""

    def __init__(self, *parts: Objective) -> None:
        flat: list[Objective] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Sum) else [p])
        if not flat:
            raise ValueError("Sum needs at least one objective")
        self.parts = flat

    def __add__(self, other: Objective) -> Sum:
        return Sum(self, other)

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        out: Terms = {}
        total: Optional[Tensor] = None
        for part in self.parts:
            terms = part(dynamics, batch)
            loss = terms.pop("loss")
            clash = set(terms) & set(out)
            if clash:
                raise ValueError(f"Sum: two objectives report the term(s) {sorted(clash)}")
            out.update(terms)
            total = loss if total is None else total + loss
        out["loss"] = total
        return out

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.parts)


class NegativeLogLikelihood(_Weighted):
    r"""``-(1/N) sum_n log rho_{t_n}(x_n | c_n)``: maximum likelihood of spatio-temporal data.

    Every observed point is weighted equally (the data's time density is not modelled here).
    """

    name = "nll"

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        return self._terms(-dynamics.log_prob(batch.t, batch.x, batch.context).mean())

    def __repr__(self) -> str:
        return f"NegativeLogLikelihood(weight={self.weight})"


def sample_path_points(dynamics: Dynamics, batch: Batch, samples: int, t0: float = 0.0, t1: float = 1.0,
                       ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""This rank's share of ``samples`` draws ``t ~ U(t0, t1)``, ``x ~ rho_t`` with reparameterised gradients.

    Returns ``t: (S/world,)``, ``x: (S/world, D)`` (differentiable in the parameters, docs/mathematics.md §6) and the
    context of each draw (a uniformly chosen batch row's) or None. All ranks draw the same global set
    from ``batch.generator`` and keep their shard, so the estimate does not depend on the world size.
    """
    rank, world = batch.shard
    if samples % world:
        raise ValueError(f"samples={samples} is not divisible by the world size {world}")
    like, g = batch.x, batch.generator
    t_all = t0 + (t1 - t0) * torch.rand(samples, generator=g, dtype=torch.float64)
    ctx_all = None
    if batch.context is not None:
        ctx_all = batch.context[torch.randint(len(batch), (samples,), generator=g)]
    seed = draw_seed(g)
    t_all = t_all.to(dtype=like.dtype, device=like.device)
    with seeded(seed, like.device):
        x_hat = dynamics.density.sample(t_all, context=ctx_all)
    keep = slice(rank, None, world)
    t, ctx = t_all[keep], None if ctx_all is None else ctx_all[keep]
    return t, dynamics.density.reparameterize(t, x_hat[keep], ctx), ctx


class _PathTerm(_Weighted):
    """A Monte-Carlo term over ``t ~ U(t0, t1)``, ``x ~ rho_t``."""

    def __init__(self, weight: float = 1.0, samples: int = 256, t0: float = 0.0, t1: float = 1.0) -> None:
        super().__init__(weight)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"{type(self).__name__}: samples must be a positive int; got {samples!r}")
        if not 0.0 <= t0 < t1 <= 1.0:
            raise ValueError(f"{type(self).__name__}: need 0 <= t0 < t1 <= 1; got t0={t0}, t1={t1}")
        self.samples, self.t0, self.t1 = samples, float(t0), float(t1)

    def _draw(self, dynamics: Dynamics, batch: Batch) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        try:
            return sample_path_points(dynamics, batch, self.samples, self.t0, self.t1)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight}, samples={self.samples})"


class KineticEnergy(_PathTerm):
    r"""``E_{t ~ U(t0, t1), x ~ rho_t} |u_t(x)|^2`` from exact reparameterised samples of ``rho_t``.

    ``u`` is the probability-flow velocity (including a divergence-free term). Minimising it with a
    likelihood or endpoint term selects the least-action dynamics (dynamical optimal transport,
    docs/mathematics.md §7): over ``[0, 1]`` its minimum subject to the marginals is ``W_2^2(rho_0, rho_1)``.
    ``samples`` is the global number of ``(t, x)`` draws per call; with a context, each draw takes the
    context of a uniformly chosen batch row. Without a divergence-free term it is the density's own
    ``kinetic_energy`` (every :class:`~probflux.TimeDensity` has one; a flow's needs no inverse pass),
    evaluated on the global draws of :func:`sample_path_points` and then sharded.
    """

    name = "kinetic"

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        if dynamics.divergence_free is None:
            return self._terms(self._density_energy(dynamics, batch).mean())
        t, x, ctx = self._draw(dynamics, batch)
        return self._terms(dynamics.velocity(t, x, ctx).pow(2).sum(-1).mean())

    def _density_energy(self, dynamics: Dynamics, batch: Batch) -> Tensor:
        """``density.kinetic_energy`` at this rank's share of the global draws (as :func:`sample_path_points`)."""
        rank, world = batch.shard
        if self.samples % world:
            raise ValueError(f"KineticEnergy: samples={self.samples} is not divisible by the world size {world}")
        like, g = batch.x, batch.generator
        t = self.t0 + (self.t1 - self.t0) * torch.rand(self.samples, generator=g, dtype=torch.float64)
        ctx = None if batch.context is None else batch.context[torch.randint(len(batch), (self.samples,), generator=g)]
        seed = draw_seed(g)
        with seeded(seed, like.device):
            energy = dynamics.density.kinetic_energy(t.to(dtype=like.dtype, device=like.device), context=ctx)
        return energy[rank::world]


class DriftEnergy(_PathTerm):
    r"""``E_{t, x ~ rho_t} |b_t(x)|^2`` with the SDE drift ``b = u + (g_t^2/2) grad log rho``.

    With diffusion ``g > 0`` and fixed marginals at the snapshot times, ``(1/2g^2) int E|b|^2 dt`` is the
    KL divergence to the reference Brownian motion up to a constant, so minimising it with an endpoint
    likelihood gives the Schrödinger bridge (entropic OT) between the snapshots. With ``g = 0`` it equals
    :class:`KineticEnergy`.
    """

    name = "drift_energy"

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        t, x, ctx = self._draw(dynamics, batch)
        return self._terms(dynamics.drift(t, x, ctx).pow(2).sum(-1).mean())


class JacobianSymmetry(_PathTerm):
    r"""``E_{t, x ~ rho_t} E_{v ~ N(0, I)} |(J - J^T) v|^2 = E ||J - J^T||_F^2``, ``J = d u_t / d x``.

    Optimal-transport velocities are gradient fields (symmetric Jacobian); this Hutchinson estimate (one
    JVP and one VJP per draw, ``probes`` directions) pushes the learned field towards one.
    """

    name = "jacobian_asymmetry"

    def __init__(self, weight: float = 1.0, samples: int = 128, t0: float = 0.0, t1: float = 1.0, probes: int = 1) -> None:
        super().__init__(weight, samples, t0, t1)
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
            raise ValueError(f"JacobianSymmetry: probes must be a positive int; got {probes!r}")
        self.probes = probes

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        t, x, ctx = self._draw(dynamics, batch)
        # the penalty shapes the field, not where the samples sit; probes are batched as repeated points
        x = x.detach().repeat(self.probes, 1).requires_grad_(True)
        t = t.repeat(self.probes)
        ctx = None if ctx is None else ctx.repeat(self.probes, 1)
        u = dynamics.velocity(t, x, ctx)
        v = torch.randn(x.shape, generator=batch.generator, dtype=torch.float64).to(x)
        # J^T v by a VJP; J v by the double-VJP trick (the VJP is linear in its cotangent w)
        w = torch.zeros_like(u, requires_grad=True)
        (jt_w,) = torch.autograd.grad(u, x, w, create_graph=True)
        (jv,) = torch.autograd.grad(jt_w, w, v, create_graph=True)
        (jtv,) = torch.autograd.grad(u, x, v, create_graph=True)
        total = (jv - jtv).pow(2).sum(-1).mean() * self.probes
        return self._terms(total / self.probes)


def ramp_factor(step: int, start: int, ramp: int) -> float:
    """The weight of a term staged in at optimiser step ``start``: 0 before it, then ``(step - start + 1) / ramp``
    up to 1 (1 at once when ``ramp = 0``) — the one schedule of :class:`Staged` and the control objective."""
    if step < start:
        return 0.0
    return 1.0 if ramp == 0 else min(1.0, (step - start + 1) / ramp)


class Staged:
    r"""``objective`` switched on at step ``start`` and ramped linearly to full weight over ``ramp`` steps
    (e.g. likelihood first, then the kinetic term; :func:`ramp_factor`). Before ``start`` its terms are reported as 0."""

    def __init__(self, objective: Objective, start: int = 0, ramp: int = 0) -> None:
        if start < 0 or ramp < 0:
            raise ValueError(f"Staged: start and ramp must be >= 0; got {start}, {ramp}")
        self.objective, self.start, self.ramp = objective, int(start), int(ramp)

    def factor(self, step: int) -> float:
        return ramp_factor(step, self.start, self.ramp)

    def __add__(self, other: Objective) -> Sum:
        return Sum(self, other)

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        f = self.factor(batch.step)
        if f == 0.0:
            return {name: batch.x.new_zeros(()) for name in self._names()} | {"loss": batch.x.new_zeros(())}
        terms = self.objective(dynamics, batch)
        terms["loss"] = f * terms["loss"]
        return terms

    def _names(self) -> list[str]:
        parts = self.objective.parts if isinstance(self.objective, Sum) else [self.objective]
        return [getattr(p, "name", type(p).__name__) for p in parts]

    def __repr__(self) -> str:
        return f"Staged({self.objective!r}, start={self.start}, ramp={self.ramp})"


class EndpointLikelihood(_Weighted):
    r"""``-sum_k mean_{x in snapshot k} log rho_{t_k}(x)``: likelihood of population snapshots.

    ``batch.t`` must take values among ``times``; each snapshot counts equally however many points
    it has in the batch (a snapshot absent from the batch contributes nothing).
    """

    name = "endpoint_nll"

    def __init__(self, times: Sequence[float], weight: float = 1.0) -> None:
        super().__init__(weight)
        times = [float(s) for s in times]
        if not times or any(not 0.0 <= s <= 1.0 for s in times):
            raise ValueError(f"EndpointLikelihood: times must be a non-empty list in [0, 1]; got {times}")
        self.times = torch.tensor(sorted(set(times)), dtype=torch.float64)

    def __call__(self, dynamics: Dynamics, batch: Batch) -> Terms:
        times = self.times.to(batch.t)
        match = (batch.t[:, None] - times[None, :]).abs() <= 1e-6 * (1 + times.abs())
        if not bool(match.any(1).all()):
            row = int((~match.any(1)).nonzero()[0])
            raise ValueError(
                f"EndpointLikelihood: batch time t={float(batch.t[row]):.6g} at row {row} is not one of the snapshot times "
                f"{self.times.tolist()}"
            )
        log_p = dynamics.log_prob(batch.t, batch.x, batch.context)
        counts = match.sum(0).to(log_p)
        per_snapshot = (match.to(log_p) * log_p[:, None]).sum(0) / counts.clamp_min(1)
        return self._terms(-per_snapshot.sum())

    def __repr__(self) -> str:
        return f"EndpointLikelihood(times={self.times.tolist()}, weight={self.weight})"


__all__ = ["Batch", "Objective", "Sum", "NegativeLogLikelihood", "KineticEnergy", "DriftEnergy", "JacobianSymmetry",
           "EndpointLikelihood", "Staged", "ramp_factor", "Terms", "sample_path_points"]
