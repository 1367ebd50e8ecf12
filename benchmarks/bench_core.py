"""Benchmark of the core probflux calls: time and peak memory per call, relative to a network floor.

For every model (``FactorizedMixture`` logistic/Gaussian with the default K=8, hidden=256;
``AutoregressiveMixture`` with the KR and the sigmoid flux, default K=16, hidden=256, layers=4) and every
dimension ``D``, on ``N`` points in float32 on the CPU, the calls are

* ``floor``      one plain forward + backward (of ``.sum()``) of the model's network, with no derivative
                 in ``t`` or ``x``: ``model.net(model._net_input(t, ctx)[0])`` (factorized) or
                 ``model.net(model._net_input(t, x, ctx))`` (autoregressive);
* ``log_prob``, ``velocity``, ``drift`` (``Dynamics(model, diffusion=0.5)``), ``rsample``: forward +
  backward of ``.sum()`` to the parameters, which is what training needs;
* ``sample``     forward only (it returns no graph);
* ``train_step`` ``zero_grad`` + NLL of a data batch ``(t, x)`` + kinetic energy
  ``E_{t~U, x~rho_t} |u|^2`` (``rsample`` then ``velocity`` at ``N`` fresh times) + ``backward`` + one
  Adam step, on a copy of the model so that the other calls always see the initial parameters.

The data are ``N`` samples of a fixed 4-component Gaussian mixture in ``R^D`` (seeded) with times
``t ~ U(0, 1)``; the same ``(t, x)`` feed every call that takes points. Parameter gradients (of the model
and of its training copy) are reset to ``None`` before each call, outside the timed region, so every call
allocates its gradients afresh. Validation of inputs stays at the library default (on).

Timing: ``--warmup`` untimed calls (default 2: the first calls of a process pay for page faults and
lazy initialisation), then ``--repeats`` calls each timed with ``time.perf_counter``; the table gives
the median and the standard deviation over the repeats. ``x floor`` is the median time
of a call divided by the median time of ``floor`` for the same model and ``D`` (``sample`` is forward
only, the floor forward + backward). Torch's default thread count is kept unless ``--threads`` is given.

Peak memory: one further call runs under ``torch.profiler.profile(profile_memory=True)``, which records
every allocation and free of the CPU allocator with its size. The events are ordered by time and summed;
the maximum of that running sum is the peak of memory allocated *by the call* on top of what was live
before it (graph activations, outputs, parameter gradients), in MB = 1e6 bytes. It excludes the Python
interpreter and allocator caching, and is exact and repeatable, unlike a process RSS delta.

Outputs: the tables on stdout (progress, and the profiler's start/stop lines, on stderr) and a JSON
list of records, one per number in the tables, written atomically to ``--out``. ``--quick`` is a smoke
run (D in {2, 5}, N = 1024, 2 repeats, written to ``core-quick.json`` unless ``--out`` is given);
explicit flags override it. ``--tables`` only rewrites the ``core`` section of ``benchmarks/RESULTS.md`` from
``benchmarks/results/core.json`` (``render_tables``; the same text the run prints).
"""
from __future__ import annotations

import argparse
import copy
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from probflux import AutoregressiveMixture, Dynamics, FactorizedMixture, TimeDensity
from probflux.io import write_json

MODELS: dict[str, Callable[[int], TimeDensity]] = {
    "factorized-logistic": lambda d: FactorizedMixture(d, family="logistic"),
    "factorized-gaussian": lambda d: FactorizedMixture(d, family="gaussian"),
    "ar-kr": lambda d: AutoregressiveMixture(d, flux="kr"),
    "ar-sigmoid": lambda d: AutoregressiveMixture(d, flux="sigmoid"),
}
CALLS = ("floor", "log_prob", "velocity", "drift", "sample", "rsample", "train_step")
FORWARD_ONLY = {"sample"}
RATIOS = (("ar-kr", "ar-sigmoid"), ("ar-kr", "factorized-logistic"), ("ar-sigmoid", "factorized-logistic"))
DIFFUSION = 0.5
LEARNING_RATE = 1e-3


@dataclass
class Measurement:
    median_ms: float
    std_ms: Optional[float]
    peak_mb: float


