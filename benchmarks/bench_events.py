"""Spatio-temporal events: test spatial NLL per event of probflux models vs a time-varying CNF (Neural STPP style).

Same data, same CPU-time budget per run (one thread), one process; every model is trained on the pooled training events of
its data set with coordinates standardised by the training-event mean/std (Neural STPP protocol) and scored by
``-mean log p(x_i | t_i [, history_i])`` over all test events, in that standardised space (docs/mathematics.md §9).

Rows (``method`` in ``benchmarks/results/events.json``):

* ``probflux-factorized`` — :class:`probflux.FactorizedMixture` of ``x`` given the event time (the paper's setting);
* ``probflux-autoregressive`` — :class:`probflux.AutoregressiveMixture`; its density does not depend on the flux
  (``kr`` or ``sigmoid`` only change the velocity, never ``log_prob``; ``tests/test_stpp.py`` checks the two
  give identical likelihoods and gradients), so one training run scores both fluxes;
* ``probflux-history`` — the factorized density conditioned on the newest 16 past events of the sequence
  (:func:`probflux.stpp.history_context` → :class:`probflux.stpp.HistoryEncoder` inside
  :class:`probflux.Conditioned`);
* ``probflux-selfexciting`` — :meth:`probflux.stpp.SelfExciting.from_events`: a data-anchored background of 2,000
  Gaussian kernels at training locations (the other training events are fitted) plus age-weighted isotropic kernels at
  the newest 16 past events; batch 512, lr 1e-2, EMA 0.99 (the settings of ``examples/events_selfexciting.py``);
  its test-NLL curve (for the CNF comparison) is recorded as ``run_ours``'s;
* ``probflux-kernelhistory`` — :class:`probflux.stpp.kernel_history.KernelHistory`, the kernel baseline as a density
  with an exact flux, at the validation optimum of :func:`probflux.stpp.kernel_search.tune_fast`: a coordinate-descent
  search from scratch (it does not reuse the baseline's grid) over the background bandwidth (fixed or adaptive), the
  history bandwidth, ``k`` up to 128, the history weights' age decay and the history weight's dependence on the history
  size and the time since the newest event, on truncated kernel sums exact to 1e-6 (``probflux.stpp.kernel_sums``).
  Deterministic (one run); CPU seconds are the whole fit; its anytime curve is the test NLL of the search's incumbent
  after each stage. ``--kh-refine SECONDS`` adds gradient refinement with early stopping, measured not to help;
* ``probflux-markovmixture`` — :class:`probflux.stpp.markov_mixture.MarkovMixture`: 40 diagonal Gaussians (k-means
  start, inside the budget) whose weights are Hawkes intensities excited by the newest 16 events' responsibilities;
* ``cnf-time-varying`` — ``benchmarks/peers/cnf_stpp.py`` (dopri5, tol 1e-4, exact trace);
* ``kernel-baseline`` — ``benchmarks/peers/kernel_stpp.py``: a KDE of the training locations plus Gaussian kernels at
  the newest k strictly earlier events of the sequence, ``h_b, h_l, w, k`` by grid search on the validation events
  (coarse, then 4x finer around the best), the test events scored once through the same
  ``spatial_log_likelihood(model, model_points(test, history=64))`` as our models; deterministic (one "seed").

Test scores use the weights with the best validation NLL (ours: EMA weights, validation every 50 steps; CNF: every
50 steps on up to 4,096 validation events, evaluations outside its clock); small training sets (COVID-19: 3,925
events) overfit within the budget otherwise.

Budgets: ``--budget`` seconds of this process's CPU time (``time.process_time``) for every method. What they count
differs, and in the CNF's favour: our ``fit(max_seconds=..., clock=...)`` counts its validation passes (every 50
steps) and the curve evaluations against the budget (the curve evaluations are subtracted from the reported
times afterwards), while ``benchmarks/peers/cnf_stpp.py`` runs its validation and curve evaluations outside its
clock. The recorded figures were measured so.

Also: CPU time for our models to first reach the CNF's final test NLL (test NLL of the raw, non-EMA model on a
fixed subset of up to 2,000 test events every 25 steps; the evaluations count against our budget but are
subtracted from the reported times) and the per-step cost ratio;
temporal log-likelihood per event of a Poisson and an exponential Hawkes process (data time units).

    .venv/bin/python benchmarks/bench_events.py --seeds 3 --budget 30                  # the table in RESULTS.md
    .venv/bin/python benchmarks/bench_events.py --datasets earthquakes_jp pinwheel --methods probflux-factorized \\
        probflux-history cnf-time-varying --budget 60 --cnf-budget 300 --seeds 1 --no-temporal \\
        --out benchmarks/results/events_cnf_long.json                                  # a 5x longer CNF run
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch

import probflux as pf
from probflux.checkpoint import load_checkpoint, model_weights
from probflux.data import events as ev
from probflux.data.points import TemporalPoints
from probflux.evaluation import subsample
from probflux.io import write_json
from probflux.objectives import NegativeLogLikelihood
from probflux.stpp import HawkesProcess, HistoryEncoder, PoissonProcess, SelfExciting, model_points, spatial_log_likelihood
from probflux.stpp.kernel_history import KernelHistory, cross_fit_background, refine
from probflux.stpp.kernel_search import FAST_KS, tune_fast
from probflux.stpp.markov_mixture import MarkovMixture, kmeans_components
from probflux.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from cnf_stpp import cnf_mean_log_likelihood, fit_cnf  # noqa: E402
from kernel_stpp import DEFAULT_K, KernelSTPP, slots_from_context, tune_refined  # noqa: E402

HISTORY = 16
# Budgets are CPU seconds of this single-threaded process: other load on a shared machine does not eat into them,
# so ours and the CNF get the same compute whatever else runs (on an idle machine they equal wall seconds).
CLOCK = time.process_time
CURVE_EVENTS = 2000

# docs/mathematics.md §9 (Neural STPP Table; the paper). Only for the data sets the published tables have.
PUBLISHED = {
    "earthquakes_jp": {"time-varying CNF": 1.459, "Jump CNF": 1.007, "Attentive CNF": 1.237,
                       "paper factorized": 1.217, "paper autoregressive": 1.184},
    "covid_nj": {"time-varying CNF": 2.002, "Jump CNF": 1.904, "Attentive CNF": 1.864,
                 "paper factorized": 1.846, "paper autoregressive": 1.732},
    "citibike": {"time-varying CNF": 2.132, "Jump CNF": 2.155, "Attentive CNF": 2.095,
                 "paper factorized": 1.462, "paper autoregressive": 1.239},
    "pinwheel": {"time-varying CNF": 2.185, "Jump CNF": 1.605, "Attentive CNF": 1.623,
                 "paper factorized": 2.028, "paper autoregressive": 1.936},
}


# ------------------------------------------------------------------------------------------------ data sets

ALIASES = {"pinwheel": "pinwheel_stpp"}  # the published tables' name


def load(name: str) -> SimpleNamespace:
    """Train/val/test :class:`EventSequences` (standardised with training-event statistics) and a protocol note
    (:func:`probflux.data.events.event_splits`)."""
    tr, va, te, note = ev.event_splits(ALIASES.get(name, name))
    st = tr.spatial_stats()
    tr, va, te = (s.standardize(st) for s in (tr, va, te))
    return SimpleNamespace(name=name, train=tr, val=va, test=te, note=note, span=tr.window[1] - tr.window[0])


# ------------------------------------------------------------------------------------------------ models

def build(method: str, seed: int) -> pf.TimeDensity:
    torch.manual_seed(seed)
    if method == "probflux-factorized":
        return pf.FactorizedMixture(2, components=64, hidden=256)
    if method == "probflux-autoregressive":
        return pf.AutoregressiveMixture(2, components=32, hidden=256, layers=3)
    if method == "probflux-history":
        inner = pf.FactorizedMixture(2, components=64, hidden=256, context_dim=64)
        return pf.Conditioned(inner, HistoryEncoder(2, events=HISTORY, hidden=64, out_features=64))
    if method == "probflux-history-ar":
        inner = pf.AutoregressiveMixture(2, components=32, hidden=256, layers=3, context_dim=64)
        return pf.Conditioned(inner, HistoryEncoder(2, events=HISTORY, hidden=64, out_features=64))
    raise ValueError(method)


def _cfg() -> TrainConfig:
    # the warm-up + cosine schedule runs over the CPU-time budget (fit(time_schedule=True)): 2% warm-up;
    # validation NLL every 50 steps selects the weights that are tested (best.pt)
    return TrainConfig(steps=100_000, batch_size=1024, lr=3e-3, warmup=2_000, ema=0.999,
                       device="cpu", eval_every=50, log_every=25, checkpoint_every=10**9)


def run_ours(method: str, data: SimpleNamespace, budget: float, seed: int) -> dict:
    hist = HISTORY if method.startswith("probflux-history") else None
    P, V, T = model_points(data.train, hist), model_points(data.val, hist), model_points(data.test, hist)
    P, V = (SimpleNamespace(t=p.t.float(), x=p.x.float(), context=None if p.context is None else p.context.float()) for p in (P, V))
    sub = subsample(torch.arange(T.t.shape[0]), CURVE_EVENTS, seed=0)  # fixed curve events (probflux.evaluation)
    Tsub = SimpleNamespace(t=T.t[sub], x=T.x[sub], context=None if T.context is None else T.context[sub])
    dyn = pf.Dynamics(build(method, seed))
    curve, spent = [], [0.0]

    def callback(step: int, record: dict) -> None:
        a = CLOCK()
        dyn.eval()
        curve.append((step, -spatial_log_likelihood(dyn.density, Tsub)))
        dyn.train()
        spent[0] += CLOCK() - a
        curve[-1] = (step, curve[-1][1], spent[0])

    start = CLOCK()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(dyn, NegativeLogLikelihood(), P, val=V, config=_cfg(), seed=seed, progress=False, max_seconds=budget,
                  time_schedule=True, callback=callback, run_dir=tmp, clock=CLOCK)
        wall = CLOCK() - start
        best = load_checkpoint(Path(tmp) / "checkpoints" / "best.pt")
    model = pf.Dynamics(build(method, seed))
    model.load_state_dict(model_weights(best, ema=True))
    train_s = wall - spent[0]
    nll = -spatial_log_likelihood(model.density, T)
    # CPU time (without the curve evaluations) at each recorded step
    per_step = train_s / max(res.step, 1)
    curve = [(s, v, s * per_step) for s, v, _ in curve]
    return {"nll": nll, "steps": res.step, "best_step": res.best_step, "train_seconds": train_s, "step_seconds": per_step, "curve": curve}


SE_KERNELS, SE_EVENTS = 2000, 16


def selfexciting_config() -> TrainConfig:
    """Training settings of ``probflux-selfexciting`` (those of ``examples/events_selfexciting.py``'s defaults)."""
    return TrainConfig(steps=100_000, batch_size=512, lr=1e-2, warmup=50, ema=0.99, device="cpu", eval_every=50,
                       log_every=25, checkpoint_every=10**9, eval_points=2048)


def fit_best(model: pf.TimeDensity, fitP, V, budget: float, seed: int, config: TrainConfig) -> tuple[pf.TimeDensity, object, float]:
    """``fit`` under a CPU budget; returns the EMA weights with the best validation NLL, the result and CPU seconds."""
    density, res, train_s, _ = fit_curve(model, fitP, V, budget, seed, config)
    return density, res, train_s


def curve_step(step: int) -> bool:
    """The steps at which :func:`fit_curve` scores the curve: 1, 2, 4, 8, 16, then every 25."""
    return step in (1, 2, 4, 8, 16) or step % 25 == 0


def fit_curve(model: pf.TimeDensity, fitP, V, budget: float, seed: int, config: TrainConfig, curve_points=None):
    """:func:`fit_best` that also records, when ``curve_points`` (``t, x, context`` of fixed test events) is given, the
    raw model's test NLL on them at the steps of :func:`curve_step` as ``[(step, nll, CPU seconds)]``, as
    :func:`run_ours` does: the evaluations count against the budget but are subtracted from the recorded seconds (and
    from the returned CPU seconds). With a curve, ``config.log_every`` is set to 1 (logging only)."""
    dyn = pf.Dynamics(model)
    curve, spent = [], [0.0]
    if curve_points is not None:
        config = dataclasses.replace(config, log_every=1)

    def callback(step: int, record: dict) -> None:
        if not curve_step(step):
            return
        a = CLOCK()
        dyn.eval()
        v = -spatial_log_likelihood(dyn.density, curve_points)
        dyn.train()
        spent[0] += CLOCK() - a
        curve.append((step, v, 0.0))

    start = CLOCK()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(dyn, NegativeLogLikelihood(), fitP, val=V, config=config, seed=seed, progress=False, max_seconds=budget,
                  time_schedule=True, run_dir=tmp, clock=CLOCK, callback=None if curve_points is None else callback)
        train_s = CLOCK() - start - spent[0]
        best = load_checkpoint(Path(tmp) / "checkpoints" / "best.pt")
    dyn.load_state_dict(model_weights(best, ema=True))
    dyn.eval()
    per_step = train_s / max(res.step, 1)
    return dyn.density, res, train_s, [(st, v, st * per_step) for st, v, _ in curve]


def _curve_points(T) -> SimpleNamespace:
    """The fixed curve events (up to ``CURVE_EVENTS`` test events, :func:`probflux.evaluation.subsample` seed 0)."""
    sub = subsample(torch.arange(T.t.shape[0]), CURVE_EVENTS, seed=0)
    return SimpleNamespace(t=T.t[sub].float(), x=T.x[sub].float(), context=None if T.context is None else T.context[sub].float())


def run_selfexciting(data: SimpleNamespace, budget: float, seed: int) -> dict:
    """``probflux-selfexciting``: fitted on the training events that are not background centres."""
    P, V, T = (model_points(s, SE_EVENTS) for s in (data.train, data.val, data.test))
    torch.manual_seed(seed)
    model, rest = SelfExciting.from_events(P.x, kernels=min(SE_KERNELS, P.x.shape[0] // 2), events=SE_EVENTS, seed=seed)
    fitP = TemporalPoints._unchecked(P.t[rest].float(), P.x[rest].float(), P.context[rest].float(), "fit")
    Vf = TemporalPoints._unchecked(V.t.float(), V.x.float(), V.context.float(), "val")
    model, res, train_s, curve = fit_curve(model, fitP, Vf, budget, seed, selfexciting_config(), _curve_points(T))
    nll = -spatial_log_likelihood(model, T)
    return {"nll": nll, "steps": res.step, "best_step": res.best_step, "train_seconds": train_s,
            "step_seconds": train_s / max(res.step, 1), "curve": curve}


KH_FIT_POINTS = 20_000  # training events the history part of probflux-kernelhistory is fitted on (a seeded subsample)
_TUNED: dict[str, tuple] = {}  # data set -> (kernel-baseline Tuned, its CPU seconds): tuned once per process


_CNF: dict[str, list] = {}  # data set -> recorded cnf-time-varying runs (per seed), for --cnf-from


def load_cnf(path: str) -> None:
    """The CNF runs (per seed: curve, final NLL, CPU seconds) recorded in a ``*_curves.json`` (``--cnf-from``), so
    that later runs of our models are compared with the same CNF runs without training it again."""
    for name, methods in json.loads(Path(path).read_text()).items():
        if methods.get("cnf-time-varying"):
            _CNF[name] = methods["cnf-time-varying"]


def load_tuned(path: str) -> None:
    """Reuse the kernel-baseline grid searches recorded in a ``*_curves.json`` of an earlier run (``--tuned-from``;
    deterministic, so the same values; their recorded CPU seconds are charged again)."""
    from probflux.stpp.kernel_history import Tuned

    for name, methods in json.loads(Path(path).read_text()).items():
        for r in methods.get("kernel-baseline", [])[:1]:
            _TUNED[name] = (Tuned(**r["tuned"]), float(r["train_seconds"]))


def tuned_baseline(data: SimpleNamespace):
    """The kernel baseline's validation grid search (``tune_refined``), computed once per data set and process."""
    if data.name not in _TUNED:
        a = CLOCK()
        V = model_points(data.val, max(DEFAULT_K))
        tu = tune_refined(data.train.events().x, V.x, slots_from_context(V.context, V.x.shape[1]))
        _TUNED[data.name] = (tu, CLOCK() - a)
    return _TUNED[data.name]


def run_kernelhistory(data: SimpleNamespace, budget: float, seed: int, refine_seconds: float = 0.0) -> dict:
    """``probflux-kernelhistory``: :class:`probflux.stpp.kernel_history.KernelHistory` at the validation optimum of
    :func:`probflux.stpp.kernel_search.tune_fast`, a coordinate-descent search from scratch on truncated kernel sums
    (no reuse of the kernel baseline's grid); deterministic. CPU seconds: the whole fit (validation histories, the
    search, building the model). The search's stages give an anytime curve: the test NLL of each stage's incumbent on
    the fixed curve events (scored afterwards, outside the clock) at the CPU seconds the search had spent by then.
    With ``refine_seconds > 0`` the history part is then trained by :func:`~probflux.stpp.kernel_history.refine`
    (early stopping on validation) for that long."""
    a = CLOCK()
    torch.manual_seed(seed)
    E = data.train.events()
    V = model_points(data.val, max(FAST_KS))
    offset = CLOCK() - a  # the validation histories: part of every stage's time
    ext, trail = tune_fast(E.x, V.t, V.x, V.context, seed=seed, clock=CLOCK)
    model = KernelHistory.from_tuned(E.x, ext).double()
    k = model.events
    ref = None
    if refine_seconds > 0:
        V = model_points(data.val, k)
        P = model_points(data.train, k)
        groups = torch.repeat_interleave(torch.arange(len(data.train)), torch.tensor(data.train.lengths))
        pts = subsample(torch.arange(P.t.shape[0]), KH_FIT_POINTS, seed=seed)
        log_b = cross_fit_background(E.x, groups, model.h_b, block=max(1, len(data.train) // 20), points=pts)
        fitP = (P.t[pts], P.x[pts], P.context[pts], log_b)
        Vb = (V.t, V.x, V.context, model.log_background(V.t.double(), V.x.double()))
        ref = refine(model, fitP, Vb, seconds=refine_seconds, seed=seed, clock=CLOCK)
    train_s = CLOCK() - a
    T = model_points(data.test, max(FAST_KS))
    nll = -spatial_log_likelihood(model, model_points(data.test, k))
    sub = subsample(torch.arange(T.t.shape[0]), CURVE_EVENTS, seed=0)  # the curve events of run_ours
    curve = []
    for i, (stage, secs, tu) in enumerate(trail):
        b = CLOCK()
        m = KernelHistory.from_tuned(E.x, tu).double()
        build = CLOCK() - b  # building the stage's density counts towards its time (scoring it does not)
        Ts = model_points(data.test, m.events)
        Ts = SimpleNamespace(t=Ts.t[sub], x=Ts.x[sub], context=Ts.context[sub])
        curve.append((i, -spatial_log_likelihood(m, Ts), offset + secs + build))
        print(f"      stage {stage:20s} {curve[-1][2]:6.1f} s  val ll {tu.val_ll:.4f}  curve test NLL {curve[-1][1]:.4f}", flush=True)
    print(f"    kernelhistory: {ext}"
          + (f"\n      refined: validation ll {ref.start_val_ll:.4f} -> {ref.val_ll:.4f} (kept step {ref.best_step} of {ref.steps})"
             if ref else "") + f"\n      fit {train_s:.1f} s", flush=True)
    return {"nll": nll, "steps": ref.steps if ref else 0, "best_step": ref.best_step if ref else 0,
            "train_seconds": train_s, "tuned": vars(ext), "stages": [s for s, _, _ in trail],
            "step_seconds": ref.seconds / max(ref.steps, 1) if ref else float("nan"), "curve": curve}


MM_COMPONENTS, MM_EVENTS = 40, 16


def run_markov(data: SimpleNamespace, budget: float, seed: int) -> dict:
    """``probflux-markovmixture``: :class:`probflux.stpp.markov_mixture.MarkovMixture` with ``MM_COMPONENTS``
    diagonal Gaussians started at k-means of the training locations (inside the budget) and Hawkes-excited weights over
    the newest ``MM_EVENTS`` events; the settings of ``probflux-selfexciting`` (batch 512, lr 1e-2, EMA 0.99)."""
    P, V, T = (model_points(s, MM_EVENTS) for s in (data.train, data.val, data.test))
    a = CLOCK()
    torch.manual_seed(seed)
    model = MarkovMixture(*kmeans_components(P.x, MM_COMPONENTS, seed=seed), events=MM_EVENTS)
    init_s = CLOCK() - a
    f = lambda p, n: TemporalPoints._unchecked(p.t.float(), p.x.float(), p.context.float(), n)  # noqa: E731
    model, res, train_s, curve = fit_curve(model, f(P, "fit"), f(V, "val"), budget - init_s, seed, selfexciting_config(),
                                           _curve_points(T))
    nll = -spatial_log_likelihood(model, T)
    return {"nll": nll, "steps": res.step, "best_step": res.best_step, "train_seconds": train_s + init_s,
            "step_seconds": train_s / max(res.step, 1), "curve": [(st, v, sec + init_s) for st, v, sec in curve]}


def run_cnf(data: SimpleNamespace, budget: float, seed: int) -> dict:
    E, T = data.train.events(), data.test.events()
    sub = subsample(torch.arange(T.t.shape[0]), CURVE_EVENTS, seed=0)
    # Neural STPP feeds the data's own time units (windows of 7-30 units); longer windows (BH conflicts: 365 days)
    # are shrunk to 30 units, else the ODE spans hundreds of time units and the CNF diverges.
    scale = min(1.0, 30.0 / data.span)
    t_tr, x_tr = ((E.t - data.train.window[0]) * scale).float(), E.x.float()
    t_te, x_te = ((T.t - data.test.window[0]) * scale).float(), T.x.float()
    V = data.val.events()
    vsub = subsample(torch.arange(V.t.shape[0]), 4096, seed=0)
    t_va, x_va = ((V.t[vsub] - data.val.window[0]) * scale).float(), V.x[vsub].float()
    curve, best = [], {"val": math.inf, "state": None, "step": 0}

    def callback(step: int, clock: float, model) -> None:
        curve.append((step, -cnf_mean_log_likelihood(model, t_te[sub], x_te[sub]), clock))
        if step % 50 == 0:
            v = -cnf_mean_log_likelihood(model, t_va, x_va)
            if v < best["val"]:
                best.update(val=v, state=copy.deepcopy(model.state_dict()), step=step)

    model, info = fit_cnf(t_tr, x_tr, seconds=budget, seed=seed, callback=callback, callback_every=25, clock=CLOCK)
    callback(50 * (info["steps"] // 50 + 1), info["seconds"], model)  # the final weights are a candidate too
    curve.pop()
    model.load_state_dict(best["state"])
    nll = -cnf_mean_log_likelihood(model, t_te, x_te)
    return {"nll": nll, "steps": info["steps"], "best_step": best["step"], "train_seconds": info["seconds"],
            "step_seconds": info["step_seconds"], "curve": curve}


def run_kernel(data: SimpleNamespace) -> dict:
    """The tuned kernel baseline (validation only), scored once on the test events; CPU seconds include the tuning."""
    tu, tune_s = tuned_baseline(data)
    a = CLOCK()
    T = model_points(data.test, max(DEFAULT_K))
    model = KernelSTPP(data.train.events().x, tu.h_b, tu.h_l, tu.w, tu.k)
    nll = -spatial_log_likelihood(model, T)
    return {"nll": nll, "tuned": vars(tu), "train_seconds": tune_s + CLOCK() - a, "steps": 0, "step_seconds": float("nan"),
            "curve": []}


def time_to_reach(curve: list, target: float) -> Optional[float]:
    for _, v, t in curve:
        if v <= target:
            return t
    return None


# ------------------------------------------------------------------------------------------------ main

def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["earthquakes_jp", "pinwheel", "covid_nj", "citibike",
                                                     "earthquakenpp_japan_25", "earthquakenpp_comcat_25", "bh_conflicts"])
    p.add_argument("--methods", nargs="+",
                   default=["probflux-factorized", "probflux-autoregressive", "probflux-history", "cnf-time-varying"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=30.0, help="CPU seconds of training per run (each method, each seed; one thread)")
    p.add_argument("--cnf-budget", type=float, default=None, help="training seconds of the CNF (default: --budget)")
    p.add_argument("--threads", type=int, default=1, help="torch threads; budgets are CPU seconds, so keep 1")
    p.add_argument("--no-temporal", action="store_true", help="skip the Poisson/Hawkes temporal rows")
    p.add_argument("--kh-refine", type=float, default=0.0, metavar="SECONDS",
                   help="probflux-kernelhistory: CPU seconds of gradient refinement after the validation grid (default 0: none)")
    p.add_argument("--out", default="benchmarks/results/events.json")
    p.add_argument("--table", action="store_true", help="only print the tables of the records already in --out")
    p.add_argument("--add", nargs="+", default=None, metavar="JSON",
                   help="upsert the records of these files (per dataset, method, metric) into --out, e.g. a kernel-baseline run")
    p.add_argument("--add-metrics", nargs="+", default=None, metavar="METRIC",
                   help="with --add: upsert only the records of these metrics (e.g. the CNF comparisons of a curve run)")
    p.add_argument("--tables", action="store_true", help="re-render the events section of benchmarks/RESULTS.md from --out and exit")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="merge result files of runs on disjoint parts (later files win per data set and method), "
                        "recompute the CNF comparisons from their *_curves.json, write --out and print the tables")
    p.add_argument("--tuned-from", nargs="+", default=None, metavar="CURVES_JSON",
                   help="reuse the kernel-baseline grid searches of an earlier run's *_curves.json (deterministic)")
    p.add_argument("--cnf-from", nargs="+", default=None, metavar="CURVES_JSON",
                   help="compare with the cnf-time-varying runs recorded in these *_curves.json (seconds to reach its final "
                        "test NLL, ratios) instead of training the CNF again")
    args = p.parse_args(argv)
    for f in args.tuned_from or []:
        load_tuned(f)
    for f in args.cnf_from or []:
        load_cnf(f)
    if args.merge:
        merge(args.merge, Path(args.out))
        print_table(json.loads(Path(args.out).read_text()))
        return
    if args.table:
        print_table(json.loads(Path(args.out).read_text()))
        return
    if args.add:
        out = Path(args.out)
        recs = {(r["dataset"], r["method"], r["metric"]): r for r in json.loads(out.read_text())}
        for f in args.add:
            recs.update({(r["dataset"], r["method"], r["metric"]): r for r in json.loads(Path(f).read_text())
                         if args.add_metrics is None or r["metric"] in args.add_metrics})
        write_json(out, list(recs.values()))
        return
    if args.tables:
        from tables import RESULTS_MD, replace_section

        replace_section(RESULTS_MD, "events", render_tables(json.loads(Path(args.out).read_text())))
        return
    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_events.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    records: list[dict] = []
    raw: dict = {}

    def record(dataset: str, method: str, metric: str, values: list[float], wall: float) -> None:
        v = [x for x in values if x is not None and math.isfinite(x)]
        records.append({"benchmark": "events", "dataset": dataset, "method": method, "metric": metric,
                        "value": float(np.mean(v)) if v else None, "std": float(np.std(v)) if len(v) > 1 else 0.0,
                        "seeds": len(v), "cpu_seconds": wall, "command": command})

    for name in args.datasets:
        data = load(name)
        print(f"\n== {name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test sequences, "
              f"{data.train.n_events} / {data.test.n_events} events; {data.note}", flush=True)
        results: dict[str, list[dict]] = {}
        for method in args.methods:
            results[method] = []
            for seed in range(args.seeds):
                if method == "kernel-baseline":
                    if seed > 0:
                        break  # deterministic: one run
                    r = run_kernel(data)
                    print(f"  kernel-baseline tuned on validation: {r['tuned']}", flush=True)
                elif method == "probflux-selfexciting":
                    r = run_selfexciting(data, args.budget, seed)
                elif method == "probflux-markovmixture":
                    r = run_markov(data, args.budget, seed)
                elif method == "probflux-kernelhistory":
                    if seed > 0 and not args.kh_refine:
                        break  # deterministic without the gradient refinement: one run
                    r = run_kernelhistory(data, args.budget, seed, args.kh_refine)
                elif method == "cnf-time-varying":
                    r = run_cnf(data, args.cnf_budget or args.budget, seed)
                else:
                    r = run_ours(method, data, args.budget, seed)
                results[method].append(r)
                print(f"  {method:26s} seed {seed}: test NLL {r['nll']:.3f}  ({r['steps']} steps, {r['train_seconds']:.1f} s, "
                      f"{1e3 * r['step_seconds']:.1f} ms/step)", flush=True)
            rs = results[method]
            record(name, method, "test_spatial_nll_per_event", [r["nll"] for r in rs], float(np.mean([r["train_seconds"] for r in rs])))
            if method not in ("kernel-baseline", "probflux-kernelhistory") or args.kh_refine:
                record(name, method, "step_seconds", [r["step_seconds"] for r in rs], float(np.mean([r["train_seconds"] for r in rs])))
        cnf = results.get("cnf-time-varying") or _CNF.get(name)
        if cnf:
            for method, rs in results.items():
                if method in ("cnf-time-varying", "kernel-baseline") or not any(r["curve"] for r in rs):
                    continue
                # the deterministic kernel history (one run) is compared with every CNF seed; otherwise seed i with seed i
                pairs = [(rs[0], c) for c in cnf] if method == "probflux-kernelhistory" and len(rs) == 1 else list(zip(rs, cnf))
                reach = [time_to_reach(r["curve"], c["curve"][-1][1] if c["curve"] else c["nll"]) for r, c in pairs]
                speedup = [c["train_seconds"] / t if t else None for t, (_, c) in zip(reach, pairs)]
                wall = float(np.mean([r["train_seconds"] for r in rs]))
                record(name, method, "seconds_to_reach_cnf_final_nll", reach, wall)
                record(name, method, "cnf_seconds_over_ours_to_reach", speedup, wall)
                if all(math.isfinite(r["step_seconds"]) for r, _ in pairs):
                    record(name, method, "cnf_step_seconds_over_ours", [c["step_seconds"] / r["step_seconds"] for r, c in pairs], wall)
        if not args.no_temporal:
            for label, model in (("poisson", PoissonProcess()), ("hawkes", HawkesProcess())):
                a = CLOCK()
                model.fit(data.train)
                with torch.no_grad():
                    ll = float(model.log_likelihood(data.test).sum()) / data.test.n_events
                record(name, f"probflux-temporal-{label}", "test_temporal_loglik_per_event", [ll], CLOCK() - a)
                print(f"  temporal {label:8s}: test log-likelihood per event {ll:.3f} (time in data units)", flush=True)
        raw[name] = {m: [{k: v for k, v in r.items()} for r in rs] for m, rs in results.items()}
        raw[name]["note"] = data.note
        # write after every data set so a long run keeps what it has
        old = json.loads(out.read_text()) if out.exists() and out.stat().st_size else []
        replaced = args.methods + ["probflux-temporal-poisson", "probflux-temporal-hawkes"]
        keep = [r for r in old if not (r.get("dataset") in {rec["dataset"] for rec in records} and r.get("method") in replaced)]
        write_json(out, keep + records)
        write_json(out.with_name(out.stem + "_curves.json"), raw)
    print_table(json.loads(out.read_text()))


COMPARISONS = ("seconds_to_reach_cnf_final_nll", "cnf_seconds_over_ours_to_reach", "cnf_step_seconds_over_ours")


def merge(files: list[str], out: Path) -> None:
    """Merge the records (and curves) of several runs; the CNF comparisons are recomputed per seed from the curves."""
    records: dict[tuple, dict] = {}
    curves: dict[str, dict] = {}
    for f in files:
        for r in json.loads(Path(f).read_text()):
            if r["metric"] not in COMPARISONS:
                records[(r["dataset"], r["method"], r["metric"])] = r
        cpath = Path(f).with_name(Path(f).stem + "_curves.json")
        for name, methods in json.loads(cpath.read_text()).items():
            curves.setdefault(name, {}).update(methods)
    for name, methods in curves.items():
        cnf = methods.get("cnf-time-varying")
        if not cnf:
            continue
        for method, rs in methods.items():
            if method in ("cnf-time-varying", "kernel-baseline", "note") or not any(r["curve"] for r in rs):
                continue
            reach = [time_to_reach(r["curve"], c["curve"][-1][1] if c["curve"] else c["nll"]) for r, c in zip(rs, cnf)]
            speedup = [c["train_seconds"] / t if t else None for t, c in zip(reach, cnf)]
            steps = [c["step_seconds"] / r["step_seconds"] for r, c in zip(rs, cnf)]
            wall = float(np.mean([r["train_seconds"] for r in rs]))
            command = records.get((name, method, "test_spatial_nll_per_event"), {}).get("command", "")
            for metric, values in zip(COMPARISONS, (reach, speedup, steps)):
                v = [x for x in values if x is not None and math.isfinite(x)]
                records[(name, method, metric)] = {
                    "benchmark": "events", "dataset": name, "method": method, "metric": metric,
                    "value": float(np.mean(v)) if v else None, "std": float(np.std(v)) if len(v) > 1 else 0.0,
                    "seeds": len(v), "cpu_seconds": wall,
                    "command": command + " (merged: python benchmarks/bench_events.py --merge " + " ".join(files) + ")"}
    write_json(out, list(records.values()))
    write_json(out.with_name(out.stem + "_curves.json"), curves)


def _cell(r: Optional[dict], fmt: str = "{:.3f}") -> str:
    if r is None or r["value"] is None:
        return "—"
    return (fmt + " ± " + fmt).format(r["value"], r["std"]) if r["seeds"] > 1 else fmt.format(r["value"])


def print_table(records: list[dict]) -> None:
    """Markdown tables of every metric in ``records`` (data sets as columns)."""
    def table(metric: str, title: str, fmt: str = "{:.3f}", published: bool = False) -> None:
        rows = [r for r in records if r["metric"] == metric]
        if not rows:
            return
        datasets = list(dict.fromkeys(r["dataset"] for r in records if r["metric"] == "test_spatial_nll_per_event")) or \
            list(dict.fromkeys(r["dataset"] for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        print(f"\n{title}")
        print("| method | " + " | ".join(datasets) + " |")
        print("|---" * (len(datasets) + 1) + "|")
        for m in methods:
            cells = [_cell(next((r for r in rows if r["dataset"] == d and r["method"] == m), None), fmt) for d in datasets]
            print(f"| {m} | " + " | ".join(cells) + " |")
        if published:
            for label in ("time-varying CNF", "Jump CNF", "Attentive CNF", "paper factorized", "paper autoregressive"):
                cells = [f"{PUBLISHED[d][label]:.3f}" if d in PUBLISHED else "—" for d in datasets]
                print(f"| published: {label} | " + " | ".join(cells) + " |")

    table("test_spatial_nll_per_event", "test spatial NLL per event (mean ± std over seeds), lower is better", published=True)
    table("seconds_to_reach_cnf_final_nll", "training seconds to first reach the CNF's final test NLL (— : never within the budget)",
          "{:.1f}")
    table("cnf_seconds_over_ours_to_reach", "CNF training seconds / our seconds to reach the CNF's final test NLL", "{:.1f}")
    table("cnf_step_seconds_over_ours", "CNF seconds per step / ours (batch 1024 events both)", "{:.1f}")
    table("step_seconds", "seconds per training step", "{:.4f}")
    table("test_temporal_loglik_per_event", "temporal test log-likelihood per event (time in data units), higher is better")


CONTINUOUS = ("test_spatial_ll_per_event_km2", "test_temporal_ll_per_event")
REACH_NOTE = ("Trained models: CPU seconds until the test NLL on 2,000 fixed test events (raw weights; the older rows every "
              "25 steps, the self-exciting and Markov-mixture rows at steps 1, 2, 4, 8, 16, then every 25) first falls to "
              "the CNF's final one, seed i against CNF seed i (the CNF of the same run or, with `--cnf-from`, its recorded "
              "runs at 30 CPU s). `probflux-kernelhistory` is deterministic and trains nothing: its curve is the test NLL "
              "of the validation search's incumbent after each stage (`tune_fast`'s trail; the first: the KDE at 0.032 sd, "
              "built as the model with the history weight at its floor 0.01) at the CPU seconds of the fit spent by then, "
              "building that density included; it is compared with each of the 3 CNF seeds (hence 3 in its std).")


def render_cnf_long(records: list[dict]) -> str:
    """RESULTS.md's section for the 5x longer CNF run (``benchmarks/results/events_cnf_long.json``): the events
    tables of those records."""
    return render_tables(records).replace("from `benchmarks/results/events.json`",
                                          "from `benchmarks/results/events_cnf_long.json`", 1)


def render_tables(records: list[dict]) -> str:
    """The events section of RESULTS.md (markdown) from the records of ``benchmarks/results/events.json``."""
    from tables import commands, pivot

    windowed = [r for r in records if not r["dataset"].endswith("_continuous")]
    datasets = list(dict.fromkeys(r["dataset"] for r in windowed if r["metric"] == "test_spatial_nll_per_event"))
    low = lambda c, rs: min(range(len(rs)), key=lambda i: rs[i]["value"] if rs[i]["value"] is not None else math.inf)  # noqa: E731
    high = lambda c, rs: max(range(len(rs)), key=lambda i: rs[i]["value"] if rs[i]["value"] is not None else -math.inf)  # noqa: E731
    pub = [{"dataset": d, "method": f"published: {label}", "metric": "test_spatial_nll_per_event", "value": v, "seeds": 1}
           for label in ("time-varying CNF", "Jump CNF", "Attentive CNF", "paper factorized", "paper autoregressive")
           for d in datasets if d in PUBLISHED for v in [PUBLISHED[d][label]]]
    out = ["Generated by `benchmarks/bench_events.py --tables` from `benchmarks/results/events.json` (bold: best measured "
           "row per column; published rows are not bolded).", "",
           "**Neural STPP protocol: test spatial NLL per event** (standardised coordinates, mean ± std over seeds; lower is better)",
           "",
           pivot([r for r in windowed if r["metric"] == "test_spatial_nll_per_event"] + pub, rows=("method",), column="dataset",
                 columns=datasets, bold=lambda c, rs: low(c, [r for r in rs if not r["method"].startswith("published")])),
           ""]
    cont = [r for r in records if r["dataset"].endswith("_continuous")]
    if cont:
        rows = [dict(r, col=f"{r['dataset'].replace('earthquakenpp_', '').replace('_continuous', '')}: "
                            f"{'spatial LL /km²' if r['metric'] == CONTINUOUS[0] else 'temporal LL'}") for r in cont]
        out += ["**EarthquakeNPP continuous protocol** (one test period, every event conditioned on all earlier events of "
                "the catalog; spatial LL per event in log density per km², temporal LL per event with time in days; "
                "higher is better; `bench_events_continuous.py`)", "",
                pivot(rows, rows=("method",), column="col", bold=high), ""]
    for metric, title, digits in (
            ("seconds_to_reach_cnf_final_nll", "training CPU seconds to first reach the CNF's final test NLL", 1),
            ("cnf_seconds_over_ours_to_reach", "CNF training seconds / ours to reach the CNF's final test NLL", 1),
            ("cnf_step_seconds_over_ours", "CNF seconds per step / ours (batch 1024 events both)", 1),
            ("step_seconds", "CPU seconds per training step", 4),
            ("test_temporal_loglik_per_event", "temporal test LL per event, windows (time in data units), higher is better", 3)):
        rs = [r for r in windowed if r["metric"] == metric]
        if rs:
            from tables import fmt_value

            out += [f"**{title}**", "", pivot(rs, rows=("method",), column="dataset", columns=[d for d in datasets if any(
                r["dataset"] == d for r in rs)], cell=lambda r, d=digits: fmt_value(r, d)), ""]
            if metric == "seconds_to_reach_cnf_final_nll":
                out += [REACH_NOTE, ""]
    out += ["Commands:", "", commands(records)]
    return "\n".join(out)


if __name__ == "__main__":
    main()
