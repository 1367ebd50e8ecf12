"""From a :class:`~probflux.config.Config` to a trained, evaluated and plotted run directory.

A run directory holds::

    config.yaml            the resolved config
    metrics.jsonl          training log (one JSON line per log/eval step)
    checkpoints/           latest.pt (resume), best.pt (EMA weights at the best validation NLL)
    metrics.json           evaluation (see :func:`evaluate`)
    *.png, density.gif     figures (see :func:`make_plots`)

This module is the only one that knows about configs, data, models, training and plots together; the
CLI is a thin layer over it, and each piece stays usable on its own from Python.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .autoregressive import AutoregressiveMixture
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, load_state
from .checks import continuity_residual
from .conditioned import Conditioned
from .config import Config, ModelConfig, ObjectiveConfig, config_from_dict, config_to_dict, save_config
from .data import TemporalPoints, load_data
from .divfree import DivergenceFree
from .dynamics import Dynamics
from .stpp import HistoryEncoder
from .factorized import FactorizedMixture
from .flow import FlowDensity
from .metrics import w1
from .normalize import Normalizer
from .objectives import (DriftEnergy, EndpointLikelihood, JacobianSymmetry, KineticEnergy, NegativeLogLikelihood, Objective,
                         Staged, Sum)
from .simulate import simulate
from .train import FitResult, fit, mean_nll, resolve_device

PathLike = Union[str, Path]


HISTORY_FEATURES = 64  # width of the history encoding an event model's density sees


def build_dynamics(cfg: ModelConfig, dim: int, context_dim: int = 0, history: Optional[int] = None) -> Dynamics:
    """The :class:`Dynamics` described by ``cfg`` for ``dim``-dimensional points.

    With ``history = k`` (event data with ``data.history``) the context is the raw history features of
    :func:`probflux.stpp.history_context` (``context_dim = 2 + k (dim + 2)``) and the density is wrapped in
    :class:`~probflux.Conditioned` with a :class:`~probflux.stpp.HistoryEncoder` (64 features)."""
    encoder = None
    if history is not None:
        encoder = HistoryEncoder(dim, events=history, hidden=HISTORY_FEATURES, out_features=HISTORY_FEATURES)
        if context_dim != encoder.in_features:
            raise ValueError(f"history={history} needs context_dim={encoder.in_features} for dim={dim}; got {context_dim}")
    inner_context = context_dim if encoder is None else encoder.out_features  # the family sees the encoding
    if cfg.type == "factorized":
        density = FactorizedMixture(dim, components=cfg.components, hidden=cfg.hidden, family=cfg.family,
                                    context_dim=inner_context, flux=cfg.flux, layers=cfg.layers, max_frequency=cfg.time_frequency)
    elif cfg.type == "autoregressive":
        density = AutoregressiveMixture(dim, components=cfg.components, hidden=cfg.hidden, layers=cfg.layers,
                                        flux=cfg.flux, context_dim=inner_context, max_frequency=cfg.time_frequency)
    elif cfg.type == "flow":
        density = FlowDensity(dim, transforms=cfg.transforms, hidden=cfg.hidden, context_dim=inner_context,
                              coupling=cfg.coupling, layers=cfg.layers, max_frequency=cfg.time_frequency)
    else:
        raise ValueError(f"model.type must be factorized, autoregressive or flow; got {cfg.type!r}")
    if encoder is not None:
        density = Conditioned(density, encoder)
    divfree = None
    if cfg.divergence_free:
        if dim < 2:
            raise ValueError("model.divergence_free needs dim >= 2")
        divfree = DivergenceFree(dim, hidden=cfg.divfree_hidden, context_dim=context_dim, max_frequency=cfg.time_frequency)
    return Dynamics(density, diffusion=cfg.diffusion, divergence_free=divfree)


def build_objective(cfg: ObjectiveConfig, times: Optional[Sequence[float]] = None) -> Objective:
    """The weighted sum ``cfg`` describes (terms with weight 0 are left out).

    ``likelihood="snapshots"`` uses :class:`EndpointLikelihood` at ``times`` (the training snapshot
    times, model units); the path terms (kinetic, drift energy, Jacobian symmetry) are wrapped in
    :class:`Staged` when ``kinetic_start``/``kinetic_ramp`` are set.
    """
    parts: list[Objective] = []
    if cfg.nll > 0:
        if cfg.likelihood == "snapshots":
            if not times:
                raise ValueError("objective.likelihood=snapshots needs the snapshot times of the training data")
            parts.append(EndpointLikelihood(times, weight=cfg.nll))
        else:
            parts.append(NegativeLogLikelihood(cfg.nll))
    path: list[Objective] = []
    if cfg.kinetic > 0:
        path.append(KineticEnergy(cfg.kinetic, samples=cfg.kinetic_samples))
    if cfg.drift_energy > 0:
        path.append(DriftEnergy(cfg.drift_energy, samples=cfg.kinetic_samples))
    if cfg.jacobian_symmetry > 0:
        path.append(JacobianSymmetry(cfg.jacobian_symmetry, samples=min(cfg.kinetic_samples, 128)))
    if path and (cfg.kinetic_start or cfg.kinetic_ramp):
        path = [Staged(path[0] if len(path) == 1 else Sum(*path), start=cfg.kinetic_start, ramp=cfg.kinetic_ramp)]
    parts += path
    if not parts:
        raise ValueError("objective: every weight is 0 (set objective.nll or objective.kinetic > 0)")
    return parts[0] if len(parts) == 1 else Sum(*parts)


@dataclass
class Run:
    """A trained run loaded back from its directory (model in model coordinates, weights from ``checkpoint``)."""

    path: Path
    config: Config
    dynamics: Dynamics
    normalizer: Normalizer
    checkpoint: dict[str, Any]


def to_model_coordinates(points: TemporalPoints, normalizer: Normalizer) -> SimpleNamespace:
    """``(s, z, context)`` of ``points`` under ``normalizer``; ``s`` clamped to ``[0, 1]`` against rounding."""
    s = normalizer.t_to_model(points.t)
    return SimpleNamespace(t=s.clamp(0.0, 1.0) if len(s) else s, x=normalizer.x_to_model(points.x), context=points.context)


def fit_config(cfg: Config, *, resume: bool = False, progress: Optional[bool] = None, plots: bool = True) -> tuple[FitResult, dict[str, Any]]:
    """Train the run ``cfg`` describes into ``cfg.out``, then evaluate (``metrics.json``) and plot.

    With ``resume`` the run continues from ``cfg.out/checkpoints/latest.pt``; ``cfg`` must then describe the
    same model and data as the saved run (only ``train`` settings may differ, e.g. more ``steps``).
    """
    out = Path(cfg.out)
    train, val, test, normalizer = load_data(cfg.data, cfg.seed)
    torch.manual_seed(cfg.seed)
    dynamics = build_dynamics(cfg.model, train.dim, train.context_dim, history=getattr(cfg.data, "history", None))
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    extra = {"config": config_to_dict(cfg), "normalizer": normalizer.state_dict(), "dim": train.dim, "context_dim": train.context_dim}
    train_model = to_model_coordinates(train, normalizer)
    times = sorted(set(train_model.t.tolist())) if cfg.objective.likelihood == "snapshots" else None
    result = fit(dynamics, build_objective(cfg.objective, times), train_model, config=cfg.train,
                 val=to_model_coordinates(val, normalizer) if len(val) else None, seed=cfg.seed, run_dir=out,
                 resume=resume, extra_state=extra, progress=progress)
    metrics: dict[str, Any] = {"steps": result.step, "train_wall_seconds": result.wall_seconds}
    if not main_process:
        return result, metrics
    run = load_run(out)
    metrics = {**evaluate(run, test if len(test) else val, seed=cfg.seed), **metrics}
    if getattr(cfg.data, "leave_out", None) is not None and len(test):
        metrics.update(evaluate_heldout_snapshot(run, train, test, seed=cfg.seed))
    write_json(out / "metrics.json", metrics)
    if plots:
        make_plots(run, data=test if len(test) else val, train=train)
    return result, metrics


def load_run(path: PathLike, checkpoint: str = "best", *, device: str = "cpu") -> Run:
    """Rebuild the model of a run directory and load ``checkpoints/{checkpoint}.pt`` (EMA weights when saved)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    file = path / "checkpoints" / f"{checkpoint}.pt"
    if not file.exists() and checkpoint == "best":
        file = path / "checkpoints" / "latest.pt"
    state = load_checkpoint(file)
    try:
        cfg = config_from_dict(state["config"])
        normalizer = Normalizer.from_state_dict(state["normalizer"])
        dim, context_dim = int(state["dim"]), int(state["context_dim"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(file)!r} lacks the run information ({e}); was it written by probflux fit?") from None
    dynamics = build_dynamics(cfg.model, dim, context_dim, history=getattr(cfg.data, "history", None))
    weights = state["model"]
    if state.get("ema") is not None:
        weights = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.train.dtype]
    dynamics.to(dtype=dtype)
    load_state(dynamics, weights, what="model", path=file)
    dynamics.to(resolve_device(device)).eval()
    return Run(path, cfg, dynamics, normalizer, state)


