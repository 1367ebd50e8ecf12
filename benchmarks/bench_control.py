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
def run_deepgsb(cfg: dict, ev: dict, seeds: list[int], budget: float, names: Optional[list[str]], keep: int,
                methods: set[str]) -> tuple[list[dict], dict]:
    """Each method on each problem and seed; budgets in CPU seconds (``time.process_time``): the baseline ``budget``,
    probflux ``ours_fraction * budget``. Per problem one ``sampling-floor`` row: W2 between two independent target draws
    of the evaluation size (the best any method's W2 to the target can be)."""
    from probflux.metrics import wasserstein

    rows, paths = [], {}
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
        for seed in seeds:
            floor = wasserstein(problem.target.sample(ev["particles"], torch.Generator().manual_seed(500 + seed)), target, 2,
                                method="exact")
            rows.append(dict(dataset=name, method="sampling-floor", seed=seed, w2_floor=floor))
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
                fit = pc.solve(problem, dens, objective=objective, steps=o["steps"], lr=o["lr"], batch_size=256, dtype="float64",
                               warmup=50, seed=seed, max_seconds=frac * budget, clock=time.process_time, time_schedule=annealed)
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
        if "baseline-bptt-policy" not in methods:
            continue
        b = spec["baseline"]
        ob = spec["train_obstacles"]
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
            rows.append(dict(dataset=name, method="baseline-bptt-policy", seed=seed, wall=wall, cpu=cpu, steps=info["steps"],
                             mc=mc["cost"], mc_se=mc["cost_se"], w2=mc["w2"], violation=mc["violation"], clipped=mc["clipped"],
                             terms={k: v[0] for k, v in mc["terms"].items()}))
            print(rows[-1], flush=True)
            if mc["path"] is not None:
                paths[(name, "baseline-bptt-policy")] = mc["path"]
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
    out += ["Commands:", "", commands(recs)]
    return "\n".join(out)


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
                    help="comma list of methods to run; the records of the others are kept")
    ap.add_argument("--lq-particles", type=int, default=None, help="LQ evaluation particles (default: config)")
    ap.add_argument("--lq-em-steps", type=int, default=None, help="LQ Euler-Maruyama steps (default: the evaluation's em_steps)")
    ap.add_argument("--eval-particles", type=int, default=None, help="Monte Carlo particles of the evaluation (default: config)")
    ap.add_argument("--override", default=None,
                    help='JSON {problem: {key: value}} replacing keys of a DeepGSB problem\'s probflux-bridge settings (sweeps)')
    ap.add_argument("--figures", action="store_true", help="draw docs/images/control_*.png and control_stunnel.gif")
    ap.add_argument("--tables", action="store_true", help="only re-render RESULTS.md's control section from the records")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "control.json"))
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
        budget = args.budget or cfg["deepgsb"]["budget"]
        rows, paths = run_deepgsb(cfg["deepgsb"], ev, seeds, budget, args.problems.split(",") if args.problems else None,
                                  keep=400 if args.figures else 0, methods=methods)
        recs += records(rows, "control_deepgsb", command)
        if args.figures and paths:
            for f in draw_all(cfg["deepgsb"], paths):
                print("figure", f)
    if out.exists():  # replace only the (benchmark, dataset, method) groups that ran; keep the others' records
        ran = {(r["benchmark"], r["dataset"], r["method"]) for r in recs}
        recs = [r for r in json.loads(out.read_text()) if (r["benchmark"], r["dataset"], r["method"]) not in ran] + recs
    write_json(out, recs)
    print("wrote", out)
    print(render_tables(recs))
    replace_section(ROOT / "benchmarks" / "RESULTS.md", "control", render_tables(recs))


if __name__ == "__main__":
    main()
