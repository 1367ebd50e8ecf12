"""Running costs of a control problem that are not a plain ``V(t, x)``: obstacles and mean-field terms.

Obstacles are quadric regions ``{x : sum_i a_i (x_i - c_i)^2 < threshold}`` (discs, ellipses, the
V-neck and S-tunnel walls of DeepGSB) with three penalties:

* ``"hard"``: ``weight * 1[x inside]`` — DeepGSB's specification (``weight = 1500``); its gradient is zero,
  so it is for evaluation; gradient-based training uses a smooth surrogate of it.
* ``"sigmoid"``: ``weight * sigmoid((threshold - q(x)) / width)``, a smoothed indicator (→ hard as ``width → 0``).
* ``"softplus"``: ``weight * width * softplus((threshold - q(x)) / width)``, the unbounded barrier of the paper
  (``softplus(R^2 - |x - c|^2)`` for a disc, ``width = 1``).

Mean-field terms are functionals of the law ``rho_t`` of the state (exact for probflux, whose ``rho_t`` is known):
``Entropy: coef E[log rho + offset]``, ``Congestion: coef E[rho]``, ``InteractionKernel: coef E_{x,y~rho} k(x, y)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Obstacle", "Disc", "Ellipse", "smooth_obstacles", "MeanField", "Entropy", "Congestion", "InteractionKernel",
           "inverse_quadratic", "mean_field_values"]

PENALTIES = ("hard", "sigmoid", "softplus")


class Obstacle:
    r"""The quadric region ``sum_i a_i (x_i - c_i)^2 < threshold`` as a running cost.

    Args:
        coefficients: ``a: (D,)`` (any signs: ``5 x^2 - y^2 < -0.36`` is the V-neck wall).
        center: ``c: (D,)``. threshold: the level.
        weight: penalty height (DeepGSB: 1500). penalty: ``"hard" | "sigmoid" | "softplus"`` (module doc).
        width: smoothing width of the sigmoid/softplus, in units of ``q(x) = sum a_i (x_i - c_i)^2``.
    """

    def __init__(self, coefficients: Sequence[float], center: Sequence[float], threshold: float, *,
                 weight: float = 1500.0, penalty: str = "hard", width: float = 1.0) -> None:
        a = torch.as_tensor(coefficients, dtype=torch.float64).reshape(-1)
        c = torch.as_tensor(center, dtype=torch.float64).reshape(-1)
        if a.shape != c.shape:
            raise ValueError(f"Obstacle: coefficients has {a.shape[0]} entries but center has {c.shape[0]}")
        if penalty not in PENALTIES:
            raise ValueError(f"Obstacle: penalty must be one of {PENALTIES}; got {penalty!r}")
        if not (float(weight) >= 0 and math.isfinite(float(weight))):
            raise ValueError(f"Obstacle: weight must be finite and >= 0; got {weight!r}")
        if not float(width) > 0:
            raise ValueError(f"Obstacle: width must be > 0; got {width!r}")
        self.a, self.c, self.threshold = a, c, float(threshold)
        self.weight, self.penalty, self.width = float(weight), penalty, float(width)

    @property
    def dim(self) -> int:
        return self.a.shape[0]

    def level(self, x: Tensor) -> Tensor:
        """``threshold - q(x)``: positive inside. ``x: (N, D) -> (N,)``."""
        return self.threshold - ((x - self.c.to(x)) ** 2 * self.a.to(x)).sum(-1)

    def inside(self, x: Tensor) -> Tensor:
        """``(N,)`` bool."""
        return self.level(x) > 0

    def cost(self, x: Tensor, penalty: Optional[str] = None) -> Tensor:
        """The penalty at ``x: (N, D)`` → ``(N,)`` (``penalty`` overrides the obstacle's own)."""
        kind = self.penalty if penalty is None else penalty
        s = self.level(x)
        if kind == "hard":
            return self.weight * (s > 0).to(x.dtype)
        if kind == "sigmoid":
            return self.weight * torch.sigmoid(s / self.width)
        if kind == "softplus":
            return self.weight * self.width * F.softplus(s / self.width)
        raise ValueError(f"penalty must be one of {PENALTIES}; got {kind!r}")

    def with_penalty(self, penalty: str, weight: Optional[float] = None, width: Optional[float] = None) -> Obstacle:
        """The same region with another penalty (e.g. a smooth surrogate for training)."""
        return Obstacle(self.a, self.c, self.threshold, weight=self.weight if weight is None else weight,
                        penalty=penalty, width=self.width if width is None else width)

    def __repr__(self) -> str:
        return (f"Obstacle(a={self.a.tolist()}, c={self.c.tolist()}, threshold={self.threshold}, penalty={self.penalty!r}, "
                f"weight={self.weight})")


def Disc(center: Sequence[float], radius: float, **kwargs) -> Obstacle:
    """``|x - center| < radius`` (a ball in ``D`` dims)."""
    if not float(radius) > 0:
        raise ValueError(f"Disc: radius must be > 0; got {radius!r}")
    return Obstacle([1.0] * len(center), center, float(radius) ** 2, **kwargs)


def Ellipse(center: Sequence[float], axes: Sequence[float], **kwargs) -> Obstacle:
    """``sum_i ((x_i - c_i)/axes_i)^2 < 1``."""
    ax = [float(v) for v in axes]
    if len(ax) != len(center) or any(not v > 0 for v in ax):
        raise ValueError(f"Ellipse: axes must be {len(center)} positive numbers; got {list(axes)}")
    return Obstacle([1.0 / v**2 for v in ax], center, 1.0, **kwargs)


def smooth_obstacles(obstacles: Sequence[Obstacle]) -> list[Obstacle]:
    """The obstacles for gradient-based training: each ``"hard"`` one as a ``"softplus"`` surrogate of the same
    region (an indicator has zero gradient), the others as they are."""
    return [o if o.penalty != "hard" else o.with_penalty("softplus") for o in obstacles]


class MeanField:
    """A mean-field running cost ``coef * E_{rho_t}[...]``; ``needs`` says what its estimate uses."""

    needs: str = "density"  # "density": log rho at the samples; "pairs": a second independent sample
    name: str = "mean_field"

    def __init__(self, coef: float) -> None:
        coef = float(coef)
        if not math.isfinite(coef):
            raise ValueError(f"{type(self).__name__}: coef must be finite; got {coef!r}")
        self.coef = coef

    def value(self, x: Tensor, log_rho: Optional[Tensor] = None, y: Optional[Tensor] = None) -> Tensor:
        """Per-sample integrand ``(N,)`` whose mean is the term: ``x, y: (N, D)`` samples, ``log_rho: (N,)``."""
        raise NotImplementedError


class Entropy(MeanField):
    """``coef * E_rho[log rho + offset]`` (negative entropy; DeepGSB's V-neck uses ``offset = 1``)."""

    name = "entropy"

    def __init__(self, coef: float, offset: float = 0.0) -> None:
        super().__init__(coef)
        self.offset = float(offset)

    def value(self, x: Tensor, log_rho: Optional[Tensor] = None, y: Optional[Tensor] = None) -> Tensor:
        return self.coef * (log_rho + self.offset)

    def __repr__(self) -> str:
        return f"Entropy(coef={self.coef}, offset={self.offset})"


class Congestion(MeanField):
    """``coef * E_rho[rho]`` (= ``coef * int rho^2``)."""

    name = "congestion"

    def value(self, x: Tensor, log_rho: Optional[Tensor] = None, y: Optional[Tensor] = None) -> Tensor:
        return self.coef * log_rho.exp()

    def __repr__(self) -> str:
        return f"Congestion(coef={self.coef})"


def inverse_quadratic(x: Tensor, y: Tensor) -> Tensor:
    """DeepGSB's interaction kernel ``2 / (|x - y|^2 + 1)``, ``(N, D), (N, D) -> (N,)``."""
    return 2.0 / ((x - y).pow(2).sum(-1) + 1.0)


class InteractionKernel(MeanField):
    """``coef * E_{x, y ~ rho_t independent} k(x, y)``; ``k: (N, D), (N, D) -> (N,)``."""

    needs = "pairs"
    name = "interaction"

    def __init__(self, coef: float, kernel: Callable[[Tensor, Tensor], Tensor] = inverse_quadratic) -> None:
        super().__init__(coef)
        if not callable(kernel):
            raise TypeError(f"InteractionKernel: kernel must be callable; got {type(kernel).__name__}")
        self.kernel = kernel

    def value(self, x: Tensor, log_rho: Optional[Tensor] = None, y: Optional[Tensor] = None) -> Tensor:
        return self.coef * self.kernel(x, y)

    def __repr__(self) -> str:
        return f"InteractionKernel(coef={self.coef}, kernel={getattr(self.kernel, '__name__', 'k')})"


# term names the path costs use besides the mean-field ones; a mean-field term never takes one of them
_OTHER_TERMS = ("control", "state", "terminal", "loss", "initial_nll", "target_nll", "initial_kl", "target_kl")


def mean_field_values(terms: Sequence[MeanField], x: Tensor, log_rho: Callable[[], Tensor],
                      pairs: Callable[[], Tensor]) -> dict[str, Tensor]:
    """The per-sample integrands ``(N,)`` of the mean-field ``terms`` at samples ``x: (N, D)`` of ``rho``.

    ``log_rho()`` gives ``log rho`` at ``x`` ``(N,)`` and ``pairs()`` a second independent sample ``(N, D)``;
    each is called once, and only if a term needs it (``needs``), density first. Keys are the terms' names,
    the ``k``-th term's as ``f"{name}_{k}"`` when an earlier term or another path cost has taken its name, so
    every estimate of a problem's path cost (simulation-free, Monte Carlo, training) names its terms alike.
    """
    log_p = log_rho() if any(m.needs == "density" for m in terms) else None
    y = pairs() if any(m.needs == "pairs" for m in terms) else None
    out: dict[str, Tensor] = {}
    for k, m in enumerate(terms):
        key = m.name if m.name not in out and m.name not in _OTHER_TERMS else f"{m.name}_{k}"
        out[key] = m.value(x, log_p, y)
    return out


def kde_log_density(x: Tensor, points: Optional[Tensor] = None, bandwidth: Optional[float] = None) -> Tensor:
    """Gaussian kernel estimate of ``log rho`` at ``x: (N, D)`` from ``points: (M, D)`` (default ``x``);
    Scott's bandwidth ``M^{-1/(D+4)} * std``. Differentiable (the simulation-based baseline trains on it)."""
    pts = x if points is None else points
    M, D = pts.shape
    if bandwidth is None:
        bandwidth = float(pts.detach().std(0).mean()) * M ** (-1.0 / (D + 4))
    h = max(bandwidth, 1e-6)
    d2 = torch.cdist(x, pts).pow(2)
    return torch.logsumexp(-0.5 * d2 / h**2, -1) - math.log(M) - 0.5 * D * math.log(2 * math.pi * h**2)