def evaluate(run: Run, test: TemporalPoints, *, particles: int = 1000, steps: int = 200, seed: int = 0,
             residual_points: int = 256) -> dict[str, Any]:
    """Held-out likelihood, exactness and Fokker–Planck consistency of a run. Returns a dict with

    * ``test_nll``: ``-mean log p(x_n | t_n)`` in data coordinates (nats per point) over ``test``;
      ``test_nll_model``: the same in the model's standardised coordinates;
    * ``continuity_residual_max``: max over ``residual_points`` of ``|d_t rho + div j| / scale`` (float64 copy,
      at model samples at uniform times) — exactness of the density–flux pair;
    * ``w1_sde_vs_model``: ``W_1`` (data coordinates) between ``particles`` SDE particles started from
      ``rho_0`` samples and integrated by Euler–Maruyama with the model's diffusion to ``t = 1``, and fresh
      samples of ``rho_1``; ``w1_model_vs_model``: ``W_1`` between two independent ``rho_1`` draws of the same
      size, the noise floor against which the first is read; ``w1_ode_vs_model`` likewise for the ODE.
    """
    dyn, norm = run.dynamics, run.normalizer
    dtype = next(dyn.parameters()).dtype
    out: dict[str, Any] = {"dim": dyn.dim, "diffusion": run.config.model.diffusion, "test_points": len(test)}
    if len(test):
        pts = to_model_coordinates(test.to(dtype=dtype), norm)
        nll_model = mean_nll(dyn, pts.t, pts.x, pts.context, len(test))
        out["test_nll_model"] = nll_model
        out["test_nll"] = nll_model + norm.log_det
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        ctx = None
        if dyn.context_dim:
            pick = torch.randint(len(test), (max(particles, residual_points),))
            ctx = test.context[pick].to(dtype)
        d64 = copy.deepcopy(dyn).double()
        t_res = torch.rand(residual_points, dtype=torch.float64)
        c_res = None if ctx is None else ctx[:residual_points].double()
        x_res = d64.density.sample(t_res, context=c_res)
        res = continuity_residual(d64, t_res, x_res, c_res)
        out["continuity_residual_max"] = float(res.relative.max())
        out["continuity_residual_median"] = float(res.relative.median())
        cp = None if ctx is None else ctx[:particles]
        x0 = dyn.density.sample(torch.zeros(particles, dtype=dtype), context=cp)
        ref1 = norm.x_to_data(dyn.density.sample(torch.ones(particles, dtype=dtype), context=cp))
        ref2 = norm.x_to_data(dyn.density.sample(torch.ones(particles, dtype=dtype), context=cp))
        start = time.perf_counter()
        with torch.no_grad():
            sde = simulate(dyn, x0, 0.0, 1.0, steps=steps, method="euler_maruyama", context=cp)[-1]
            ode = simulate(dyn, x0, 0.0, 1.0, steps=steps, method="euler", context=cp)[-1]
        out["simulation_seconds"] = time.perf_counter() - start
        out["w1_sde_vs_model"] = w1(norm.x_to_data(sde), ref1)
        out["w1_ode_vs_model"] = w1(norm.x_to_data(ode), ref1)
        out["w1_model_vs_model"] = w1(ref1, ref2)
        out["particles"], out["simulation_steps"] = particles, steps
    finally:
        torch.random.set_rng_state(gen_state)
    return out


