"""Affine map between data coordinates ``(t, x)`` and the model's coordinates ``(s, z)``.

Models live on ``s in [0, 1]`` with roughly standardised ``z``:

    s = (t - t0) / (t1 - t0),        z = (x - shift) / scale.

An affine change of variables keeps the continuity equation exact, so every quantity converts in
closed form:

    log p_data(t, x) = log p_model(s, z) - sum_d log scale_d
    u_data(t, x)     = scale * u_model(s, z) / (t1 - t0)
    grad_x log p     = grad_z log p_model / scale
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor


@dataclass
class Normalizer:
    """Affine map data ↔ model: ``s = (t - t0)/(t1 - t0)``, ``z = (x - shift)/scale``.

    Args:
        t0, t1: the data's time interval, mapped to ``[0, 1]``.
        shift: ``(D,)`` subtracted from ``x``.
        scale: ``(D,)`` positive, divides ``x - shift``.
    """

    t0: float
    t1: float
    shift: Tensor
    scale: Tensor

    def __post_init__(self) -> None:
        self.t0, self.t1 = float(self.t0), float(self.t1)
        if not (math.isfinite(self.t0) and math.isfinite(self.t1)) or self.t1 <= self.t0:
            raise ValueError(f"Normalizer: need finite t0 < t1, got t0={self.t0}, t1={self.t1}")
        self.shift = torch.as_tensor(self.shift, dtype=torch.float64).reshape(-1)
        self.scale = torch.as_tensor(self.scale, dtype=torch.float64).reshape(-1)
        if self.shift.shape != self.scale.shape:
            raise ValueError(f"Normalizer: shift {tuple(self.shift.shape)} and scale {tuple(self.scale.shape)} differ in shape")
        if not torch.isfinite(self.shift).all() or not (self.scale > 0).all() or not torch.isfinite(self.scale).all():
            raise ValueError("Normalizer: shift must be finite and scale finite and > 0")

    @classmethod
    def identity(cls, dim: int, t0: float = 0.0, t1: float = 1.0) -> Normalizer:
        return cls(t0, t1, torch.zeros(dim), torch.ones(dim))

    @classmethod
    def fit(cls, t: Tensor, x: Tensor, *, t0: Union[float, None] = None, t1: Union[float, None] = None,
            standardize: bool = True) -> Normalizer:
        """Time interval from ``t`` (or the given ``t0``/``t1``); per-dimension mean/std of ``x: (N, D)``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        x = torch.as_tensor(x, dtype=torch.float64)
        lo = float(t.min()) if t0 is None else float(t0)
        hi = float(t.max()) if t1 is None else float(t1)
        if hi <= lo:
            hi = lo + 1.0
        if standardize:
            shift, scale = x.mean(0), x.std(0) if x.shape[0] > 1 else torch.ones(x.shape[1], dtype=torch.float64)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        else:
            shift, scale = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
        return cls(lo, hi, shift, scale)

    @property
    def dim(self) -> int:
        return self.shift.numel()

    @property
    def duration(self) -> float:
        return self.t1 - self.t0

    @property
    def log_det(self) -> float:
        """``sum_d log scale_d``: subtract from a model log-density to get the data log-density."""
        return float(self.scale.log().sum())

    def _like(self, v: Tensor, ref: Tensor) -> Tensor:
        return v.to(dtype=ref.dtype, device=ref.device)

    def t_to_model(self, t: Union[Tensor, float]) -> Union[Tensor, float]:
        return (t - self.t0) / self.duration

    def t_to_data(self, s: Union[Tensor, float]) -> Union[Tensor, float]:
        return self.t0 + s * self.duration

    def x_to_model(self, x: Tensor) -> Tensor:
        return (x - self._like(self.shift, x)) / self._like(self.scale, x)

    def x_to_data(self, z: Tensor) -> Tensor:
        return z * self._like(self.scale, z) + self._like(self.shift, z)

    def log_prob_to_data(self, log_p: Tensor) -> Tensor:
        return log_p - self.log_det

    def velocity_to_data(self, u: Tensor) -> Tensor:
        return u * self._like(self.scale, u) / self.duration

    def state_dict(self) -> dict[str, Any]:
        return {"t0": self.t0, "t1": self.t1, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Normalizer:
        try:
            return cls(state["t0"], state["t1"], torch.tensor(state["shift"]), torch.tensor(state["scale"]))
        except KeyError as e:
            raise ValueError(f"Normalizer state is missing the key {e}") from None
