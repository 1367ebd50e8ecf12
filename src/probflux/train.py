"""The training loop: one function, :func:`fit`, on one CPU core or many GPUs.

* Adam/AdamW, linear warm-up then cosine decay, gradient clipping, EMA of the parameters (evaluation and
  the ``best`` checkpoint use the EMA weights), float32 or float64, device ``auto|cpu|cuda|mps``.
* Deterministic: the mini-batch of step ``k`` and every Monte-Carlo draw are functions of ``(seed, k)``
  only, so a run resumed from a checkpoint continues exactly as if it had never stopped.
* Distributed: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) the loss is wrapped in
  ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA), data are sharded with ``DistributedSampler``
  and each rank takes ``batch_size / N`` points of the global batch; rank 0 alone logs and writes
  checkpoints. The gradient equals the single-process gradient of the same global batch.
* Checkpoints (``run_dir/checkpoints/{latest,best}.pt``) are written atomically; ``metrics.jsonl``
  gets one JSON line per log/eval step (TensorBoard events too when ``tensorboard`` is installed).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DistributedSampler

from .checkpoint import CheckpointError, load_checkpoint, load_state, model_weights, non_finite_tensors, save_checkpoint
from .dynamics import Dynamics
from .evaluation import mean_nll
from .io import atomic_write, json_line, run_lock
from .objectives import Batch, Objective
from .options import Check, Options, at_least, choices, greater, interval
from .options import device as device_name

PathLike = Union[str, os.PathLike]


@dataclass
class TrainConfig(Options):
    """Optimisation, schedule, numerics and bookkeeping of a training run.

    Every field is checked on construction (types from the hints, ranges from ``CHECKS``; see
    :mod:`probflux.options`): ``TrainConfig(clip=-1)`` and ``TrainConfig(steps="ten")`` raise an
    :class:`~probflux.options.OptionError` naming the field. ``fit`` checks again, after any assignment.
    """

    steps: int = 2000
    batch_size: int = 512
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 100
    min_lr_ratio: float = 0.05
    clip: Optional[float] = 1.0
    ema: Optional[float] = 0.999
    dtype: str = "float32"
    device: str = "auto"
    eval_every: int = 200
    log_every: int = 20
    checkpoint_every: int = 200
    patience: Optional[int] = None
    eval_points: int = 4096
    divergence_factor: Optional[float] = 1e6
    """A finite loss with ``|loss| > divergence_factor * max(1, |first loss|)`` counts as diverged (null: only
    non-finite values do). Bounded velocities keep a blown-up model's loss finite, so non-finiteness alone misses it."""
    threads: Optional[int] = None
    """torch intra-op threads while ``fit`` runs (restored afterwards; null: leave the process's setting). On a shared
    machine 1 is often much faster than several for the small networks here (threads that wait spin on busy cores)."""
    max_seconds: Optional[float] = None
    """A cap on training time (``fit``'s ``clock``): training stops early, with a final evaluation and checkpoint,
    once it has run this long; the schedule still runs over ``steps``. ``fit(max_seconds=...)`` takes precedence."""

    PREFIX: ClassVar[str] = "train."
    CHECKS: ClassVar[Mapping[str, tuple[Check, ...]]] = {
        "steps": (at_least(1),),
        "batch_size": (at_least(1),),
        "optimizer": (choices("adam", "adamw"),),
        "lr": (greater(0),),
        "weight_decay": (at_least(0),),
        "warmup": (at_least(0),),
        "min_lr_ratio": (interval(0, 1, hi_open=False),),
        "clip": (greater(0),),
        "ema": (interval(0, 1, hi_open=True),),
        "dtype": (choices("float32", "float64"),),
        "device": (device_name,),
        "eval_every": (at_least(1),),
        "log_every": (at_least(1),),
        "checkpoint_every": (at_least(1),),
        "patience": (at_least(1),),
        "eval_points": (at_least(1),),
        "divergence_factor": (greater(1),),
        "max_seconds": (greater(0),),
        "threads": (at_least(1),),
    }


class TrainingDiverged(FloatingPointError):
    """Training stopped because a loss, gradient norm or weight went non-finite (``step`` and ``term`` say where)."""

    def __init__(self, message: str, *, step: int, term: str) -> None:
        super().__init__(message)
        self.step, self.term = step, term