def evaluate_heldout_snapshot(run: Run, train: TemporalPoints, held: TemporalPoints, *, cells: int = 2000, steps: int = 100,
                              seed: int = 0) -> dict[str, float]:
    """Leave-one-time-out scores at the held-out snapshot time ``t_k`` (data coordinates, exact EMD on at most
    ``cells`` cells per side):

    * ``heldout_w1_density`` / ``heldout_w2_density``: exact samples of ``rho_{t_k}`` vs the held-out cells;
    * ``heldout_w1_transport`` / ``heldout_w2_transport``: the training cells of the last earlier snapshot
      pushed to ``t_k`` by the probability-flow ODE (SDE when ``model.diffusion > 0``) — TorchCFM's metric.
    """
    from .metrics import wasserstein

    t_k = float(held.t[0])
    if not bool((held.t == t_k).all()):
        raise ValueError("evaluate_heldout_snapshot: the held-out points must share one time")
    earlier = train.t[train.t < t_k]
    if not len(earlier):
        raise ValueError(f"evaluate_heldout_snapshot: no training snapshot before t = {t_k:g}")
    t_prev = float(earlier.max())
    g = torch.Generator().manual_seed(seed)
    pick = lambda x: x[torch.randperm(len(x), generator=g)[:cells]]
    dyn, norm = run.dynamics, run.normalizer
    dtype = next(dyn.parameters()).dtype
    target = pick(held.x)
    start = pick(train.x[train.t == t_prev])
    s_prev, s_k = float(norm.t_to_model(t_prev)), float(norm.t_to_model(t_k))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            direct = dyn.density.sample(torch.full((len(target),), s_k, dtype=dtype))
            method = "euler_maruyama" if run.config.model.diffusion > 0 else "euler"
            moved = simulate(dyn, norm.x_to_model(start.to(dtype)), s_prev, s_k, steps=steps, method=method)[-1]
    direct, moved = norm.x_to_data(direct.double()), norm.x_to_data(moved.double())
    return {"heldout_time": t_k, "heldout_cells": len(held),
            "heldout_w1_density": wasserstein(direct, target, p=1), "heldout_w2_density": wasserstein(direct, target, p=2),
            "heldout_w1_transport": wasserstein(moved, target, p=1), "heldout_w2_transport": wasserstein(moved, target, p=2)}


