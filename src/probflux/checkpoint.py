"""Checkpoints: ``state_dict``s and plain data only (never pickled modules), written atomically.

A checkpoint is a dict saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``:

    {"format": "probflux-checkpoint", "format_version": 1, "library_version": str, "git_sha": str | None,
     "model": state_dict, "ema": state_dict | None, "optimizer": state_dict, "scheduler": state_dict,
     "trainer": {"step", "best_val", "best_step", "bad_evals", "history", "seed", "world_size"},
     ...plus the caller's extra state (probflux fit: "config", "normalizer", "dim", "context_dim")}
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .io import atomic_write

FORMAT = "probflux-checkpoint"
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match the model it is loaded into."""


def git_sha() -> Optional[str]:
    """The commit of the probflux source tree when it is a git checkout, else None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def non_finite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating tensors in the nested dict/list ``state`` that hold a NaN or an inf."""
    out: list[str] = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and state.numel() and not bool(torch.isfinite(state).all()):
            out.append(prefix or "<tensor>")
    elif isinstance(state, dict):
        for k, v in state.items():
            out += non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out += non_finite_tensors(v, f"{prefix}[{i}]")
    return out


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plus format, library version and git SHA) atomically to ``path``.

    A state with a non-finite tensor (a diverged model, EMA or optimiser) is refused with :class:`CheckpointError`
    naming the tensors, and the file at ``path`` is left as it was: a checkpoint is always a usable one.
    """
    from ._version import __version__

    bad = non_finite_tensors({k: state.get(k) for k in ("model", "ema", "optimizer") if k in state})
    if bad:
        raise CheckpointError(f"refusing to write checkpoint {str(path)!r}: {len(bad)} tensors hold NaN or inf "
                              f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); the file there is unchanged")
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__, "git_sha": git_sha(), **state}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device, None] = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; :class:`CheckpointError` names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt files
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a probflux checkpoint ({_reason(e)}); probflux "
                              "reads only its own checkpoints, by torch.load(weights_only=True), no pickled objects") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a probflux checkpoint (no 'format': {FORMAT!r})")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format_version {state.get('format_version')!r}; this probflux reads {FORMAT_VERSION}"
        )
    return state


def _reason(e: Exception) -> str:
    """The first line of torch's message, without its advice to load with ``weights_only=False`` (which would run
    arbitrary code from the file)."""
    text = str(e)
    if "weights_only" in text or "weights only" in text.lower():
        return f"{type(e).__name__}: it holds objects other than tensors and plain data"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return type(e).__name__ + (f": {first[:200]}" if first else "")


def model_weights(state: dict[str, Any], *, ema: bool = True) -> dict[str, Any]:
    """The model ``state_dict`` of a checkpoint: its EMA weights when saved and ``ema``, else the trained ones.

    The EMA is a ``torch.optim.swa_utils.AveragedModel`` whose keys carry a ``module.`` prefix; it is removed.
    """
    if ema and state.get("ema") is not None:
        prefix = "module."
        return {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    return state["model"]


def load_state(module: nn.Module, state: dict[str, Any], *, what: str, path: PathLike) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that lists what does not match."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(
            f"{what} in checkpoint {str(path)!r} does not match the model built from its config: " + ", ".join(parts)
        )
    module.load_state_dict(state)