def gmm_data(dim: int, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` points of a fixed 4-component Gaussian mixture in ``R^dim`` and times ``t ~ U(0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(4, dim, generator=g)
    scales = 0.3 + 0.4 * torch.rand(4, 1, generator=g)
    k = torch.randint(0, 4, (n,), generator=g)
    x = means[k] + scales[k] * torch.randn(n, dim, generator=g)
    return torch.rand(n, generator=g), x


def make_calls(model: TimeDensity, t: Tensor, x: Tensor) -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """The benchmarked calls as closures over the model and the data, and a reset of all gradients."""
    dyn = Dynamics(model, diffusion=DIFFUSION)
    trained = copy.deepcopy(model)
    opt = torch.optim.Adam(trained.parameters(), lr=LEARNING_RATE)

    def floor() -> None:
        if isinstance(model, FactorizedMixture):
            out = model.net(model._net_input(t, None)[0])
        else:
            out = model.net(model._net_input(t, x, None))
        out.sum().backward()

    def train_step() -> None:  # the timed training step itself (its loss), not a metric
        opt.zero_grad(set_to_none=True)
        nll = -trained.log_prob(t, x).mean()
        tk = torch.rand(x.shape[0])
        u = trained.velocity(tk, trained.rsample(tk))
        (nll + u.pow(2).sum(-1).mean()).backward()
        opt.step()

    def reset() -> None:
        model.zero_grad(set_to_none=True)
        trained.zero_grad(set_to_none=True)

    calls: dict[str, Callable[[], None]] = {
        "floor": floor,
        "log_prob": lambda: model.log_prob(t, x).sum().backward(),
        "velocity": lambda: model.velocity(t, x).sum().backward(),
        "drift": lambda: dyn.drift(t, x).sum().backward(),
        "sample": lambda: model.sample(t),
        "rsample": lambda: model.rsample(t).sum().backward(),
        "train_step": train_step,
    }
    return calls, reset


def peak_allocated_bytes(fn: Callable[[], None]) -> int:
    """Peak of the running sum of CPU allocations minus frees recorded by the profiler during ``fn()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def measure(fn: Callable[[], None], reset: Callable[[], None], warmup: int, repeats: int) -> Measurement:
    for _ in range(warmup):
        reset()
        fn()
    times = []
    for _ in range(repeats):
        reset()
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    reset()
    peak = peak_allocated_bytes(fn)
    reset()
    std = statistics.stdev(times) if len(times) > 1 else None
    return Measurement(statistics.median(times), std, peak / 1e6)


def run_model(name: str, dim: int, n: int, warmup: int, repeats: int) -> dict[str, Measurement]:
    torch.manual_seed(0)
    model = MODELS[name](dim)
    t, x = gmm_data(dim, n)
    calls, reset = make_calls(model, t, x)
    return {call: measure(fn, reset, warmup, repeats) for call, fn in calls.items()}


# ---------------------------------------------------------------------------------------------- output
def header(call: str) -> str:
    return f"{call} (f)" if call in FORWARD_ONLY else f"{call} (f+b)"


def markdown_table(first: list[str], rows: list[tuple[list[str], list[str]]]) -> str:
    head = first + [header(c) for c in CALLS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(keys + cells) + " |" for keys, cells in rows]
    return "\n".join(lines)


def measurement_records(results: dict[tuple[str, int], dict[str, Measurement]], models: list[str],
                        dims: list[int]) -> list[dict]:
    """One record (without the run-wide fields) per number of the tables: ``<call>_ms`` (median, std over the
    repeats), ``<call>_x_floor``, ``<call>_peak_mb`` per model and D, and ``<call>_ms_ratio`` for the pairs in
    ``RATIOS``."""
    records: list[dict] = []

    def record(method: str, dim: int, metric: str, value: float, std: Optional[float] = None) -> None:
        records.append({"dataset": f"synthetic-gmm-D{dim}", "method": method, "metric": metric, "value": value, "std": std})

    for model in models:
        for dim in dims:
            res = results[(model, dim)]
            for call in CALLS:
                m = res[call]
                record(f"probflux-{model}", dim, f"{call}_ms", m.median_ms, m.std_ms)
                record(f"probflux-{model}", dim, f"{call}_x_floor", m.median_ms / res["floor"].median_ms)
                record(f"probflux-{model}", dim, f"{call}_peak_mb", m.peak_mb)
    for num, den in RATIOS:
        if num in models and den in models:
            for dim in dims:
                for call in CALLS:
                    ratio = results[(num, dim)][call].median_ms / results[(den, dim)][call].median_ms
                    record(f"probflux-{num}/probflux-{den}", dim, f"{call}_ms_ratio", ratio)
    return records


def render_tables(records: list[dict]) -> str:
    """The markdown tables of ``benchmarks/RESULTS.md`` (section ``core``) from the records of one run."""
    dim_of = {r["dataset"]: int(r["dataset"].rsplit("-D", 1)[1]) for r in records}
    value = {(r["method"], dim_of[r["dataset"]], r["metric"]): r for r in records}
    models = [m for m in dict.fromkeys(r["method"] for r in records) if "/" not in m]
    dims = sorted(set(dim_of.values()))

    def table(first: list[str], keys: list[tuple], cell: Callable[[tuple, str], str]) -> str:
        """Rows ``keys = (method, D)``; the first columns are the model and D, or D alone (``first == ["D"]``)."""
        label = (lambda k: [str(k[1])]) if first == ["D"] else (lambda k: [k[0].removeprefix("probflux-"), str(k[1])])
        return markdown_table(first, [(label(k), [cell(k, c) for c in CALLS]) for k in keys])

    def ms(key: tuple, call: str) -> str:
        r = value[(*key, f"{call}_ms")]
        return f"{r['value']:.1f}" + ("" if r["std"] is None else f" ±{r['std']:.1f}")

    per_model = [(m, d) for m in models for d in dims if (m, d, "floor_ms") in value]
    f_b = "(f+b) = forward + backward of `.sum()` to the parameters; (f) = forward only"
    parts = [f"Time per call, ms (median ± std over the repeats); {f_b}; train_step = full step incl. Adam",
             table(["model", "D"], per_model, ms),
             "Multiple of the floor (median time / median floor time, same model and D)",
             table(["model", "D"], per_model, lambda k, c: f"{value[(*k, f'{c}_x_floor')]['value']:.2f}"),
             "Peak memory allocated by one call, MB (torch.profiler allocation timeline)",
             table(["model", "D"], per_model, lambda k, c: f"{value[(*k, f'{c}_peak_mb')]['value']:.1f}")]
    for num, den in RATIOS:
        pair = f"probflux-{num}/probflux-{den}"
        keys = [(pair, d) for d in dims if (pair, d, "floor_ms_ratio") in value]
        if keys:
            parts += [f"Time ratio {num} / {den} (median ms over median ms)",
                      table(["D"], keys, lambda k, c: f"{value[(*k, f'{c}_ms_ratio')]['value']:.2f}")]
    from tables import commands

    head = commands(records)
    return "\n\n".join(([f"Command:\n\n{head}"] if head else []) + parts)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", help="dimensions D (default 2 5 10 20; --quick: 2 5)")
    p.add_argument("--n", type=int, help="points per call N (default 4096; --quick: 1024)")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (default 5; --quick: 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (default 2)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run (default all)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--quick", action="store_true", help="smoke run: D in {2, 5}, N = 1024, 2 repeats")
    p.add_argument("--out", help="JSON output (default benchmarks/results/core.json; --quick: core-quick.json)")
    p.add_argument("--tables", action="store_true",
                   help="only regenerate the core section of benchmarks/RESULTS.md from benchmarks/results/core.json")
    args = p.parse_args(argv)
    q = args.quick
    args.dims = args.dims or ([2, 5] if q else [2, 5, 10, 20])
    args.n = args.n or (1024 if q else 4096)
    args.repeats = args.repeats or (2 if q else 5)
    args.out = args.out or os.path.join("benchmarks", "results", "core-quick.json" if q else "core.json")
    if min(args.dims) < 1 or args.n < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--dims, --n and --repeats must be positive and --warmup non-negative")
    return args


def main() -> None:
    args = parse_args()
    if args.tables:
        from tables import render

        render("core")
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = shlex.join(sys.orig_argv)
    print(f"# {command}\n# torch {torch.__version__}, {torch.get_num_threads()} threads, N = {args.n}, "
          f"float32, CPU, warmup {args.warmup}, repeats {args.repeats}", flush=True)
    start = time.perf_counter()
    results = {}
    for model in args.models:
        for dim in args.dims:
            t0 = time.perf_counter()
            results[(model, dim)] = run_model(model, dim, args.n, args.warmup, args.repeats)
            print(f"  {model} D={dim}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    records = [{"benchmark": "core", **r, "seeds": 1, "wall_seconds": wall, "command": command}
               for r in measurement_records(results, args.models, args.dims)]
    print(f"\n{render_tables(records)}\n\n# wall {wall:.1f} s")
    write_json(args.out, records)
    print(f"# wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
