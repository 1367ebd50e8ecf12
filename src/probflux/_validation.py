"""Input checks shared by every public entry point; messages name the offending argument."""
from __future__ import annotations

import numbers
from typing import Optional, Union

import torch
from torch import Tensor

_VALIDATE = True

TimeLike = Union[float, int, Tensor]


def set_validation(enabled: bool) -> None:
    """Turn the finiteness / range checks on (default) or off, e.g. inside a tight training loop.

    Shape and type checks always run; only the checks that read tensor values (and so synchronise
    with the device) are switched off.
    """
    global _VALIDATE
    _VALIDATE = bool(enabled)


def validation_enabled() -> bool:
    return _VALIDATE


def _first_bad(mask: Tensor) -> int:
    return int(torch.nonzero(mask.reshape(mask.shape[0], -1).any(-1))[0, 0])


def check_points(x: Tensor, dim: int, name: str = "x") -> Tensor:
    """``x`` must be a floating tensor of shape ``(N, dim)`` with finite entries."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, {dim}); got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {x.dtype}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}); got {tuple(x.shape)}")
    if _VALIDATE and x.numel() and not bool(torch.isfinite(x).all()):
        row = _first_bad(~torch.isfinite(x))
        raise ValueError(f"{name} contains NaN or inf (first at row {row}: {x[row].tolist()})")
    return x


def as_times(
    t: TimeLike, n: Optional[int], dtype: torch.dtype, device: torch.device, name: str = "t"
) -> Tensor:
    """Convert a float, 0-d or ``(N,)`` tensor to a ``(n,)`` tensor in ``[0, 1]``.

    A scalar is broadcast to ``n``; a vector must have length ``n`` (when ``n`` is given).
    """
    if isinstance(t, bool) or not isinstance(t, (float, int, Tensor)):
        raise TypeError(f"{name} must be a float or a tensor of shape () or (N,); got {type(t).__name__}")
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t), dtype=dtype, device=device)
    elif not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a real tensor; got dtype {t.dtype}")
    if t.dim() > 1:
        raise ValueError(f"{name} must be a scalar or have shape (N,); got shape {tuple(t.shape)}")
    t = t.to(dtype=dtype, device=device)
    if _VALIDATE and t.numel():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            idx = int(torch.nonzero(bad.reshape(-1))[0, 0])
            raise ValueError(f"{name} contains NaN or inf (at index {idx})")
        lo, hi = float(t.detach().min()), float(t.detach().max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} must lie in the model's time interval [0, 1]; got values in [{lo:g}, {hi:g}]")
    if t.dim() == 0:
        if n is None:
            return t.reshape(1)
        return t.reshape(1).repeat(n)
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but there are {n} points; give a scalar or shape ({n},)")
    return t


def check_context(context: Optional[Tensor], context_dim: int, n: int, dtype: torch.dtype, name: str = "context") -> Optional[Tensor]:
    """Context must be given exactly when ``context_dim > 0``, with shape ``(n, C)`` or ``(C,)``."""
    if context_dim == 0:
        if context is not None:
            raise ValueError(f"{name} was given but the model was built with context_dim=0")
        return None
    if context is None:
        raise ValueError(f"{name} is required: the model was built with context_dim={context_dim}")
    if not isinstance(context, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(context).__name__}")
    if context.dim() == 1:
        context = context.unsqueeze(0)
    if context.dim() != 2 or context.shape[1] != context_dim:
        raise ValueError(f"{name} must have shape (N, {context_dim}) or ({context_dim},); got {tuple(context.shape)}")
    if context.shape[0] == 1 and n != 1:
        context = context.expand(n, context_dim)
    elif context.shape[0] != n:
        raise ValueError(f"{name} has {context.shape[0]} rows but there are {n} points")
    if _VALIDATE and not bool(torch.isfinite(context).all()):
        row = _first_bad(~torch.isfinite(context))
        raise ValueError(f"{name} contains NaN or inf (first at row {row})")
    return context.to(dtype)


def check_count(n: Optional[int], name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n!r}")
    return int(n)


def check_time_bound(v: object, name: str) -> float:
    """A scalar time (float, int or 0-d tensor) in ``[0, 1]``."""
    if isinstance(v, Tensor) and v.dim() == 0 and not v.dtype == torch.bool:
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= float(v) <= 1.0):
        raise ValueError(f"{name} must be a number in the model's time interval [0, 1]; got {v!r}")
    return float(v)


def check_dtype(x: Tensor, dtype: torch.dtype, name: str) -> None:
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {dtype}; convert one of them")


def prepare_inputs(model, t: TimeLike, x: Tensor, context: Optional[Tensor], name: str = "x") -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Validate the ``(t, x, context)`` of a call on ``model`` (anything with ``dim``, ``context_dim``, ``dtype``).

    ``x: (N, dim)`` of the model's dtype, finite; ``t``: a scalar or ``(N,)`` in ``[0, 1]``; ``context`` as
    :func:`check_context`. Returns ``t: (N,)``, ``x``, ``context: (N, C)`` or None.
    """
    check_points(x, model.dim, name)
    check_dtype(x, model.dtype, name)
    n = x.shape[0]
    return as_times(t, n, x.dtype, x.device), x, check_context(context, model.context_dim, n, x.dtype)
