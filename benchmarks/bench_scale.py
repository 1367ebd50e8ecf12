"""Cost versus dimension for every family, and high-dimensional results for the flow family (issue #7).

Parts (``--parts``, all by default):

* ``scaling`` — per-call wall time and peak memory of ``log_prob``, ``velocity``, ``drift`` (g = 0.5, so the
  score is included), ``rsample`` and one training step (NLL + 0.01 x kinetic energy with 256 path samples,
  backward, Adam) for every family at ``D in --dims`` with ``N = --n`` points (float32, one thread), and the
  least-squares growth exponent of time in ``D`` (``time ~ D^p``, log-log fit over the measured ``D``).
  Time: median of ``--repeats`` calls after one warm-up call. Memory: peak of the bytes torch's CPU allocator
  holds during one call, relative to its start, from ``torch.profiler`` (``profile_memory=True``: every
  op's own allocation at its start time, frees as they happen; allocations freed within one aten op are
  not seen). A cell whose time extrapolated from the previous ``D`` (quadratically) exceeds ``--cap``
  seconds is skipped and marked so.
* ``gmm64`` — a 64-D time-dependent Gaussian mixture with a known flux: 4 components with constant
  weights, each ``X_t = R(t) Y + t v_k``, ``Y ~ N(c_k, diag s_k^2)``, ``R(t) = exp(t Omega)`` a rotation by
  32 planar blocks (angular speeds 0.5..2 rad per unit time). Component velocity
  ``u_k = Omega (x - t v_k) + v_k``; the mixture's exact velocity is the posterior average
  ``u = sum_k pi_k(x) u_k`` (constant weights: the flux is the weighted sum of the component fluxes,
  docs/mathematics.md §2). Each model trains by NLL on ``(t, x)`` samples for ``--budget`` CPU seconds;
  reported: test NLL minus the true entropy ``E[-log rho_true]`` on the same test points (a KL estimate, >= 0
  up to noise), and the relative velocity error ``E|u_model - u_true|^2 / E|u_true|^2`` on test points
  (:func:`probflux.metrics.relative_squared_error`). Only the marginals are fitted, and different
  velocity fields can share them, so the velocity error measures which of them the model picked.
* ``lq`` — linear-quadratic control from the control issue (``probflux.control.lq_problem``: ``g = 1``, ``q = 1``,
  ``r = 3``, ``X_0 ~ N(0, I)``) at ``D in --lq-dims``: the flow family (``rho_0`` learned through the objective's
  initial-law term) and issue #6's pinned mixture, each trained ``--budget`` wall-clock seconds
  (``probflux.control.solve`` has no ``clock``; no peer runs in this part, both methods use the same clock); Monte Carlo cost of the
  learned SDE drift (Euler–Maruyama) and its relative gap to the Riccati optimum, the simulation-free cost from
  the model's own marginals, and ``KL(q_0 || rho_0)`` (how far the learned initial law is from the true one).
* ``cite50_floor`` — the finite-sample floor of that metric: W1/W2 between two disjoint random halves of the
  held-out day's cells (``held-out-split``).
* ``cite50`` — CITE-seq, 50 principal components, leave-one-day-out (days 3 and 4 of 2, 3, 4, 7),
  ``probflux-flow`` (endpoint NLL + 0.05 x kinetic energy) against TorchCFM's OT-CFM at the same training
  CPU time (``--budget``), split, standardised and scored as in ``bench_populations.py`` (its ``holdout``:
  :func:`probflux.data.snapshots.split_snapshots`, :func:`probflux.evaluation.heldout_snapshot_scores`,
  :func:`probflux.evaluation.sample_distances`): W1/W2 (exact EMD, PC units) between held-out cells and cells of
  the previous day pushed through the learned ODE (transport), and, for probflux, exact samples of ``rho_t``
  (density).

Budgets (gmm64, cite50): ``--budget`` seconds of this process's CPU time (``time.process_time``) for every
method, ours through ``probflux.train.fit(clock=...)`` with the schedule over the budget (``time_schedule``),
TorchCFM's through ``CFMPeer.fit(clock=...)``; only optimiser steps count — no method runs validation passes
(no ``val`` points; the peer has none). Scoring afterwards counts for no one.

Writes ``benchmarks/results/scale.json`` (records: benchmark, dataset, method, metric, value, std, seeds,
wall_seconds, command) and prints markdown tables.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probflux as pf
from probflux.data import TemporalPoints
from probflux.densities.flow import FlowDensity
from probflux.evaluation import heldout_snapshot_scores, mean_nll, sample_distances, sampling_floor
from probflux.io import write_json
from probflux.metrics import relative_squared_error
from probflux.objectives import Batch, EndpointLikelihood, KineticEnergy, NegativeLogLikelihood
from probflux.train import TrainConfig, fit
from tables import commands  # benchmarks/tables.py (this folder is on sys.path above)

CLOCK = time.process_time  # every budgeted method's clock (gmm64, cite50), as in bench_populations.py: this process's CPU time

FAMILIES: dict[str, Callable[[int], pf.TimeDensity]] = {
    "probflux-factorized": lambda d: pf.FactorizedMixture(d, components=8, hidden=128, layers=3),
    "probflux-ar-sigmoid": lambda d: pf.AutoregressiveMixture(d, components=8, hidden=128, layers=3, flux="sigmoid"),
    "probflux-ar-kr": lambda d: pf.AutoregressiveMixture(d, components=8, hidden=128, layers=3, flux="kr"),
    "probflux-flow": lambda d: FlowDensity(d, transforms=4, hidden=128, layers=2, coupling="spline"),
}
OPS = ("log_prob", "velocity", "drift", "rsample", "train_step")


# ----------------------------------------------------------------------------------------- scaling
def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes held by torch's CPU allocator during ``fn()``, relative to the start (torch.profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak


def make_ops(dyn: pf.Dynamics, n: int, seed: int = 0) -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g)
    x = torch.randn(n, dyn.dim, generator=g)
    opt = torch.optim.Adam(dyn.parameters(), lr=1e-4)
    objective = NegativeLogLikelihood() + KineticEnergy(0.01, samples=256)

    def no_grad(f: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad():
                return f()
        return call

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = objective(dyn, Batch(t, x, generator=torch.Generator().manual_seed(1)))["loss"]
        loss.backward()
        opt.step()

    return {
        "log_prob": no_grad(lambda: dyn.log_prob(t, x)),
        "velocity": no_grad(lambda: dyn.velocity(t, x)),
        "drift": no_grad(lambda: dyn.drift(t, x)),
        "rsample": lambda: dyn.density.rsample(t),
        "train_step": train_step,
    }


def growth_exponent(dims: list[int], times: list[float]) -> float:
    """Least-squares slope of ``log time`` against ``log D``."""
    return float(np.polyfit(np.log(dims), np.log(times), 1)[0])


def run_scaling(args, put) -> None:
    for fam, make in FAMILIES.items():
        if fam not in args.families:
            continue
        last: dict[str, tuple[int, float]] = {}
        for d in args.dims:
            torch.manual_seed(0)
            dyn = pf.Dynamics(make(d), diffusion=0.5)
            ops = make_ops(dyn, args.n)
            for op in OPS:
                if op in last and last[op][1] * (d / last[op][0]) ** 2 > args.cap:
                    put("scaling", f"D={d}", fam, f"{op}_skipped", 1.0)
                    print(f"  {fam} D={d} {op}: skipped (extrapolated > {args.cap:g} s)", file=sys.stderr, flush=True)
                    continue
                tic = time.perf_counter()
                ops[op]()  # warm-up
                first = time.perf_counter() - tic
                times = [first] if first > args.cap / 4 else []
                for _ in range(args.repeats if not times else 0):
                    tic = time.perf_counter()
                    ops[op]()
                    times.append(time.perf_counter() - tic)
                sec = statistics.median(times)
                mem = peak_bytes(ops[op]) if first < args.cap / 4 else float("nan")
                last[op] = (d, sec)
                put("scaling", f"D={d}", fam, f"{op}_seconds", sec)
                put("scaling", f"D={d}", fam, f"{op}_peak_MiB", mem / 2**20)
                print(f"  {fam} D={d} {op}: {1e3 * sec:.1f} ms, {mem / 2**20:.1f} MiB", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- gmm64
class RotatingMixture:
    """The 64-D moving/rotating Gaussian mixture of the module docstring, with exact log-density and velocity."""

    def __init__(self, dim: int = 64, components: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.dim, self.K = dim, components
        self.omega = torch.linspace(0.5, 2.0, dim // 2, dtype=torch.float64)
        self.c = 3.0 * torch.randn(components, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) * 2
        self.s = 0.3 + 0.5 * torch.rand(components, dim, generator=g, dtype=torch.float64)
        self.v = 2.0 * torch.randn(components, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) * 2
        self.log_w = torch.log_softmax(torch.randn(components, generator=g, dtype=torch.float64), 0)

    def rotate(self, t: Tensor, y: Tensor, sign: float = 1.0) -> Tensor:
        """``R(t) y`` (or ``R(t)^T y`` with ``sign=-1``) for ``t: (N,)``, ``y: (N, D)``."""
        a = sign * t[:, None] * self.omega
        y0, y1 = y[:, 0::2], y[:, 1::2]
        out = torch.empty_like(y)
        out[:, 0::2] = torch.cos(a) * y0 - torch.sin(a) * y1
        out[:, 1::2] = torch.sin(a) * y0 + torch.cos(a) * y1
        return out

    def omega_times(self, y: Tensor) -> Tensor:
        """``Omega y``: the generator of the rotation."""
        out = torch.empty_like(y)
        out[:, 0::2] = -self.omega * y[:, 1::2]
        out[:, 1::2] = self.omega * y[:, 0::2]
        return out

    def sample(self, t: Tensor, g: torch.Generator) -> Tensor:
        k = torch.multinomial(self.log_w.exp(), len(t), replacement=True, generator=g)
        y = self.c[k] + self.s[k] * torch.randn(len(t), self.dim, generator=g, dtype=torch.float64)
        return self.rotate(t, y) + t[:, None] * self.v[k]

    def _component_log_pdf(self, t: Tensor, x: Tensor) -> Tensor:
        out = []
        for k in range(self.K):
            y = self.rotate(t, x - t[:, None] * self.v[k], sign=-1.0)
            z = (y - self.c[k]) / self.s[k]
            out.append(-0.5 * (z * z).sum(-1) - self.s[k].log().sum() - 0.5 * self.dim * math.log(2 * math.pi))
        return torch.stack(out, -1) + self.log_w

    def log_prob(self, t: Tensor, x: Tensor, context: None = None) -> Tensor:
        return torch.logsumexp(self._component_log_pdf(t, x), -1)

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        post = torch.softmax(self._component_log_pdf(t, x), -1)
        u = torch.stack([self.omega_times(x - t[:, None] * self.v[k]) + self.v[k] for k in range(self.K)], 1)
        return (post.unsqueeze(-1) * u).sum(1)


GMM_MODELS: dict[str, Callable[[int], pf.TimeDensity]] = {
    "probflux-flow": lambda d: FlowDensity(d, transforms=4, hidden=128, layers=2, coupling="spline", max_frequency=8.0),
    "probflux-factorized": lambda d: pf.FactorizedMixture(d, components=8, hidden=128, layers=3, max_frequency=8.0),
}


def run_gmm(args, put) -> None:
    truth = RotatingMixture()
    g = torch.Generator().manual_seed(100)
    t_test = torch.rand(4000, generator=g, dtype=torch.float64)
    x_test = truth.sample(t_test, g)
    entropy = mean_nll(truth, t_test, x_test)  # E[-log rho_true] on the test points
    u_true = truth.velocity(t_test, x_test)
    put("gmm64", "rotating-mixture-64d", "truth", "entropy", entropy)
    for seed in range(args.seeds):
        gs = torch.Generator().manual_seed(seed)
        t_train = torch.rand(50_000, generator=gs, dtype=torch.float64)
        data = TemporalPoints(t_train.float(), truth.sample(t_train, gs).float())
        for name, make in GMM_MODELS.items():
            if name not in args.families:
                continue
            torch.manual_seed(seed)
            dyn = pf.Dynamics(make(truth.dim))
            cfg = TrainConfig(steps=100_000, batch_size=512, lr=2e-3, warmup=100, ema=0.999, device="cpu",
                              eval_every=10**9, log_every=10**9, checkpoint_every=10**9)
            res = fit(dyn, NegativeLogLikelihood(), data, config=cfg, seed=seed, progress=False,
                      max_seconds=args.budget, time_schedule=True, clock=CLOCK)
            model = res.model
            nll = mean_nll(model, t_test.float(), x_test.float())
            with torch.no_grad():
                u = model.velocity(t_test.float(), x_test.float())
            rel = relative_squared_error(u, u_true)
            put("gmm64", "rotating-mixture-64d", name, "nll_minus_entropy", nll - entropy)
            put("gmm64", "rotating-mixture-64d", name, "velocity_rel_mse", rel)
            put("gmm64", "rotating-mixture-64d", name, "steps", float(res.step))
            print(f"  gmm64 seed {seed} {name}: NLL - H = {nll - entropy:.3f}, velocity rel. MSE {rel:.3f} ({res.step} steps)",
                  file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- cite50
CITE50 = {"name": "cite", "pcs": 50}


def run_cite(args, put) -> None:
    from bench_populations import EVAL_SEED, holdout, peer_transport_scores
    from probflux.data import snapshots as snap

    full = snap.cite(pcs=50)
    for k in (1, 2):
        h = holdout("cite50", full, CITE50, k, args.eval_cells)
        ds = h.dataset
        for p, v in sample_distances(h.pair.start, h.pair.target).items():
            put("cite50", ds, "no-motion", f"{p}_transport", v)
        for seed in range(args.seeds):
            if "probflux-flow" in args.families:
                torch.manual_seed(seed)
                dyn = pf.Dynamics(FlowDensity(50, transforms=4, hidden=128, layers=2, coupling="spline", max_frequency=8.0))
                objective = EndpointLikelihood(h.times) + KineticEnergy(0.05, samples=128)
                cfg = TrainConfig(steps=100_000, batch_size=512, lr=2e-3, warmup=100, ema=0.999, device="cpu",
                                  eval_every=10**9, log_every=10**9, checkpoint_every=10**9)
                res = fit(dyn, objective, h.train_model, config=cfg, seed=seed, progress=False, max_seconds=args.budget,
                          time_schedule=True, clock=CLOCK)
                sc = heldout_snapshot_scores(res.model, h.split.normalizer, h.train_data, h.split.test, cells=args.eval_cells,
                                             steps=args.steps, seed=EVAL_SEED, method="euler")
                for p in (1, 2):
                    put("cite50", ds, "probflux-flow", f"w{p}_transport", sc[f"heldout_w{p}_transport"])
                    put("cite50", ds, "probflux-flow", f"w{p}_density", sc[f"heldout_w{p}_density"])
                put("cite50", ds, "probflux-flow", "train_seconds", res.wall_seconds)
                put("cite50", ds, "probflux-flow", "steps", float(res.step))
            if "otcfm" in args.families:
                from peers.torchcfm_peer import CFMPeer

                peer = CFMPeer("otcfm", 50, seed=seed)
                info = peer.fit(h.times, h.cells, wall_seconds=args.budget, clock=CLOCK)
                for p, v in peer_transport_scores(peer, h, sde=False, steps=args.steps).items():
                    put("cite50", ds, "torchcfm-otcfm", f"{p}_transport", v)
                put("cite50", ds, "torchcfm-otcfm", "train_seconds", float(info["wall_seconds"]))
                put("cite50", ds, "torchcfm-otcfm", "steps", float(info["steps"]))
            print(f"  {ds} seed {seed} done", file=sys.stderr, flush=True)


def run_cite_floor(args, put) -> None:
    """Sampling floor of the CITE metric (:func:`probflux.evaluation.sampling_floor`): W_p between two disjoint
    random halves (at most ``--eval-cells`` each) of the held-out day's cells — what a perfect model would score
    with finite samples in 50-D."""
    from probflux.data import snapshots as snap

    full = snap.cite(pcs=50)
    for k in (1, 2):
        _, t_held, held = full.leave_out(k)
        for seed in range(args.seeds):
            for p, v in sampling_floor(held, size=args.eval_cells, seed=seed).items():
                put("cite50", f"cite50-holdout-t{t_held:g}", "held-out-split", f"{p}_transport", v)


# ----------------------------------------------------------------------------------------- lq
def lq_dataset(d: int, budget: float) -> str:
    """Record name of an LQ run: ``lq-d{D}`` for a 20 s budget (the first recorded runs), else with the budget appended."""
    return f"lq-d{d}" if budget == 20 else f"lq-d{d}-budget{budget:g}s"


def run_lq(args, put) -> None:
    """LQ control (``probflux.control.lq_problem``: g = 1, q = 1, r = 3, X_0 ~ N(0, I)) against the Riccati optimum."""
    import probflux.control as pc

    for d in args.lq_dims:
        problem = pc.lq_problem(d)
        opt = pc.lq_optimal_cost(d)
        ds = lq_dataset(d, args.budget)
        put("lq", ds, "riccati", "optimal_cost", opt)
        for seed in range(args.seeds):
            for method in [m for m in ("probflux-flow", "probflux-pinned") if m in args.families]:
                torch.manual_seed(seed)
                if method == "probflux-flow":  # rho_0 learned from the initial-law NLL term
                    dens = FlowDensity(d, transforms=2, hidden=64, layers=2, coupling="affine", max_frequency=8.0)
                else:  # issue #6's default: a pinned Gaussian mixture (exact rho_0), as in bench_control.py
                    dens = pc.default_density(problem, components=1, hidden=32, layers=2)
                fit_ = pc.solve(problem, dens, steps=100_000, lr=3e-3, batch_size=64, warmup=20, ema=None, seed=seed,
                                max_seconds=args.budget, objective=pc.ControlObjective(problem, samples=256))
                mc = pc.monte_carlo_cost(problem, pc.model_drift(problem, fit_.model), n=args.lq_particles, steps=args.lq_em_steps,
                                         seed=1000 + seed, w2=False)
                sf = pc.simulation_free_cost(problem, fit_.model, n=4096, seed=seed)
                x0 = problem.initial.sample(4000, torch.Generator().manual_seed(2000 + seed)).to(torch.float32)
                # KL(q_0 || rho_0) = E_q0[-log rho_0] - H(q_0), q_0 = N(0, I)
                kl0 = mean_nll(fit_.model, torch.zeros(len(x0)), x0) - 0.5 * d * (1 + math.log(2 * math.pi))
                put("lq", ds, method, "mc_cost", mc["cost"])
                put("lq", ds, method, "simulation_free_cost", sf["cost"])
                put("lq", ds, method, "initial_kl", kl0)
                put("lq", ds, method, "gap", mc["cost"] / opt - 1)
                put("lq", ds, method, "steps", float(fit_.step))
                print(f"  lq D={d} seed {seed} {method}: cost {mc['cost']:.3f} +- {mc['cost_se']:.3f} vs optimum {opt:.3f} "
                      f"(gap {mc['cost'] / opt - 1:+.3%}, {fit_.step} steps)", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- tables
def _index(records: list[dict], part: str) -> tuple[list[dict], dict[tuple[str, str, str], dict]]:
    recs = [r for r in records if r["benchmark"] == part]
    return recs, {(r["dataset"], r["method"], r["metric"]): r for r in recs}


def _cell(r: Optional[dict], fmt: str = "{:.3f}", bold: bool = False) -> str:
    if r is None or r["value"] is None:
        return "–"
    spread = "" if not r.get("std") or r["seeds"] < 2 else " ± " + fmt.replace("+", "").format(r["std"])
    text = fmt.format(r["value"]) + spread
    return f"**{text}**" if bold else text


def time_exponents(records: list[dict]) -> list[dict]:
    """``<op>_time_exponent`` records (``growth_exponent`` over every measured D) of the ``scaling`` records."""
    out = []
    recs = [r for r in records if r["benchmark"] == "scaling" and r["metric"].endswith("_seconds")]
    for fam in dict.fromkeys(r["method"] for r in recs):
        for op in OPS:
            pts = sorted((int(r["dataset"][2:]), r["value"]) for r in recs if r["method"] == fam and r["metric"] == f"{op}_seconds")
            if len(pts) >= 2:
                out.append({**{k: recs[0][k] for k in ("benchmark", "wall_seconds", "command")}, "dataset": f"D={pts[0][0]}..{pts[-1][0]}",
                            "method": fam, "metric": f"{op}_time_exponent", "value": growth_exponent(*map(list, zip(*pts))),
                            "std": None, "seeds": 1})
    return out


def render_scaling(records: list[dict]) -> str:
    """Cost versus dimension (section ``scale_scaling``): ms / peak MiB per call, the fitted and the D=32-to-128 exponents."""
    recs, at = _index(records, "scaling")
    dims = sorted({int(r["dataset"][2:]) for r in recs if r["dataset"][2:].isdigit()})
    fams = list(dict.fromkeys(r["method"] for r in recs))
    full = f"D={dims[0]}..{dims[-1]}"
    head = ["family", "op", *[f"D={d}" for d in dims], f"p, fit {full}", "p, D=32 to 128"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fam in fams:
        for op in OPS:
            cells = []
            for d in dims:
                sec, mib = at.get((f"D={d}", fam, f"{op}_seconds")), at.get((f"D={d}", fam, f"{op}_peak_MiB"))
                if sec is None:
                    cells.append("skipped" if (f"D={d}", fam, f"{op}_skipped") in at else "–")
                else:
                    memory = "n/m" if mib is None or mib["value"] is None else f"{mib['value']:.1f}"
                    cells.append(f"{1e3 * sec['value']:.1f} / {memory}")
            fit = [r for r in recs if r["method"] == fam and r["metric"] == f"{op}_time_exponent"]
            expo = "–" if not fit else f"{fit[0]['value']:.2f}" + ("" if fit[0]["dataset"] == full else f" ({fit[0]['dataset']})")
            a, b = at.get(("D=32", fam, f"{op}_seconds")), at.get(("D=128", fam, f"{op}_seconds"))
            late = "–" if a is None or b is None else f"{math.log(b['value'] / a['value']) / math.log(4):.2f}"
            lines.append(f"| {fam} | {op} | " + " | ".join(cells) + f" | {expo} | {late} |")
    return f"Command:\n\n{commands(recs)}\n\n" + "\n".join(lines)


def render_gmm64(records: list[dict]) -> str:
    """The 64-D rotating mixture (section ``scale_gmm64``)."""
    recs, at = _index(records, "gmm64")
    ds = "rotating-mixture-64d"
    methods = [m for m in dict.fromkeys(r["method"] for r in recs) if m != "truth"]
    best = {k: min(methods, key=lambda m: at[(ds, m, k)]["value"]) for k in ("nll_minus_entropy", "velocity_rel_mse")}
    lines = [f"Command:\n\n{commands(recs)}\n", f"True entropy `E[-log rho_true]` = {at[(ds, 'truth', 'entropy')]['value']:.3f} nats "
             f"(`truth` record).\n",
             "| method | test NLL − true entropy (nats) | velocity rel. MSE `E|u − u_true|^2 / E|u_true|^2` | steps |",
             "|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_cell(at.get((ds, m, k)), bold=best[k] == m) for k in best)
                     + f" | {_cell(at.get((ds, m, 'steps')), '{:.0f}')} |")
    return "\n".join(lines)


def render_lq(records: list[dict]) -> str:
    """LQ control with the learned-rho_0 flow and the pinned mixture (section ``scale_lq``)."""
    import re

    recs, at = _index(records, "lq")
    lines = ["| D | budget | Riccati optimum | method | MC cost | relative gap | simulation-free cost | KL(q_0, rho_0) | steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    datasets = sorted(dict.fromkeys(r["dataset"] for r in recs), key=lambda d: (int(re.match(r"lq-d(\d+)", d).group(1)), d))
    for ds in datasets:
        d = re.match(r"lq-d(\d+)", ds).group(1)
        methods = [m for m in dict.fromkeys(r["method"] for r in recs if r["dataset"] == ds) if m != "riccati"]
        best = min(methods, key=lambda m: abs(at[(ds, m, "gap")]["value"]))
        budget = re.search(r"budget([\d.]+)s", ds)
        budget = budget.group(1) if budget else re.search(r"--budget (\S+)", at[(ds, methods[0], "gap")]["command"]).group(1)
        for m in methods:
            cells = [_cell(at.get((ds, m, "mc_cost"))), _cell(at.get((ds, m, "gap")), "{:+.3f}", bold=m == best),
                     _cell(at.get((ds, m, "simulation_free_cost"))), _cell(at.get((ds, m, "initial_kl"))),
                     _cell(at.get((ds, m, "steps")), "{:.0f}")]
            optimum = at[(ds, "riccati", "optimal_cost")]["value"]
            lines.append(f"| {d} | {budget} s | {optimum:.3f} | {m} | " + " | ".join(cells) + " |")
    return f"Command:\n\n{commands(recs)}\n\n" + "\n".join(lines)


def render_cite50(records: list[dict]) -> str:
    """CITE 50 PCs, flow vs OT-CFM (section ``scale_cite50``)."""
    recs, at = _index(records, "cite50")
    metrics = ("w1_transport", "w2_transport", "w1_density", "w2_density")
    lines = ["| held out | method | W1 transport | W2 transport | W1 density | W2 density | steps |", "|---|---|---|---|---|---|---|"]
    for ds in sorted(dict.fromkeys(r["dataset"] for r in recs)):
        learned = [m for m in ("probflux-flow", "torchcfm-otcfm") if (ds, m, "w1_transport") in at]
        best = {k: min(learned, key=lambda m: at[(ds, m, k)]["value"]) for k in metrics[:2]} if learned else {}
        for m in ("probflux-flow", "torchcfm-otcfm", "no-motion", "held-out-split"):
            if any(key[:2] == (ds, m) for key in at):
                label = "held-out-split (floor)" if m == "held-out-split" else m
                cells = [_cell(at.get((ds, m, k)), bold=best.get(k) == m) for k in metrics]
                lines.append(f"| day {ds.removeprefix('cite50-holdout-t')} | {label} | " + " | ".join(cells)
                             + f" | {_cell(at.get((ds, m, 'steps')), '{:.0f}')} |")
    return f"Command:\n\n{commands(recs)}\n\n" + "\n".join(lines)


TABLES = {"scaling": render_scaling, "gmm64": render_gmm64, "lq": render_lq, "cite50": render_cite50}
"""The RESULTS.md section ``scale_<part>`` of each part, rendered from the records (``benchmarks/tables.py``)."""


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ["scaling", "gmm64", "cite50", "cite50_floor", "lq"]
    p.add_argument("--parts", nargs="+", default=parts, choices=parts)
    methods = [*FAMILIES, "otcfm", "probflux-pinned"]
    p.add_argument("--families", nargs="+", default=methods, choices=methods)
    p.add_argument("--lq-dims", nargs="+", type=int, default=[32, 128])
    p.add_argument("--lq-particles", type=int, default=2000)
    p.add_argument("--lq-em-steps", type=int, default=200)
    p.add_argument("--dims", nargs="+", type=int, default=[2, 8, 32, 128])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cap", type=float, default=30.0, help="skip a scaling cell whose extrapolated time exceeds this (s)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=30.0, help="training CPU seconds per run (gmm64, cite50; wall-clock seconds for lq)")
    p.add_argument("--eval-cells", type=int, default=2000)
    p.add_argument("--steps", type=int, default=100, help="ODE steps for transport (cite50)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "scale.json"))
    p.add_argument("--tables", action="store_true", help="only regenerate the scale_* sections of benchmarks/RESULTS.md")
    args = p.parse_args()
    if args.tables:
        from tables import render

        for part in TABLES:
            render(f"scale_{part}")
        return
    torch.set_num_threads(args.threads)
    command = shlex.join(sys.orig_argv)
    start = time.perf_counter()
    results: dict[tuple[str, str, str, str], list[float]] = {}

    def put(bench: str, ds: str, method: str, metric: str, v: float) -> None:
        results.setdefault((bench, ds, method, metric), []).append(float(v))

    if "scaling" in args.parts:
        run_scaling(args, put)
    if "gmm64" in args.parts:
        run_gmm(args, put)
    if "cite50" in args.parts:
        run_cite(args, put)
    if "cite50_floor" in args.parts:
        run_cite_floor(args, put)
    if "lq" in args.parts:
        run_lq(args, put)
    wall = time.perf_counter() - start

    records = []
    for (bench, ds, m, metric), v in results.items():
        records.append({"benchmark": bench, "dataset": ds, "method": m, "metric": metric, "value": statistics.mean(v),
                        "std": statistics.stdev(v) if len(v) > 1 else None, "seeds": len(v), "wall_seconds": wall,
                        "command": command})
    records += time_exponents(records)
    print(f"# {command}\n# torch {torch.__version__}, {args.threads} thread(s); wall {wall:.0f} s\n")
    for part in TABLES:
        if any(r["benchmark"] == part for r in records):
            print(TABLES[part](records) + "\n")
    out = Path(args.out)
    if out.exists():  # keep the records of (part, data set, method) triples not rerun
        import json

        rerun = {(r["benchmark"], r["dataset"], r["method"]) for r in records}
        records = [r for r in json.loads(out.read_text()) if (r["benchmark"], r["dataset"], r["method"]) not in rerun] + records
    write_json(out, records)
    print(f"# wrote {len(records)} records to {out}")


if __name__ == "__main__":
    main()