class RunExists(ValueError):
    """A run directory already holds another run's files (``found``), and neither resume nor overwrite was asked."""

    def __init__(self, message: str, found: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.found = list(found)


@dataclass
class FitResult:
    """What :func:`fit` returns. ``model`` is the final model: its EMA copy when EMA is on (else the trained one).
    ``best_model`` carries the weights of ``model`` at the best validation NLL (what ``best.pt`` holds), a separate
    copy; it *is* ``model`` when there is no validation split."""

    model: Dynamics
    step: int
    stopped_early: bool
    best_val_nll: Optional[float]
    best_step: Optional[int]
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0
    run_dir: Optional[Path] = None
    best_model: Optional[Dynamics] = None


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → cuda if available, else mps, else cpu; otherwise ``torch.device(name)`` validated."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device: unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available on this machine")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"train.device={name!r} but MPS is not available on this machine")
    return dev


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``min_ratio`` at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Loss(nn.Module):
    """``forward(batch) = objective(dynamics, batch)``: the unit DistributedDataParallel wraps."""

    def __init__(self, dynamics: Dynamics, objective: Objective) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.objective = objective

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.objective(self.dynamics, batch)


def _check_points(points: Any, dim: int, context_dim: int, name: str) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    t, x, ctx = points.t, points.x, getattr(points, "context", None)
    if t.dim() != 1 or x.dim() != 2 or x.shape[0] != t.shape[0]:
        raise ValueError(f"{name}: need t (N,) and x (N, D); got t {tuple(t.shape)}, x {tuple(x.shape)}")
    if x.shape[1] != dim:
        raise ValueError(f"{name}: x has {x.shape[1]} columns but the model has dim={dim}")
    if (ctx is None) != (context_dim == 0) or (ctx is not None and ctx.shape != (t.shape[0], context_dim)):
        want = "no context" if context_dim == 0 else f"context of shape (N, {context_dim})"
        got = "none" if ctx is None else tuple(ctx.shape)
        raise ValueError(f"{name}: the model takes {want}; got {got}")
    for label, v in (("t", t), ("x", x), ("context", ctx)):
        if v is not None and not bool(torch.isfinite(v).all()):
            row = int((~torch.isfinite(v.reshape(v.shape[0], -1))).any(-1).nonzero()[0])
            raise ValueError(f"{name}: {label} contains NaN or inf at row {row}")
    bad = (t < 0) | (t > 1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"{name}: t = {float(t[row]):.6g} at row {row} is outside the model interval [0, 1]")
    return t, x, ctx


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build")
    return int(os.environ.get("RANK", "0")), world


