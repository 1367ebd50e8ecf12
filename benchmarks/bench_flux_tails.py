"""How large the velocity ``u = j / rho`` of each flux gets away from and between the mass.

Every flux is exact (continuity residual ~1e-14), but fluxes differ where ``rho`` is small: a velocity that
explodes there makes SDE/ODE simulation stiff and the kinetic energy noisy. For each model and flux, with
parameters perturbed by ``--perturb * N(0, 1)`` (random, genuinely time-dependent models; ``--seeds``
seeds), this measures ``|u_t(x)|`` at

* ``box``: ``--points`` points uniform in ``[-6, 6]^D`` at uniform times (tails and gaps between components);
* ``mass``: as many exact samples of ``rho_t`` at uniform times (where the probability is).

and reports quantiles (p50, p99, max) and the fraction of non-finite values, each the median over seeds.
Float64, CPU. Writes ``benchmarks/results/flux_tails.json`` (records as in bench_core).
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch

from probflux import AutoregressiveMixture, FactorizedMixture, TimeDensity
from probflux.io import write_json

MODELS: dict[str, Callable[[int], TimeDensity]] = {
    "factorized-logistic-kr": lambda d: FactorizedMixture(d, components=4, hidden=32, family="logistic", flux="kr"),
    "factorized-logistic-mixture": lambda d: FactorizedMixture(d, components=4, hidden=32, family="logistic", flux="mixture"),
    "factorized-gaussian-kr": lambda d: FactorizedMixture(d, components=4, hidden=32, family="gaussian", flux="kr"),
    "factorized-gaussian-mixture": lambda d: FactorizedMixture(d, components=4, hidden=32, family="gaussian", flux="mixture"),
    "ar-kr": lambda d: AutoregressiveMixture(d, components=4, hidden=32, layers=2, flux="kr"),
    "ar-sigmoid": lambda d: AutoregressiveMixture(d, components=4, hidden=32, layers=2, flux="sigmoid"),
}


def speeds(model: TimeDensity, t: torch.Tensor, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(t), chunk):
            out.append(model.velocity(t[i:i + chunk], x[i:i + chunk]).norm(dim=-1))
    return torch.cat(out)


def summary(s: torch.Tensor) -> dict[str, float]:
    """Quantiles of the speeds ``s: (N,)`` and the fraction that is not finite (what this benchmark measures)."""
    finite = torch.isfinite(s)
    f = s[finite]
    q = torch.quantile(f, torch.tensor([0.5, 0.99], dtype=f.dtype)) if f.numel() else torch.full((2,), float("nan"))
    return {"p50": float(q[0]), "p99": float(q[1]), "max": float(f.max()) if f.numel() else float("nan"),
            "nonfinite_fraction": float(1 - finite.double().mean())}


STATS = ("box_p50", "box_p99", "box_max", "box_nonfinite_fraction", "mass_p50", "mass_p99", "mass_max")
HEAD = ["model", "D", "box p50", "box p99", "box max", "box non-finite", "mass p50", "mass p99", "mass max"]


def render_tables(records: list[dict]) -> str:
    """The markdown table of one run (``benchmarks/RESULTS.md`` sections ``flux_tails`` and ``flux_tails_stress``):
    ``|u|`` quantiles per model and D, the median over the seeds, with the command that produced them."""
    value = {(r["method"], r["dataset"], r["metric"].removeprefix("speed_")): r["value"] for r in records}
    keys = list(dict.fromkeys((r["method"], r["dataset"]) for r in records))
    seeds = sorted({r["seeds"] for r in records})
    from tables import commands

    lines = [f"Command (median over {', '.join(map(str, seeds))} seeds):", "", commands(records), "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for method, dataset in keys:
        cells = [f"{value[(method, dataset, s)]:.3g}" for s in STATS]
        lines.append(f"| {method.removeprefix('probflux-')} | {dataset.rsplit('-D', 1)[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--points", type=int, default=20000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--perturb", type=float, default=0.3)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "flux_tails.json"))
    p.add_argument("--tables", action="store_true", help="only regenerate the flux_tails sections of benchmarks/RESULTS.md")
    args = p.parse_args()
    if args.tables:
        from tables import render

        render("flux_tails")
        render("flux_tails_stress")
        return
    command = shlex.join(sys.orig_argv)
    start = time.perf_counter()
    records = []
    for name, make in MODELS.items():
        for dim in args.dims:
            per_seed: dict[str, list[dict[str, float]]] = {"box": [], "mass": []}
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = make(dim).double()
                with torch.no_grad():
                    for q in model.parameters():
                        q.add_(args.perturb * torch.randn_like(q))
                t = torch.rand(args.points, dtype=torch.float64)
                box = 12 * torch.rand(args.points, dim, dtype=torch.float64) - 6
                per_seed["box"].append(summary(speeds(model, t, box)))
                per_seed["mass"].append(summary(speeds(model, t, model.sample(t))))
            for where, sums in per_seed.items():
                for stat in ("p50", "p99", "max", "nonfinite_fraction"):
                    v = statistics.median(s[stat] for s in sums)
                    records.append({"benchmark": "flux_tails", "dataset": f"random-perturbed-{args.perturb}-D{dim}",
                                    "method": f"probflux-{name}", "metric": f"speed_{where}_{stat}", "value": v, "std": None,
                                    "seeds": args.seeds})
            print(f"  {name} D={dim} done", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    for r in records:
        r.update(wall_seconds=wall, command=command)
    print(render_tables(records))
    print(f"\n# wall {wall:.1f} s")
    write_json(args.out, records)
    print(f"# wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
