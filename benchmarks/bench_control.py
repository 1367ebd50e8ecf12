"""Stochastic optimal control and mean-field games: probflux (simulation-free) vs a simulation-based policy.

For every problem of ``configs/control_bench.yaml`` and every seed, in one process with one torch thread:

* **probflux-bridge** (DeepGSB problems): a :class:`~probflux.control.BridgeMixture` whose ``rho_0`` and ``rho_1`` are the
  initial and target laws exactly, trained by :func:`probflux.control.solve` on the simulation-free objective (exact
  samples of ``rho_t``, no SDE); **probflux** (``--methods probflux``): the older mixture with only ``rho_0`` pinned and the
  target as a penalty; **probflux** / **probflux-flow** on LQ: a pinned one-component mixture / a
  :class:`~probflux.control.FlowBridge` with ``rho_0`` pinned;
* **baseline**: a neural policy ``b_theta(s, x)`` trained by back-propagating through Euler–Maruyama rollouts
  of the same cost, with a debiased Sinkhorn terminal loss when there is a target
  (:func:`probflux.control.baseline.train_baseline`).

Both are scored by the *same* honest check, :func:`probflux.control.monte_carlo_cost`: simulate the learned
SDE with fine Euler–Maruyama steps from the true initial law; Monte Carlo cost of every term with the
problem's own obstacle cost (DeepGSB: ``1500 * indicator``), exact ``W2`` to the target (POT network simplex), fraction
of particles that enter an obstacle. Mean-field entropy terms are evaluated with the same Gaussian KDE on
the simulated particles for both methods; for probflux the cost with its exact ``log rho`` and the
simulation-free estimate of the same path cost are reported beside it.

LQ (D in {2, 8, 32}): equal training budget; gap of the Monte Carlo cost to the Riccati optimum.
DeepGSB problems: the baseline trains ``budget`` CPU seconds, probflux ``ours_fraction * budget`` (goal: equal or
lower cost at <= 1/5 of the baseline's time). With ``time_schedule: true`` both methods anneal their learning rate over
their own budget. ``W2`` to the target is exact (POT network simplex) against the sampling floor (two independent
target draws of the evaluation size).

Writes ``benchmarks/results/control.json`` (records: benchmark, dataset, method, metric, value, std, seeds,
wall_seconds, command), prints markdown tables and (``--figures``) draws ``docs/images/control_*.png`` and one GIF.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import yaml

import probflux.control as pc
from probflux.control import problems as cp
from probflux.control.baseline import train_baseline
from probflux.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "control.json"


def mean_std(v: list[float]) -> tuple[float, float]:
    v = [x for x in v if x is not None and math.isfinite(x)]
    if not v:
        return float("nan"), float("nan")
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def policy_drift(policy: torch.nn.Module):
    def drift(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return policy(s.to(torch.float32), x.to(torch.float32)).to(x.dtype)
    return drift


# ----------------------------------------------------------------------------------------------- LQ
def run_lq(cfg: dict, ev: dict, seeds: list[int], budget: float, methods: set[str]) -> list[dict]:
    rows = []
    annealed = bool(cfg.get("time_schedule", False))  # probflux: the LR schedule runs over the CPU budget
    b_annealed = bool(cfg.get("baseline_time_schedule", annealed))  # the baseline's own choice (configs/control_bench.yaml)
    for D in sorted(set(cfg["dims"]) | set(cfg.get("flow_dims", []))):
        problem = pc.lq_problem(D, g=cfg["g"], q=cfg["q"], r=cfg["r"])
        opt = pc.lq_optimal_cost(D, g=cfg["g"], q=cfg["q"], r=cfg["r"])
        optimal = lambda s, x: -pc.riccati(s, cfg["q"], cfg["r"])[:, None] * x
        for seed in seeds:
            # the optimal feedback on the same initial points and Brownian increments (common random numbers):
            # the gap C(policy) - C(optimal) per particle has a far smaller variance than C itself
            ref = pc.monte_carlo_cost(problem, optimal, n=cfg["particles"], steps=ev["em_steps"], seed=1000 + seed,
                                      w2=False)["per_particle"]
            candidates = []
            if D in cfg["dims"] and "probflux" in methods:
                candidates.append("probflux")
            if D in cfg.get("flow_dims", []) and "probflux-flow" in methods:
                candidates.append("probflux-flow")
            for method in candidates:
                t0, c0 = time.perf_counter(), time.process_time()
                torch.manual_seed(seed)
                if method == "probflux":
                    o = cfg["probflux"]
                    dens = pc.default_density(problem, components=o["components"], hidden=o["hidden"], layers=o["layers"])
                else:  # the flow family with rho_0 pinned: F_t = S_t o S_0^{-1} over a pinned Gaussian path (control/bridge.py)
                    o = cfg["flow"]
                    dens = pc.FlowBridge(problem.initial, None, o["transforms"], hidden=o["hidden"], layers=o["layers"],
                                         identity_init=o.get("identity_init", False))
                fit = pc.solve(problem, dens, steps=o["steps"], lr=o["lr"], batch_size=o["batch"], dtype="float64", warmup=20,
                               ema=None, seed=seed, max_seconds=budget, clock=time.process_time, time_schedule=annealed,
                               objective=pc.ControlObjective(problem, samples=o["samples"]))
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                mc = pc.monte_carlo_cost(problem, pc.model_drift(problem, fit.model), n=cfg["particles"], steps=ev["em_steps"],
                                         seed=1000 + seed, w2=False)
                sf = pc.simulation_free_cost(problem, fit.model, n=ev["sf_samples"], seed=seed)
                diff = mc["per_particle"] - ref  # paired (common-noise) gap per particle; mean and s.e. are Monte Carlo statistics
                rows.append(dict(dataset=f"lq_d{D}", method=method, seed=seed, wall=wall, cpu=cpu, steps=fit.step, mc=mc["cost"],
                                 mc_se=mc["cost_se"], sf=sf["cost"], opt=opt, gap=mc["cost"] / opt - 1,
                                 gap_crn=float(diff.mean()) / opt, gap_crn_se=float(diff.std()) / math.sqrt(len(diff)) / opt))
                print(rows[-1], flush=True)
            if "baseline-bptt-policy" not in methods or D not in cfg["dims"]:
                continue
            b = cfg["baseline"]
            t0, c0 = time.perf_counter(), time.process_time()
            policy, info = train_baseline(problem, steps=b["steps"], particles=b["particles"], sde_steps=b["sde_steps"], lr=b["lr"],
                                          hidden=b["hidden"], layers=b["layers"], seed=seed, max_seconds=budget, clock=time.process_time,
                                          time_schedule=b_annealed)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            mc = pc.monte_carlo_cost(problem, policy_drift(policy), n=cfg["particles"], steps=ev["em_steps"], seed=1000 + seed, w2=False)
            diff = mc["per_particle"] - ref
            rows.append(dict(dataset=f"lq_d{D}", method="baseline-bptt-policy", seed=seed, wall=wall, cpu=cpu, steps=info["steps"],
                             mc=mc["cost"],
                             mc_se=mc["cost_se"], opt=opt, gap=mc["cost"] / opt - 1, gap_crn=float(diff.mean()) / opt,
                             gap_crn_se=float(diff.std()) / math.sqrt(len(diff)) / opt))
            print(rows[-1], flush=True)
    return rows


# ----------------------------------------------------------------------------------------------- DeepGSB
def em_check_rows(problem, drift, name: str, method: str, seed: int, ev: dict, target, max_drift: float,
                  em_steps: list[int]) -> list[dict]:
    """The same fitted drift simulated with each number of Euler–Maruyama steps (same initial points, seed
    ``1000 + seed``): W2 to the target, violation, cost and clipping against the step count (``--em-check``)."""
    out = []
    for k in em_steps:
        c0 = time.process_time()
        mc = pc.monte_carlo_cost(problem, drift, n=ev["particles"], steps=k, seed=1000 + seed, target_samples=target,
                                 max_drift=max_drift)
        out.append(dict(dataset=name, method=f"{method}, {k} EM steps", seed=seed, cpu=time.process_time() - c0, mc=mc["cost"],
                        w2=mc["w2"], violation=mc["violation"], clipped=mc["clipped"]))
        print(out[-1], flush=True)
    return out


# the baseline as configured since issue #6, and (where a problem's config has a "baseline-tuned" section) the same
# method with settings chosen so that it solves the problem: the target reached and the walls respected
TUNED = "baseline-bptt-policy-tuned"
TUNED_KEY = "baseline-tuned"  # its config section: keys that replace the baseline's (train_obstacles among them)
BASELINES = ("baseline-bptt-policy", TUNED)


def run_deepgsb(cfg: dict, ev: dict, seeds: list[int], budget: float, names: Optional[list[str]], keep: int,
                methods: set[str], em_check: Optional[list[int]] = None) -> tuple[list[dict], dict]:
    """Each method on each problem and seed; budgets in CPU seconds (``time.process_time``): the baseline ``budget``,
    probflux ``ours_fraction * budget``. With ``em_check`` (a list of step counts) the rows are instead those of
    :func:`em_check_rows` for every fitted model (and, for the bridge, W2 of exact samples of its ``rho_1``), marked
    ``check=True``. Per problem ``sampling-floor`` rows: W2 between two independent target draws
    of the evaluation size (the best any method's W2 to the target can be)."""
    from probflux.metrics import wasserstein

    rows, paths = [], {}
    floors: dict[tuple, list[float]] = {}  # problems with the same target and evaluation size share their floor draws
    frac = cfg["ours_fraction"]
    annealed = bool(cfg.get("time_schedule", False))  # probflux: the LR schedule runs over the CPU budget
    b_annealed = bool(cfg.get("baseline_time_schedule", annealed))  # the baseline's own choice (configs/control_bench.yaml)
    for name, spec in cfg["problems"].items():
        if names and name not in names:
            continue
        problem = cp.problem_by_name(spec["problem"], **spec["kwargs"])
        L = cp.LENGTH_SCALE[spec["problem"]]
        target = problem.target.sample(ev["particles"], torch.Generator().manual_seed(99))
        max_drift = ev["max_drift_factor"] * L / problem.horizon  # safeguard, same for both methods
        # floor_draws independent target draws per seed (the first one seeded 500 + seed, as before): the floor's own
        # spread is that of any method's W2 to the fixed reference sample, so its mean and s.e. need more than 3 draws
        draws = int(ev.get("floor_draws", 1))
        key = (tuple(torch.cat([c.reshape(-1) for c in problem.target.components]).tolist()), ev["particles"], tuple(seeds), draws)
        if key not in floors:
            floors[key] = [wasserstein(problem.target.sample(ev["particles"], torch.Generator().manual_seed(
                500 + seed if d == 0 else 10_000 + 100 * seed + d)), target, 2, method="exact") for seed in seeds for d in range(draws)]
        for i, floor in enumerate(floors[key]):
            rows.append(dict(dataset=name, method="sampling-floor", seed=seeds[i // draws], w2_floor=floor))
        for method in ("probflux", "probflux-bridge"):
            if method not in methods:
                continue
            o = spec[method]
            ob = o.get("train_obstacles", spec["train_obstacles"])
            obstacles = cp.smooth_obstacles(problem, ob["weight"], ob["width"], ob["penalty"])
            for seed in seeds:
                t0, c0 = time.perf_counter(), time.process_time()
                torch.manual_seed(seed)
                if method == "probflux":
                    dens = pc.default_density(problem, components=o["components"], hidden=o["hidden"], layers=o["layers"], loc_scale=L,
                                              flux=o["flux"], fixed_weights=o["fixed_weights"], seed=seed)
                else:  # both endpoint laws exact (control/bridge.py): only the path is optimised
                    dens = pc.BridgeMixture(problem.initial, problem.target, replicas=o["replicas"], loc_scale=L, hidden=o["hidden"],
                                            layers=o["layers"], max_frequency=8.0)
                objective = pc.ControlObjective(problem, samples=o["samples"], train_obstacles=obstacles,
                                                endpoint_weight=o.get("endpoint_weight", 1.0), control_start=o.get("control_start", 0))
                fit = pc.solve(problem, dens, objective=objective, steps=o["steps"], lr=o["lr"], batch_size=256,
                               dtype=o.get("dtype", "float64"), warmup=50, seed=seed, max_seconds=frac * budget,
                               clock=time.process_time, time_schedule=annealed)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                mc = pc.monte_carlo_cost(problem, pc.model_drift(problem, fit.model), n=ev["particles"], steps=ev["em_steps"],
                                         seed=1000 + seed, target_samples=target, keep=keep if seed == seeds[0] else 0,
                                         max_drift=max_drift)
                sf = pc.simulation_free_cost(problem, fit.model, n=ev["sf_samples"], seed=seed)
                row = dict(dataset=name, method=method, seed=seed, wall=wall, cpu=cpu, steps=fit.step, mc=mc["cost"],
                           mc_se=mc["cost_se"], sf=sf["cost"], w2=mc["w2"], violation=mc["violation"], clipped=mc["clipped"],
                           terms={k: v[0] for k, v in mc["terms"].items()})
                if any(m.needs == "density" for m in problem.mean_field):  # same path cost with the model's exact log rho
                    exact = pc.monte_carlo_cost(problem, pc.model_drift(problem, fit.model), n=ev["particles"], steps=ev["em_steps"],
                                                seed=1000 + seed, log_density=pc.model_log_density(problem, fit.model), w2=False,
                                                max_drift=max_drift)
                    row["mc_exact_density"] = exact["cost"]
                rows.append(row)
                print(row, flush=True)
                if mc["path"] is not None:
                    paths[(name, method)] = mc["path"]
                if em_check:
                    check = em_check_rows(problem, pc.model_drift(problem, fit.model), name, method, seed, ev, target, max_drift,
                                          em_check)
                    if pc.pins(dens)[1]:  # rho_1 is the target by construction: W2 of its exact samples is a floor draw
                        with torch.no_grad():
                            x1 = fit.model.density.sample(torch.ones(ev["particles"], dtype=torch.float64))
                        check.append(dict(dataset=name, method=f"{method}, exact rho_1 samples", seed=seed,
                                          w2=wasserstein(x1.double(), target, 2, method="exact")))
                    rows += [dict(r, check=True) for r in check]
        for method in BASELINES:
            if method not in methods or (method == TUNED and TUNED_KEY not in spec):
                continue
            b = dict(spec["baseline"], **spec[TUNED_KEY]) if method == TUNED else spec["baseline"]
            ob = b.get("train_obstacles", spec["train_obstacles"])
            obstacles = cp.smooth_obstacles(problem, ob["weight"], ob["width"], ob["penalty"])
            for seed in seeds:
                t0, c0 = time.perf_counter(), time.process_time()
                policy, info = train_baseline(problem, steps=b["steps"], particles=b["particles"], sde_steps=b["sde_steps"], lr=b["lr"],
                                              hidden=b["hidden"], layers=b["layers"], scale=L, sinkhorn_weight=b["sinkhorn_weight"],
                                              train_obstacles=obstacles, seed=seed, max_seconds=budget, clock=time.process_time,
                                              time_schedule=b_annealed)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                mc = pc.monte_carlo_cost(problem, policy_drift(policy), n=ev["particles"], steps=ev["em_steps"], seed=1000 + seed,
                                         target_samples=target, keep=keep if seed == seeds[0] else 0, max_drift=max_drift)
                rows.append(dict(dataset=name, method=method, seed=seed, wall=wall, cpu=cpu, steps=info["steps"],
                                 mc=mc["cost"], mc_se=mc["cost_se"], w2=mc["w2"], violation=mc["violation"], clipped=mc["clipped"],
                                 terms={k: v[0] for k, v in mc["terms"].items()}))
                print(rows[-1], flush=True)
                if mc["path"] is not None:
                    paths[(name, method)] = mc["path"]
                if em_check:
                    rows += [dict(r, check=True) for r in em_check_rows(problem, policy_drift(policy), name, method,
                                                                       seed, ev, target, max_drift, em_check)]
    return rows, paths


# ----------------------------------------------------------------------------------------------- output
METRICS = {  # row key -> (metric name, table label)
    "mc": ("mc_cost", "MC cost"), "mc_se": ("mc_cost_se", "MC s.e."), "sf": ("simulation_free_cost", "sim-free cost"),
    "mc_exact_density": ("mc_cost_exact_density", "MC cost (exact log rho)"), "gap": ("gap_to_riccati", "gap to Riccati"),
    "opt": ("riccati_optimum", "Riccati optimum"),
    "gap_crn": ("gap_to_riccati_common_noise", "gap vs b* (same noise)"), "gap_crn_se": ("gap_common_noise_se", "its s.e."),
    "w2": ("w2_target", "W2 to target"),
    "violation": ("obstacle_violation_rate", "violation"), "clipped": ("clipped_drift_fraction", "clipped"),
    "w2_floor": ("w2_target_floor", "W2 floor"),
    "wall": ("wall_seconds", "wall s"), "cpu": ("cpu_seconds", "CPU s"), "steps": ("train_steps", "steps"),
}


def records(rows: list[dict], benchmark: str, command: str) -> list[dict]:
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    for (ds, method), rs in groups.items():
        wall, _ = mean_std([r.get("wall", 0.0) for r in rs])
        cpu, _ = mean_std([r.get("cpu", 0.0) for r in rs])
        for key, (metric, _) in METRICS.items():
            if key not in rs[0] or rs[0][key] is None:
                continue
            m, s = mean_std([r[key] for r in rs])
            out.append(dict(benchmark=benchmark, dataset=ds, method=method, metric=metric, value=m, std=s, seeds=len(rs),
                            wall_seconds=wall, cpu_seconds=cpu, command=command))
    return out


LQ_COLUMNS = ["riccati_optimum", "mc_cost", "gap_to_riccati", "gap_to_riccati_common_noise", "gap_common_noise_se",
              "simulation_free_cost", "cpu_seconds", "train_steps"]
EM_CHECK_COLUMNS = ["w2_target", "w2_target_floor", "obstacle_violation_rate", "mc_cost", "clipped_drift_fraction", "cpu_seconds"]
DEEPGSB_COLUMNS = ["mc_cost", "mc_cost_se", "simulation_free_cost", "mc_cost_exact_density", "w2_target",
                   "w2_target_floor", "obstacle_violation_rate", "clipped_drift_fraction", "cpu_seconds", "train_steps"]


def render_tables(recs: list[dict]) -> str:
    """The generated tables of RESULTS.md's control section, from the records alone (``--tables``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tables import commands, pivot

    def cell(r: dict) -> str:
        v, s = r["value"], r.get("std")
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            return "–"
        if "gap" in r["metric"]:
            return f"{100 * v:+.2f}% ± {100 * (s or 0):.2f}" if r.get("seeds", 1) > 1 else f"{100 * v:+.2f}%"
        return f"{v:.4g} ± {(s or 0):.2g}" if r.get("seeds", 1) > 1 else f"{v:.4g}"

    out = []
    lq = [r for r in recs if r["benchmark"] == "control_lq"]
    if lq:
        out += ["### Linear-quadratic control (Riccati closed form)", "",
                pivot(lq, columns=[c for c in LQ_COLUMNS if any(r["metric"] == c for r in lq)], cell=cell), ""]
    dg = [r for r in recs if r["benchmark"] == "control_deepgsb"]
    if dg:
        out += ["### DeepGSB crowd navigation", "",
                pivot(dg, columns=[c for c in DEEPGSB_COLUMNS if any(r["metric"] == c for r in dg)], cell=cell), ""]
    for bench in sorted({r["benchmark"] for r in recs if r["benchmark"].startswith("control_deepgsb_budget")}):
        rs = [r for r in recs if r["benchmark"] == bench]
        out += [f"### DeepGSB problems, baseline budget {bench.removeprefix('control_deepgsb_budget')} CPU s (probflux 1/5 of it)", "",
                pivot(rs, columns=[c for c in DEEPGSB_COLUMNS if any(r["metric"] == c for r in rs)], cell=cell), ""]
    em = [r for r in recs if r["benchmark"] == "control_em_check"]
    if em:
        out += ["### The evaluation against its Euler–Maruyama step count (`--em-check`)", "",
                pivot(em, columns=[c for c in EM_CHECK_COLUMNS if any(r["metric"] == c for r in em)], cell=cell), ""]
    if dg:
        out += ["### W2 to the target against its sampling floor", "",
                "Mean ± sd over the method's seeds and over the floor's draws (their number in brackets). If `X_T` has the "
                "target's law, a method's `W2` to the fixed reference sample is distributed as a floor draw: the s.e. of "
                "`W2 - floor` is `sd_floor sqrt(1/seeds + 1/draws)` (the method's own sd in the first part when it is "
                "wider), `z` = difference / s.e. (|z| < 2: at the floor "
                "within the evaluation's sampling noise).", "", floor_table(dg), ""]
    out += ["Commands:", "", commands(recs)]
    return "\n".join(out)


def floor_table(recs: list[dict]) -> str:
    """Markdown rows ``dataset | method | W2 | floor | W2 - floor ± s.e. | z`` from the ``w2_target`` and
    ``w2_target_floor`` records. Under the hypothesis "``X_T`` has the target's law" a method's ``W2`` to the fixed
    reference sample is distributed as a floor draw, so the s.e. of the difference of the means over ``n`` seeds and
    ``m`` floor draws is ``sd_floor sqrt(1/n + 1/m)`` (the floor's spread over its many draws; 3 seeds cannot
    estimate a spread; a method whose own spread is wider uses it for its ``1/n`` part), and ``z = (W2 - floor) / s.e.``."""
    floor = {r["dataset"]: r for r in recs if r["metric"] == "w2_target_floor"}
    lines = ["| dataset | method | W2 to target | floor (sd of a draw) | W2 - floor | z |", "|---|---|---|---|---|---|"]
    for r in recs:
        f = floor.get(r["dataset"])
        if r["metric"] != "w2_target" or f is None or not math.isfinite(r["value"]):
            continue
        n, m = max(r.get("seeds", 1), 1), max(f.get("seeds", 1), 1)
        sf, sr = f.get("std") or 0.0, r.get("std") or 0.0
        d, e = r["value"] - f["value"], math.sqrt(max(sr, sf) ** 2 / n + sf**2 / m)  # a wider method spread is kept
        z = f"{d / e:+.1f}" if e > 0 else "–"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['value']:.4g} ± {r.get('std') or 0:.2g} ({n}) | "
                     f"{f['value']:.4g} ± {f.get('std') or 0:.2g} ({m}) | {d:+.3g} ± {e:.2g} | {z} |")
    return "\n".join(lines)


def _panel(ax, problem, path, k: Optional[int], title: str, lim) -> None:
    import numpy as np

    xs = np.linspace(lim[0], lim[1], 300)
    ys = np.linspace(lim[2], lim[3], 300)
    X, Y = np.meshgrid(xs, ys)
    grid = torch.tensor(np.stack([X.ravel(), Y.ravel()], -1))
    inside = problem.inside_obstacle(grid).numpy().reshape(X.shape)
    ax.contourf(X, Y, inside, levels=[0.5, 1.5], colors=["0.35"])
    tgt = problem.target.sample(600, torch.Generator().manual_seed(5)).numpy()
    ax.scatter(tgt[:, 0], tgt[:, 1], s=2, c="0.75", zorder=1)
    import matplotlib.cm as cm

    frames = range(path.shape[0]) if k is None else [k]
    for j in frames:
        p = path[j].numpy()
        ax.scatter(p[:, 0], p[:, 1], s=2, color=cm.viridis(j / (path.shape[0] - 1)), zorder=2)
    ax.set_xlim(lim[0], lim[1])
    ax.set_ylim(lim[2], lim[3])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


LIMITS = {"gmm": (-20, 20, -20, 20), "vneck": (-10, 10, -5, 5), "stunnel": (-15, 15, -10, 10), "motion_planning": (-7, 7, -5, 5)}


def draw_all(cfg: dict, paths: dict) -> list[Path]:
    """One PNG per problem (both methods, particles at 11 times coloured by time, obstacles grey, target light
    grey) and a GIF of the S-tunnel crowds (or the first problem) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    out_dir = ROOT / "docs" / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    names = sorted({n for n, _ in paths})
    methods = [m for m in ("probflux-bridge", "probflux", "baseline-bptt-policy") if any(k[1] == m for k in paths)][:2]
    for name in names:
        spec = cfg["problems"][name]
        problem = cp.problem_by_name(spec["problem"], **spec["kwargs"])
        lim = LIMITS[spec["problem"]]
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.6 if lim[3] - lim[2] < lim[1] - lim[0] else 4.2))
        for ax, m in zip(axes, methods):
            if (name, m) in paths:
                _panel(ax, problem, paths[(name, m)], None, f"{name}: {m}", lim)
        fig.tight_layout()
        f = out_dir / f"control_{name}.png"
        fig.savefig(f, dpi=90)
        plt.close(fig)
        files.append(f)
    gif_name = next((n for n in names if n.startswith("stunnel")), None)
    if gif_name is not None:
        spec = cfg["problems"][gif_name]
        problem = cp.problem_by_name(spec["problem"], **spec["kwargs"])
        lim = LIMITS[spec["problem"]]
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))

        def frame(k: int) -> None:
            for ax, m in zip(axes, methods):
                ax.clear()
                if (gif_name, m) in paths:
                    _panel(ax, problem, paths[(gif_name, m)], k, f"{m}, s = {k / 10:.1f} T", lim)

        anim = FuncAnimation(fig, frame, frames=paths[(gif_name, methods[0])].shape[0])
        f = out_dir / f"control_{gif_name}.gif"
        anim.save(f, writer=PillowWriter(fps=3), dpi=70)
        plt.close(fig)
        files.append(f)
    return files


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "control_bench.yaml"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=None, help="DeepGSB baseline budget in CPU seconds (default: config)")
    ap.add_argument("--lq-budget", type=float, default=None, help="LQ budget per method in CPU seconds (default: config)")
    ap.add_argument("--only", default="lq,deepgsb", help="comma list of: lq, deepgsb")
    ap.add_argument("--problems", default=None, help="comma list of DeepGSB problem names from the config")
    ap.add_argument("--dims", default=None, help="comma list of LQ dimensions (default: the config's dims and flow_dims)")
    ap.add_argument("--methods", default="probflux,probflux-bridge,probflux-flow,baseline-bptt-policy",
                    help="comma list of methods to run; the records of the others are kept (the DeepGSB floors always run: "
                         "--methods sampling-floor runs only them)")
    ap.add_argument("--lq-particles", type=int, default=None, help="LQ evaluation particles (default: config)")
    ap.add_argument("--lq-em-steps", type=int, default=None, help="LQ Euler-Maruyama steps (default: the evaluation's em_steps)")
    ap.add_argument("--eval-particles", type=int, default=None, help="Monte Carlo particles of the evaluation (default: config)")
    ap.add_argument("--override", default=None,
                    help='JSON {problem: {key: value}} replacing keys of a DeepGSB problem\'s probflux-bridge settings (sweeps)')
    ap.add_argument("--baseline-override", default=None,
                    help=f'JSON {{problem: {{key: value}}}} replacing keys of a DeepGSB problem\'s "baseline-tuned" settings (method '
                         f'{TUNED}; sweeps)')
    ap.add_argument("--em-check", default=None,
                    help="comma list of Euler-Maruyama step counts: record (benchmark control_em_check) the fitted models' W2, "
                         "violation and cost at each, instead of the benchmark rows")
    ap.add_argument("--figures", action="store_true", help="draw docs/images/control_*.png and control_stunnel.gif")
    ap.add_argument("--tables", action="store_true", help="only re-render RESULTS.md's control section from the records")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tables import replace_section

    if args.tables:
        replace_section(ROOT / "benchmarks" / "RESULTS.md", "control", render_tables(json.loads(out.read_text())))
        return
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = yaml.safe_load(Path(args.config).read_text())
    ev = dict(cfg["evaluation"], **({"particles": args.eval_particles} if args.eval_particles else {}))
    seeds = list(range(args.seeds))
    methods = set(args.methods.split(","))
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_control.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    parts = args.only.split(",")
    recs: list[dict] = []
    if "lq" in parts:
        lq = dict(cfg["lq"])
        if args.dims:
            dims = [int(d) for d in args.dims.split(",")]
            lq["dims"] = [d for d in lq["dims"] if d in dims]
            lq["flow_dims"] = [d for d in lq.get("flow_dims", []) if d in dims]
        if args.lq_particles:
            lq["particles"] = args.lq_particles
        lq_ev = dict(ev, **({"em_steps": args.lq_em_steps} if args.lq_em_steps else {}))
        rows = run_lq(lq, lq_ev, seeds, args.lq_budget or cfg["lq"]["budget"], methods)
        recs += records(rows, "control_lq", command)
    if "deepgsb" in parts:
        for name, keys in (json.loads(args.override) if args.override else {}).items():
            cfg["deepgsb"]["problems"][name]["probflux-bridge"].update(keys)
        for name, keys in (json.loads(args.baseline_override) if args.baseline_override else {}).items():
            cfg["deepgsb"]["problems"][name].setdefault(TUNED_KEY, {}).update(keys)
        budget = args.budget or cfg["deepgsb"]["budget"]
        em_check = [int(k) for k in args.em_check.split(",")] if args.em_check else None
        rows, paths = run_deepgsb(cfg["deepgsb"], ev, seeds, budget, args.problems.split(",") if args.problems else None,
                                  keep=400 if args.figures else 0, methods=methods, em_check=em_check)
        if em_check:  # a diagnostic: only its own rows (and the floors) are recorded
            recs += records([r for r in rows if r.get("check")], "control_em_check", command)
            recs += records([r for r in rows if r["method"] == "sampling-floor"], "control_em_check", command)
        else:  # a budget other than the config's is recorded beside the main rows, not over them
            recs += records(rows, "control_deepgsb" if budget == cfg["deepgsb"]["budget"] else f"control_deepgsb_budget{budget:g}", command)
        if args.figures and paths:
            for f in draw_all(cfg["deepgsb"], paths):
                print("figure", f)
    if out.exists():  # replace only the (benchmark, dataset, method) groups that ran, in place; keep the others' records
        key = lambda r: (r["benchmark"], r["dataset"], r["method"])  # noqa: E731
        fresh: dict[tuple, list[dict]] = {}
        for r in recs:
            fresh.setdefault(key(r), []).append(r)
        merged: list[dict] = []
        for r in json.loads(out.read_text()):
            if key(r) not in fresh:
                merged.append(r)
            elif fresh[key(r)]:  # the first old record of a group that ran: the new group goes here
                merged += fresh[key(r)]
                fresh[key(r)] = []
        recs = merged + [r for rs in fresh.values() for r in rs]
    write_json(out, recs)
    print("wrote", out)
    print(render_tables(recs))
    if out.resolve() == DEFAULT_OUT.resolve():  # a sweep written elsewhere (--out) leaves RESULTS.md alone
        replace_section(ROOT / "benchmarks" / "RESULTS.md", "control", render_tables(recs))


if __name__ == "__main__":
    main()