def fit(
    dynamics: Dynamics,
    objective: Objective,
    train: Any,
    *,
    config: Any = None,
    val: Any = None,
    seed: int = 0,
    run_dir: Optional[PathLike] = None,
    resume: bool = False,
    overwrite: bool = False,
    extra_state: Optional[dict[str, Any]] = None,
    progress: Union[bool, str, None] = None,
    callback: Optional[Callable[[int, dict[str, float]], None]] = None,
    on_start: Optional[Callable[[], None]] = None,
    max_seconds: Optional[float] = None,
    time_schedule: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> FitResult:
    """Train ``dynamics`` on ``objective``; returns a :class:`FitResult`.

    Args:
        dynamics: the :class:`~probflux.Dynamics` to train (moved to the configured device/dtype in place).
        objective: ``objective(dynamics, batch) -> {"loss": ..., ...}`` (see :mod:`probflux.objectives`).
        train: points with ``.t: (N,)`` in ``[0, 1]``, ``.x: (N, D)``, ``.context: (N, C) | None``
            (e.g. :class:`probflux.data.TemporalPoints` in model coordinates).
        config: a :class:`TrainConfig` (default: its defaults); checked again here.
        val: optional held-out points like ``train``; its NLL (EMA weights) drives ``best.pt``,
            ``FitResult.best_model`` and early stopping (``config.patience``).
        seed: seeds the initial batches and Monte-Carlo draws of every step.
        run_dir: where ``metrics.jsonl`` and ``checkpoints/`` go (None: nothing is written). While ``fit`` runs it
            holds the directory's lock (:func:`probflux.io.run_lock`): a second writer fails at once.
        resume: continue from ``run_dir/checkpoints/latest.pt`` (must exist). With ``extra_state["run_id"]`` the
            checkpoint must carry the same run id (a checkpoint copied from another run is refused).
        overwrite: without ``resume``, a ``run_dir`` that already holds ``metrics.jsonl`` or checkpoints is refused
            (:class:`RunExists`) unless ``overwrite``, which deletes them first.
        extra_state: plain data saved in every checkpoint (e.g. ``{"config": ..., "normalizer": ..., "run_id": ...}``).
        progress: ``True`` a tqdm bar, ``"lines"`` a plain line (step, loss, rate) every ``PROGRESS_SECONDS`` for
            batch-job logs, ``False`` nothing, ``None`` a bar on an interactive terminal and lines otherwise.
        callback: ``callback(step, record)`` after every logged step (rank 0).
        on_start: called once, after every check passed and before ``fit`` writes anything (``probflux fit`` writes
            its ``config.yaml`` there, so a run that fails validation leaves the directory as it was).
        max_seconds: stop (with a final evaluation and checkpoint) once this much time has passed (default
            ``config.max_seconds``) —
            for equal-budget comparisons; the schedule still runs over ``config.steps``, and the stopping
            step depends on the machine, so such a run is not reproducible step for step.
        time_schedule: with ``max_seconds``, run the warm-up + cosine schedule over wall time instead of steps
            (the learning rate at elapsed time ``s`` is the step schedule's at step ``steps * s / max_seconds``), so
            a budget run anneals fully however fast the machine is; ``config.steps`` then only caps the steps.
        clock: the clock of ``max_seconds``, ``time_schedule`` and ``FitResult.wall_seconds`` (default wall time).
            ``time.process_time`` budgets this process's CPU time instead, which other load on a shared machine
            does not consume — fair equal-budget comparisons for single-threaded runs (``torch.set_num_threads(1)``).

    Raises:
        TrainingDiverged: (a ``FloatingPointError``) when the loss, the gradient norm or, at a checkpoint or evaluation
            step, the parameters or EMA weights are not finite. The check comes before the optimiser step; the
            message names the step, the term and the last good checkpoint, and no checkpoint is written for the step.
    """
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a probflux.train.TrainConfig; got {type(cfg).__name__}")
    cfg.validate()  # again: fields may have been assigned since construction
    if max_seconds is None:
        max_seconds = cfg.max_seconds
    if not isinstance(dynamics, Dynamics):
        raise TypeError(f"dynamics must be a probflux.Dynamics; got {type(dynamics).__name__}")
    if progress not in (None, True, False, "lines"):
        raise ValueError(f"progress must be None, True, False or 'lines'; got {progress!r}")
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "gloo")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    if cfg.batch_size % world:
        raise ValueError(f"train.batch_size={cfg.batch_size} is not divisible by the {world} processes")
    local_batch = cfg.batch_size // world
    if time_schedule and max_seconds is None:
        raise ValueError("time_schedule=True needs max_seconds (the schedule runs over that wall time)")
    run_path = None if run_dir is None else Path(run_dir)
    ckpt_dir = None if run_path is None else run_path / "checkpoints"
    is_main = rank == 0
    if run_path is not None and is_main and not resume and not overwrite:
        _refuse_existing_run(run_path)
    if resume and ckpt_dir is None:
        raise ValueError("resume=True needs a run_dir")

    # checks of the data against the model (before the model moves, so a refused call changes nothing)
    t_train = _check_points(train, dynamics.dim, dynamics.context_dim, "train data")
    if t_train[0].shape[0] < cfg.batch_size:
        raise ValueError(f"train.batch_size={cfg.batch_size} exceeds the {t_train[0].shape[0]} training points; lower train.batch_size")
    t_val = None
    if val is not None and len(val.t):
        t_val = _check_points(val, dynamics.dim, dynamics.context_dim, "validation data")
    dynamics.to(device=device, dtype=dtype)
    tt, xx, cc = (v if v is None else v.to(device=device, dtype=dtype) for v in t_train)
    n = tt.shape[0]
    vt = vx = vc = None
    if t_val is not None:
        vt, vx, vc = (v if v is None else v.to(device=device, dtype=dtype) for v in t_val)

    params = [p for p in dynamics.parameters() if p.requires_grad]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    started = {"at": None}

    def schedule_step(k: int) -> int:
        if not time_schedule or started["at"] is None:
            return k
        return min(int(cfg.steps * (clock() - started["at"]) / max_seconds), cfg.steps)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(schedule_step(k), cfg.steps, cfg.warmup, cfg.min_lr_ratio))
    ema = None
    if cfg.ema is not None:
        ema = AveragedModel(dynamics, avg_fn=_ema_fn(cfg.ema), use_buffers=True)
    loss_module: nn.Module = _Loss(dynamics, objective)
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=dynamics.divergence_free is not None,
        )
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    per_epoch = len(sampler) // local_batch
    epoch_cache: dict[int, Tensor] = {}

    def indices(step: int) -> Tensor:
        epoch, k = divmod(step, per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            sampler.set_epoch(epoch)
            epoch_cache[epoch] = torch.tensor(list(sampler), dtype=torch.long, device=device)
        return epoch_cache[epoch][k * local_batch:(k + 1) * local_batch]

    step, best_val, best_step, bad_evals = 0, None, None, 0
    history: list[dict[str, Any]] = []
    last_good: Optional[tuple[Path, int]] = None  # the newest checkpoint written or resumed from, and its step
    run_id = (extra_state or {}).get("run_id")
    if resume:
        path = ckpt_dir / "latest.pt"
        state = load_checkpoint(path, map_location=device)
        if run_id is not None and state.get("run_id") != run_id:
            raise CheckpointError(
                f"checkpoint {str(path)!r} belongs to run {state.get('run_id')!r}, not to run {run_id!r} of {str(run_path)!r}; "
                "refusing to resume from another run's checkpoint (nothing was written)")
        load_state(dynamics, state["model"], what="model", path=path)
        if ema is not None:
            if state.get("ema") is None:
                raise CheckpointError(f"checkpoint {str(path)!r} has no EMA state but train.ema={cfg.ema}")
            load_state(ema, state["ema"], what="EMA model", path=path)
        try:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            trainer = state["trainer"]
            step, best_val, best_step, bad_evals = trainer["step"], trainer["best_val"], trainer["best_step"], trainer["bad_evals"]
            history = list(trainer["history"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r}: optimizer/trainer state does not match ({e})") from None
        if step > cfg.steps:
            raise CheckpointError(f"checkpoint {str(path)!r} is at step {step}, beyond train.steps={cfg.steps}")
        last_good = (path, step)

    eval_model = dynamics if ema is None else ema.module
    best_state: Optional[dict[str, Tensor]] = None  # the EMA weights at the best validation NLL of this call
    metrics_path = None if run_path is None else run_path / "metrics.jsonl"
    with contextlib.ExitStack() as stack:
        if cfg.threads is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(cfg.threads)
        if is_main and run_path is not None:
            stack.enter_context(run_lock(run_path))
            if not resume:
                if overwrite:
                    _remove_run_files(run_path)
                else:
                    _refuse_existing_run(run_path)  # again under the lock: another writer may have finished meanwhile
        if on_start is not None and is_main:
            on_start()
        if is_main and metrics_path is not None:
            run_path.mkdir(parents=True, exist_ok=True)
            _truncate_metrics(metrics_path, step)
        writer = _tensorboard(run_path) if is_main and run_path is not None else None
        if writer is not None:
            stack.callback(writer.close)

        def state_dict() -> dict[str, Any]:
            return {
                **(extra_state or {}),
                "model": dynamics.state_dict(),
                "ema": None if ema is None else ema.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "trainer": {"step": step, "best_val": best_val, "best_step": best_step, "bad_evals": bad_evals,
                            "history": history, "seed": seed, "world_size": world},
            }

        def diverged(what: str, detail: str, *, after_update: bool = False) -> TrainingDiverged:
            where = (f"the last good checkpoint is {str(last_good[0])!r} (step {last_good[1]}), intact" if last_good is not None
                     else "no checkpoint was written yet" if ckpt_dir is not None else "no run_dir, so nothing was saved")
            return TrainingDiverged(
                f"training diverged: {what} at step {step} ({detail}); "
                + ("nothing was saved for this step" if after_update else f"the update to step {step + 1} was not taken; nothing was saved")
                + f"; {where} — lower train.lr, set train.clip or raise train.warmup, then resume", step=step, term=what)

        def check_weights() -> None:
            bad = non_finite_tensors(dynamics.state_dict(), "model")
            if ema is not None:
                bad += non_finite_tensors(ema.module.state_dict(), "ema")
            if bad:
                raise diverged("the weights are not finite", ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""), after_update=True)

        def save(name: str) -> None:
            nonlocal last_good
            check_weights()
            save_checkpoint(ckpt_dir / name, state_dict())
            if name == "latest.pt":
                last_good = (ckpt_dir / name, step)

        mode = None
        if is_main and progress is not False:
            mode = "bar" if progress is True or (progress is None and sys.stderr.isatty()) else "lines"
        bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=cfg.steps, initial=step, desc="fit", unit="step", dynamic_ncols=True))
        lines = _ProgressLines(cfg.steps, clock) if mode == "lines" else None
        start_time = clock()
        started["at"] = start_time
        last_log_time, last_log_step = start_time, step
        stopped = False
        first_loss: Optional[float] = None  # |loss| at the first step of this call: the scale divergence_factor multiplies
        while step < cfg.steps and not stopped:
            idx = indices(step)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            batch = Batch(tt[idx], xx[idx], None if cc is None else cc[idx], generator=gen, shard=(rank, world), step=step)
            terms = loss_module(batch)
            loss = terms["loss"]
            if not bool(torch.isfinite(loss)):
                bad = {k: v for k, v in _floats(terms).items() if not math.isfinite(v) and k != "loss"}
                raise diverged(f"loss is {float(loss.detach())}", f"non-finite terms: {bad or 'none besides loss'}; terms {_floats(terms)}")
            if cfg.divergence_factor is not None:
                value = abs(float(loss.detach()))
                if first_loss is None:
                    first_loss = value
                elif value > cfg.divergence_factor * max(1.0, first_loss):
                    raise diverged(f"loss is {float(loss.detach()):.6g}",
                                   f"more than train.divergence_factor = {cfg.divergence_factor:g} x max(1, |first loss of this call| = "
                                   f"{first_loss:.6g}); terms {_floats(terms)}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip is not None else float("inf"))
            if not bool(torch.isfinite(grad_norm)):
                names = [name for name, p in dynamics.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
                raise diverged(f"the gradient norm is {float(grad_norm)}",
                               f"loss {float(loss.detach()):.6g} was finite; non-finite gradients: {', '.join(names[:5]) or 'none'}")
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(dynamics)
            step += 1
            out_of_time = max_seconds is not None and clock() - start_time >= max_seconds
            if max_seconds is not None and world > 1:  # every rank must stop at the same step (collective on all ranks)
                flag = torch.tensor([float(out_of_time)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            final = step == cfg.steps or out_of_time

            record = None
            if step % cfg.log_every == 0 or final:
                now = clock()
                record = {"step": step, **_floats(terms), "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0],
                          "steps_per_s": (step - last_log_step) / max(now - last_log_time, 1e-9)}
                last_log_time, last_log_step = now, step
            if vt is not None and (step % cfg.eval_every == 0 or final):
                check_weights()
                val_nll = mean_nll(eval_model, vt, vx, vc, cfg.eval_points)
                improved = best_val is None or val_nll < best_val
                if improved:
                    best_val, best_step, bad_evals = val_nll, step, 0
                    best_state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
                else:
                    bad_evals += 1
                history.append({"step": step, "val_nll": val_nll})
                record = {**(record or {"step": step}), "val_nll": val_nll, "best_val_nll": best_val}
                if improved and is_main and ckpt_dir is not None:
                    save("best.pt")
                if cfg.patience is not None and bad_evals >= cfg.patience:
                    stopped = True
            if record is not None and is_main:
                if metrics_path is not None:
                    with open(metrics_path, "a") as f:
                        f.write(json_line(record))
                if writer is not None:
                    for k, v in record.items():
                        if k != "step":
                            writer.add_scalar(k, v, step)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("step", "lr", "steps_per_s")}, refresh=False)
                if lines is not None:
                    lines.update(step, record, force=final)
                if callback is not None:
                    callback(step, record)
            stopped = stopped or out_of_time
            if is_main and ckpt_dir is not None and (step % cfg.checkpoint_every == 0 or final or stopped):
                save("latest.pt")
            if bar is not None:
                bar.update(1)
        check_weights()
        if is_main and ckpt_dir is not None and vt is None:
            save("best.pt")
    best_model = eval_model
    if vt is not None:
        if best_state is None and best_step is not None and ckpt_dir is not None and (ckpt_dir / "best.pt").is_file():
            best_state = model_weights(load_checkpoint(ckpt_dir / "best.pt", map_location=device))  # resumed past the best
        if best_state is not None:
            best_model = copy.deepcopy(eval_model)
            best_model.load_state_dict(best_state)
    return FitResult(model=eval_model, step=step, stopped_early=stopped, best_val_nll=best_val, best_step=best_step,
                     history=history, wall_seconds=clock() - start_time, run_dir=run_path, best_model=best_model)


PROGRESS_SECONDS = 10.0  # at most one plain progress line per this many seconds (progress="lines")


class _ProgressLines:
    """Plain ``fit step k/K  loss ...  rate`` lines on stderr, for logs that are not a terminal (batch jobs)."""

    def __init__(self, total: int, clock: Callable[[], float]) -> None:
        self.total, self.clock, self.last = total, clock, None

    def update(self, step: int, record: dict[str, float], *, force: bool = False) -> None:
        now = self.clock()
        if not force and self.last is not None and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        parts = [f"fit step {step}/{self.total}", f"loss {record['loss']:.5g}" if "loss" in record else ""]
        if "val_nll" in record:
            parts.append(f"val_nll {record['val_nll']:.5g}")
        if "steps_per_s" in record:
            parts.append(f"{record['steps_per_s']:.3g} steps/s")
        print("  ".join(p for p in parts if p), file=sys.stderr, flush=True)


RUN_FILES = ("metrics.jsonl", "checkpoints")  # what fit writes into a run directory


def _run_files(run_path: Path) -> list[str]:
    """The training files of an earlier run in ``run_path``: a non-empty ``metrics.jsonl``, checkpoints."""
    found = []
    m = run_path / "metrics.jsonl"
    if m.is_file() and m.stat().st_size > 0:
        found.append("metrics.jsonl")
    ck = run_path / "checkpoints"
    if ck.is_dir():
        found += [f"checkpoints/{p.name}" for p in sorted(ck.glob("*.pt"))]
    return found


def _refuse_existing_run(run_path: Path) -> None:
    found = _run_files(run_path)
    if found:
        raise RunExists(f"run_dir {str(run_path)!r} already holds a run ({', '.join(found)}); resume it, pass overwrite=True "
                        "to replace it, or choose another directory", found)


def _remove_run_files(run_path: Path) -> None:
    (run_path / "metrics.jsonl").unlink(missing_ok=True)
    for p in (run_path / "checkpoints").glob("*.pt"):
        p.unlink()
    if (run_path / "tensorboard").is_dir():
        shutil.rmtree(run_path / "tensorboard")


def _ema_fn(decay: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """EMA with warm-up: the decay at update ``n`` is ``min(decay, (1 + n) / (10 + n))``, so short runs
    are not dominated by the random initialisation."""

    def avg(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        if not averaged.is_floating_point():  # integer/bool buffers (masks, counters) are copied, not averaged
            return current.clone()
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged + (1.0 - d) * (current - averaged)

    return avg


def _floats(terms: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (by a run that died before its next checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    atomic_write(path, lambda f: f.write(("\n".join(keep) + "\n" if keep else "").encode()))


def _tensorboard(run_path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_path / "tensorboard"))


def load_model_weights(dynamics: Dynamics, path: PathLike, *, ema: bool = True) -> dict[str, Any]:
    """Load a checkpoint's (EMA, when present and ``ema``) weights into ``dynamics``; returns the checkpoint."""
    state = load_checkpoint(path)
    load_state(dynamics, model_weights(state, ema=ema), what="model", path=path)
    return state