def make_plots(run: Run, data: Optional[TemporalPoints] = None, *, gif: bool = True, train: Optional[TemporalPoints] = None) -> list[Path]:
    """Density snapshots with the velocity field, trajectories, loss curves and a GIF, in the run directory;
    for population snapshots (``objective.likelihood = snapshots``) also ``snapshots.png``: the observed
    snapshots with paths through them and, with a held-out snapshot in ``data``, the fit at its time."""
    from . import plot

    files = []
    dyn, norm, path = run.dynamics, run.normalizer, run.path
    if train is not None and run.config.objective.likelihood == "snapshots":
        times = sorted(set(train.t.tolist()))
        cells = [train.x[train.t == t] for t in times]
        held = None
        if data is not None and len(data) and bool((data.t == data.t[0]).all()) and float(data.t[0]) not in times:
            held = (float(data.t[0]), data.x)
        plot.snapshot_paths(dyn, times, cells, heldout=held, path=path / "snapshots.png", normalizer=norm)
        files.append(path / "snapshots.png")
    data_arg = None if data is None or not len(data) else (data.t, data.x)
    # a context model is drawn at the context of the first data point (for event data: an empty history)
    ctx = None
    if dyn.context_dim:
        source = data if data is not None and len(data) else train
        if source is None or source.context is None:
            raise ValueError("make_plots: the model needs a context; pass data (or train) points that carry one")
        ctx = source.context[0].to(next(dyn.parameters()).dtype)
    plot.density_snapshots(dyn, path=path / "density.png", data=data_arg, normalizer=norm, context=ctx)
    files.append(path / "density.png")
    plot.trajectories(dyn, path=path / "trajectories.png", normalizer=norm, context=ctx)
    files.append(path / "trajectories.png")
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()] if (path / "metrics.jsonl").exists() else []
    if records:
        plot.loss_curves(records, path=path / "loss.png")
        files.append(path / "loss.png")
    if gif:
        plot.animate(dyn, path / "density.gif", normalizer=norm, context=ctx)
        files.append(path / "density.gif")
    return files


def write_json(path: PathLike, obj: Any) -> None:
    """Atomic JSON write (non-finite floats become null so every JSON parser reads the file)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(w) for k, w in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(w) for w in v]
        return v

    atomic_write(path, lambda f: f.write((json.dumps(clean(obj), indent=2) + "\n").encode()))
