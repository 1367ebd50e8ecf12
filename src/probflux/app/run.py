"""From a :class:`~probflux.app.config.Config` to a trained, evaluated and plotted run directory.

A run directory holds::

    config.yaml            the resolved config
    metrics.jsonl          training log (one JSON line per log/eval step)
    checkpoints/           latest.pt (resume), best.pt (EMA weights at the best validation NLL)
    metrics.json           evaluation (see :meth:`Run.evaluate`)
    *.png, density.gif     figures (see :func:`make_plots`)

:func:`fit_config` trains one; :func:`load_run` returns a :class:`Run`, whose ``sample``, ``simulate`` and
``evaluate`` are what the CLI commands call. Scores come from :mod:`probflux.evaluation`, the one
evaluation path the benchmarks use too.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .. import evaluation
from ..checkpoint import CheckpointError, load_checkpoint, load_state, model_weights
from ..data.points import TemporalPoints
from ..dynamics import Dynamics
from ..io import write_json
from ..normalize import Normalizer
from ..simulate import simulate
from ..train import FitResult, fit, resolve_device
from .builders import build_dynamics, build_objective, load_data
from .config import Config, config_from_dict, config_to_dict, save_config

__all__ = ["Run", "fit_config", "load_run", "make_plots", "write_json"]

PathLike = Union[str, Path]


@dataclass
class Run:
    """A trained run loaded back from its directory: the model (model coordinates, weights from
    ``checkpoint``), its normaliser and config. Methods take and return data units."""

    path: Path
    config: Config
    dynamics: Dynamics
    normalizer: Normalizer
    checkpoint: dict[str, Any]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.dynamics.parameters()).dtype

    def model_time(self, t: float, name: str = "t") -> float:
        """Data time ``t`` in model units ``s in [0, 1]``; ``ValueError`` naming ``name`` when outside the run's interval."""
        s = float(self.normalizer.t_to_model(t))
        if not -1e-9 <= s <= 1 + 1e-9:
            raise ValueError(f"{name} {t:g} is outside the model's time interval [{self.normalizer.t0:g}, {self.normalizer.t1:g}]")
        return min(max(s, 0.0), 1.0)

    def data(self) -> tuple[TemporalPoints, TemporalPoints, TemporalPoints]:
        """``(train, val, test)`` as the run was trained on them (same config and seed)."""
        train, val, test, _ = load_data(self.config.data, self.config.seed)
        return train, val, test

    def sample(self, t: float, n: int, *, context: Optional[Tensor] = None, seed: Optional[int] = None) -> Tensor:
        """``(n, D)`` exact samples of ``rho_t`` at data time ``t``, in data units (float64)."""
        s = self.model_time(t)
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)
            z = self.dynamics.density.sample(torch.full((n,), s, dtype=self.dtype), context=context)
        return self.normalizer.x_to_data(z).double()

    def simulate(self, n: int, *, t0: Optional[float] = None, t1: Optional[float] = None, steps: int = 100,
                 method: Optional[str] = None, diffusion: Optional[float] = None, context: Optional[Tensor] = None,
                 seed: Optional[int] = None) -> tuple[np.ndarray, Tensor, str]:
        """Paths of ``n`` particles started from ``rho_{t0}`` samples: ``(times (steps+1,), paths (steps+1, n, D), method)``,
        data units. ``diffusion`` replaces the model's ``g`` (same marginals); ``method`` defaults to
        Euler–Maruyama when ``g > 0`` at ``t0``, else Euler on the probability-flow ODE."""
        if diffusion is not None and not diffusion >= 0:
            raise ValueError(f"diffusion must be >= 0; got {diffusion}")
        t0 = self.normalizer.t0 if t0 is None else t0
        t1 = self.normalizer.t1 if t1 is None else t1
        s0, s1 = self.model_time(t0, "t0"), self.model_time(t1, "t1")
        dyn = self.dynamics
        if diffusion is not None:
            dyn = Dynamics(dyn.density, diffusion=diffusion, divergence_free=dyn.divergence_free)
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)
            x0 = dyn.density.sample(torch.full((n,), s0, dtype=self.dtype), context=context)
            method = method or ("euler_maruyama" if float(dyn.diffusion(torch.tensor([s0]))[0]) > 0 else "euler")
            path = simulate(dyn, x0, s0, s1, steps=steps, method=method, context=context)
        return np.linspace(t0, t1, steps + 1), self.normalizer.x_to_data(path).double(), method

    def evaluate(self, points: Optional[TemporalPoints] = None, *, particles: int = 1000, steps: int = 200,
                 seed: Optional[int] = None, heldout: bool = True) -> dict[str, Any]:
        """:func:`probflux.evaluation.evaluate` on ``points`` (default: the run's test split, or validation when
        the test split is empty), plus the held-out snapshot scores when the run leaves a snapshot out."""
        seed = self.config.seed if seed is None else seed
        train = None
        if points is None:
            train, val, test = self.data()
            points = test if len(test) else val
        out = {"diffusion": self.config.model.diffusion,
               **evaluation.evaluate(self.dynamics, self.normalizer, points, particles=particles, steps=steps, seed=seed)}
        if heldout and getattr(self.config.data, "leave_out", None) is not None and len(points):
            if train is None:
                train = self.data()[0]
            out.update(evaluation.heldout_snapshot_scores(self.dynamics, self.normalizer, train, points, seed=seed))
        return out


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
    train_model = evaluation.to_model_coordinates(train, normalizer)
    times = sorted(set(train_model.t.tolist())) if cfg.objective.likelihood == "snapshots" else None
    result = fit(dynamics, build_objective(cfg.objective, times), train_model, config=cfg.train,
                 val=evaluation.to_model_coordinates(val, normalizer) if len(val) else None, seed=cfg.seed, run_dir=out,
                 resume=resume, extra_state=extra, progress=progress)
    metrics: dict[str, Any] = {"steps": result.step, "train_wall_seconds": result.wall_seconds}
    if not main_process:
        return result, metrics
    run = load_run(out)
    held = test if len(test) else val
    ev = cfg.evaluate  # evaluation size; 0 switches a part off
    scores = evaluation.evaluate(run.dynamics, normalizer, held, seed=cfg.seed, particles=ev.particles if ev.steps else 0,
                                 steps=ev.steps, residual_points=ev.residual_points)
    metrics = {"diffusion": cfg.model.diffusion, **scores, **metrics}
    if getattr(cfg.data, "leave_out", None) is not None and len(test) and ev.heldout_cells:
        metrics.update(evaluation.heldout_snapshot_scores(run.dynamics, normalizer, train, test, seed=cfg.seed, cells=ev.heldout_cells))
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
    weights = model_weights(state)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.train.dtype]
    dynamics.to(dtype=dtype)
    load_state(dynamics, weights, what="model", path=file)
    dynamics.to(resolve_device(device)).eval()
    return Run(path, cfg, dynamics, normalizer, state)


def make_plots(run: Run, data: Optional[TemporalPoints] = None, *, gif: bool = True, train: Optional[TemporalPoints] = None) -> list[Path]:
    """Density snapshots with the velocity field, trajectories, loss curves and a GIF, in the run directory;
    for population snapshots (``objective.likelihood = snapshots``) also ``snapshots.png``: the observed
    snapshots with paths through them and, with a held-out snapshot in ``data``, the fit at its time."""
    from .. import plot

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
