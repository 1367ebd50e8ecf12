"""From a :class:`~probflux.app.config.Config` to a trained, evaluated and plotted run directory.

A run directory holds::

    config.yaml            the resolved config (a relative data.path made absolute)
    run.json               run id, library version and the data's provenance (probflux.app.provenance)
    metrics.jsonl          training log (one JSON line per log/eval step)
    checkpoints/           latest.pt (resume), best.pt (EMA weights at the best validation NLL)
    metrics.json           evaluation (see :meth:`Run.evaluate`)
    *.png, density.gif     figures (see :func:`make_plots`)

:func:`fit_config` trains one; :func:`load_run` returns a :class:`Run`, whose ``sample``, ``simulate`` and
``evaluate`` are what the CLI commands call. Scores come from :mod:`probflux.evaluation`, the one
evaluation path the benchmarks use too.

Safety: ``fit_config`` refuses a directory that holds another run (:class:`~probflux.train.RunExists`, naming
its files) unless ``overwrite``; it checks config, data, model and training options before it writes anything;
it holds the directory's lock (:func:`probflux.io.run_lock`) while it trains, evaluates and plots; and every
checkpoint carries the run id of ``run.json``, so ``resume`` refuses another run's checkpoint. :meth:`Run.data`
refuses data that changed since training (:class:`~probflux.app.provenance.DataChanged`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .. import evaluation
from .._random import seeded
from ..checkpoint import CheckpointError, load_checkpoint, load_state, model_weights
from ..data.points import TemporalPoints
from ..dynamics import Dynamics
from ..io import LOCK_NAME, run_lock, write_json
from ..normalize import Normalizer
from ..simulate import simulate
from ..train import FitResult, RunExists, fit, resolve_device
from . import provenance
from .builders import build_dynamics, build_objective, load_data
from .config import Config, config_from_dict, config_to_dict, save_config

__all__ = ["Run", "fit_config", "load_run", "make_plots", "run_files", "write_json", "LOCK_NAME"]

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

    @property
    def manifest(self) -> Optional[dict[str, Any]]:
        """``run.json``: run id and data provenance (None for a run written before probflux recorded them)."""
        return provenance.read_manifest(self.path)

    def data(self, *, check: bool = True) -> tuple[TemporalPoints, TemporalPoints, TemporalPoints]:
        """``(train, val, test)`` as the run was trained on them (same config and seed).

        With ``check`` (default) the data files recorded in ``run.json`` must be unchanged (size and sha256; checked
        before loading) and the splits and normaliser loaded now must equal the recorded ones; otherwise
        :class:`~probflux.app.provenance.DataChanged` says what differs.
        """
        manifest = self.manifest if check else None
        recorded = None if manifest is None else manifest.get("data")
        if recorded is not None:
            provenance.check_files(recorded, self.path)
        train, val, test, normalizer = load_data(_data_config(self.config, self.path), self.config.seed)
        if recorded is not None:
            provenance.check_splits(recorded, (train, val, test), normalizer, library_version=manifest.get("library_version", "?"))
        return train, val, test

    def sample(self, t: float, n: int, *, context: Optional[Tensor] = None, seed: Optional[int] = None) -> Tensor:
        """``(n, D)`` exact samples of ``rho_t`` at data time ``t``, in data units (float64)."""
        s = self.model_time(t)
        with seeded(seed, next(self.dynamics.parameters()).device):
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
        with seeded(seed, next(self.dynamics.parameters()).device):
            x0 = dyn.density.sample(torch.full((n,), s0, dtype=self.dtype), context=context)
            method = method or ("euler_maruyama" if float(dyn.diffusion(torch.tensor([s0]))[0]) > 0 else "euler")
            path = simulate(dyn, x0, s0, s1, steps=steps, method=method, context=context)
        return np.linspace(t0, t1, steps + 1), self.normalizer.x_to_data(path).double(), method

    def evaluate(self, points: Optional[TemporalPoints] = None, *, train: Optional[TemporalPoints] = None,
                 particles: Optional[int] = None, steps: Optional[int] = None, residual_points: Optional[int] = None,
                 heldout_cells: Optional[int] = None, seed: Optional[int] = None, heldout: bool = True) -> dict[str, Any]:
        """:func:`probflux.evaluation.evaluate` on ``points`` (default: the run's test split, or validation when
        the test split is empty), plus the held-out snapshot scores against ``train`` (default: the run's training
        split) when the run leaves a snapshot out and ``heldout``. Sizes left None come from the run's ``evaluate``
        config section; 0 switches a part off (``steps = 0`` also switches the simulation off)."""
        ev = self.config.evaluate
        particles = ev.particles if particles is None else particles
        steps = ev.steps if steps is None else steps
        residual_points = ev.residual_points if residual_points is None else residual_points
        heldout_cells = ev.heldout_cells if heldout_cells is None else heldout_cells
        seed = self.config.seed if seed is None else seed
        if points is None:
            train, val, test = self.data()
            points = test if len(test) else val
        out = {"diffusion": self.config.model.diffusion,
               **evaluation.evaluate(self.dynamics, self.normalizer, points, particles=particles if steps else 0, steps=steps,
                                     residual_points=residual_points, seed=seed)}
        if heldout and getattr(self.config.data, "leave_out", None) is not None and len(points) and heldout_cells:
            if train is None:
                train = self.data()[0]
            out.update(evaluation.heldout_snapshot_scores(self.dynamics, self.normalizer, train, points, seed=seed,
                                                          cells=heldout_cells))
        return out


def run_files(path: PathLike) -> list[str]:
    """The files of a run in directory ``path`` (what :func:`fit_config` writes), sorted; [] when there is none."""
    path = Path(path)
    if not path.is_dir():
        return []
    found = [p.name for p in path.iterdir() if p.is_file() and (
        p.name in ("config.yaml", provenance.MANIFEST, "metrics.jsonl", "metrics.json", "density.gif")
        or p.suffix == ".png" or (p.name.startswith("metrics_") and p.suffix == ".json"))]
    found += [f"checkpoints/{p.name}" for p in (path / "checkpoints").glob("*.pt")] if (path / "checkpoints").is_dir() else []
    found += ["tensorboard/"] if (path / "tensorboard").is_dir() else []
    return sorted(found)


def _refuse(out: Path, found: list[str]) -> RunExists:
    shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    return RunExists(f"run directory {str(out)!r} already holds a run ({shown}); nothing was changed. Continue it with "
                     f"`probflux resume {out}`, replace it with --overwrite, or choose another out=", found)


def _remove_run(out: Path) -> None:
    """Delete the files of the run in ``out`` (only those :func:`run_files` lists: nothing else in the folder)."""
    import shutil

    for name in run_files(out):
        target = out / name.rstrip("/")
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


def _absolute_data_path(cfg: Config, out: Path, *, resume: bool) -> Config:
    """A copy of ``cfg`` whose ``data.path`` is absolute, or relative to ``out`` when the file lies inside it (so the
    run directory can move). A relative path is relative to the working directory — for ``resume``, to ``out`` when
    the file is there (how the run stored it)."""
    cfg = copy.deepcopy(cfg)
    path = getattr(cfg.data, "path", None)
    if path:
        p = Path(path).expanduser()
        if resume and not p.is_absolute() and (out / p).exists():
            p = out / p
        p = p.resolve()
        inside = provenance.inside_run(p, out)
        cfg.data.path = inside if inside is not None else str(p)
    return cfg


def _data_config(cfg: Config, run_dir: Path) -> Any:
    """The run's data section with ``data.path`` resolved: a relative path is relative to the run directory (how
    :func:`fit_config` stores a file inside it), else — a run written before paths were stored absolute — to the
    working directory."""
    d = cfg.data
    path = getattr(d, "path", None)
    if path and not Path(path).is_absolute() and (run_dir / path).exists():
        d = copy.deepcopy(d)
        d.path = str(run_dir / path)
    return d


def _stage(progress: Any, message: str) -> None:
    if progress is not False and int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr, flush=True)


def fit_config(cfg: Config, *, resume: bool = False, overwrite: bool = False, progress: Any = None, plots: bool = True,
               command: str = "fit") -> tuple[FitResult, dict[str, Any]]:
    """Train the run ``cfg`` describes into ``cfg.out``, then evaluate (``metrics.json``) and plot.

    A directory that already holds a run (:func:`run_files`) is refused with :class:`~probflux.train.RunExists`,
    before anything else happens, unless ``overwrite`` (its run files are then deleted once every check passed;
    other files in the folder are left alone). Data, model, objective and training options are all checked before
    anything is written, so a refused call leaves the directory byte for byte as it was. ``config.yaml`` and
    ``run.json`` (run id, data provenance) are written under the directory's lock.

    With ``resume`` the run continues from ``cfg.out/checkpoints/latest.pt``; ``cfg`` must then describe the
    same model and data as the saved run (only ``train`` settings may differ, e.g. more ``steps``); the
    checkpoint must carry the run id of ``run.json`` and the data must be unchanged.
    ``progress``: as for :func:`probflux.train.fit`; anything but ``False`` also prints a line per stage
    (evaluation, figures) on stderr.
    """
    out = Path(cfg.out)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    manifest = provenance.read_manifest(out) if resume else None
    if manifest is not None:  # before anything else: is the checkpoint this run's?
        latest = out / "checkpoints" / "latest.pt"
        found = load_checkpoint(latest).get("run_id")
        if found != manifest.get("run_id"):
            raise CheckpointError(f"checkpoint {str(latest)!r} belongs to run {found!r}, not to run {manifest.get('run_id')!r} of "
                                  f"{str(out)!r} ({provenance.MANIFEST}); refusing to resume another run's checkpoint (nothing written)")
    if main_process and not resume and not overwrite and run_files(out):
        raise _refuse(out, run_files(out))
    cfg = _absolute_data_path(cfg, out, resume=resume)
    if manifest is not None and manifest.get("data") is not None:
        provenance.check_files(manifest["data"], out)
    with provenance.recording_reads() as reads:
        train, val, test, normalizer = load_data(_data_config(cfg, out), cfg.seed)
    splits = (train, val, test)
    if manifest is not None and manifest.get("data") is not None:
        provenance.check_splits(manifest["data"], splits, normalizer, library_version=manifest.get("library_version", "?"))
    torch.manual_seed(cfg.seed)
    train_model = evaluation.to_model_coordinates(train, normalizer)
    dynamics = build_dynamics(cfg.model, train.dim, train.context_dim, history=getattr(cfg.data, "history", None), train=train_model)
    times = sorted(set(train_model.t.tolist())) if cfg.objective.likelihood == "snapshots" else None
    objective = build_objective(cfg.objective, times)
    run_id = manifest["run_id"] if manifest is not None else (None if resume else uuid.uuid4().hex)
    extra = {"config": config_to_dict(cfg), "normalizer": normalizer.state_dict(), "dim": train.dim, "context_dim": train.context_dim}
    if run_id is not None:
        extra["run_id"] = run_id
    stack = contextlib.ExitStack()

    def on_start() -> None:  # fit calls this after every check passed, holding the directory's lock
        stack.enter_context(run_lock(out))  # kept through evaluation and figures
        if not resume:
            found = [f for f in run_files(out) if f not in ("metrics.jsonl",) and not f.startswith("checkpoints/")]
            if found and not overwrite:
                raise _refuse(out, found)
            _remove_run(out)
            data_path = _data_config(cfg, out).path if getattr(cfg.data, "path", None) else None
            record = provenance.data_record(data_path, reads, splits, normalizer, out)
            provenance.write_manifest(out, provenance.new_manifest(run_id, command, record))
        save_config(cfg, out / "config.yaml")

    with stack:
        result = fit(dynamics, objective, train_model, config=cfg.train,
                     val=evaluation.to_model_coordinates(val, normalizer) if len(val) else None, seed=cfg.seed, run_dir=out,
                     resume=resume, overwrite=overwrite, extra_state=extra, progress=progress, on_start=on_start)
        metrics: dict[str, Any] = {"steps": result.step, "train_wall_seconds": result.wall_seconds}
        if not main_process:
            return result, metrics
        run = load_run(out)
        held = test if len(test) else val
        ev = cfg.evaluate  # evaluation size; 0 switches a part off
        start = time.perf_counter()
        _stage(progress, f"evaluating {out}: held-out NLL of {len(held)} points, continuity residual at {ev.residual_points} samples"
                         + (f", SDE/ODE distances with {ev.particles} particles x {ev.steps} steps" if ev.steps and ev.particles else ""))
        # the held-out snapshot scores need the held-out snapshot itself: the test split
        metrics = {**run.evaluate(held, train=train, heldout=len(test) > 0), **metrics}
        write_json(out / "metrics.json", metrics)
        _stage(progress, f"evaluated in {time.perf_counter() - start:.1f} s; wrote {out / 'metrics.json'}")
        if plots:
            start = time.perf_counter()
            _stage(progress, f"drawing figures into {out} ...")
            files = make_plots(run, data=held, train=train)
            _stage(progress, f"drew {len(files)} figures in {time.perf_counter() - start:.1f} s")
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
    manifest = provenance.read_manifest(path)
    if manifest is not None and state.get("run_id") not in (None, manifest.get("run_id")):
        raise CheckpointError(f"checkpoint {str(file)!r} belongs to run {state['run_id']!r}, not to run {manifest.get('run_id')!r} "
                              f"of {str(path)!r} ({provenance.MANIFEST}); it was copied from another run")
    try:
        cfg = config_from_dict(state["config"])
        normalizer = Normalizer.from_state_dict(state["normalizer"])
        dim, context_dim = int(state["dim"]), int(state["context_dim"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(file)!r} lacks the run information ({e}); was it written by probflux fit?") from None
    weights = model_weights(state)
    dynamics = build_dynamics(cfg.model, dim, context_dim, history=getattr(cfg.data, "history", None), state=weights)
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
    log = path / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    if records:
        plot.loss_curves(records, path=path / "loss.png")
        files.append(path / "loss.png")
    if gif:
        plot.animate(dyn, path / "density.gif", normalizer=norm, context=ctx)
        files.append(path / "density.gif")
    return files
