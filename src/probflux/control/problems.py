"""Benchmark problems: DeepGSB's crowd navigation (Liu et al., 2022) and motion planning around random discs.

Specifications follow DeepGSB exactly (covariances are covariance *matrices*; obstacle penalties
``1500 * indicator``), with ``penalty="sigmoid"|"softplus"`` for smooth versions:

* ``gmm()``: ``T = 1, g = 1``, ``N(0, I)`` → equal-weight 8-component mixture, means on the circle of radius 16,
  identity covariances; discs of radius 1.5 at (6, 6), (6, -6), (-6, -6); no mean-field term.
* ``vneck(coef)``: ``T = 2, g = 1``, ``N((-7, 0), 0.2 I)`` → ``N((7, 0), 0.2 I)``, base drift (6, 0), obstacle
  ``5 x^2 - y^2 < -0.36``; entropy cost ``coef * E[log rho + 1]`` (DeepGSB: coef 0 and 3).
* ``stunnel(g)``: ``T = 3``, ``N((-11, -1), 0.5 I)`` → ``N((11, 1), 0.5 I)``, base drift (6, 0), obstacles
  ``20 (x - 5)^2 + (y - 6)^2 < 90`` and ``20 (x + 5)^2 + (y + 6)^2 < 90``; congestion
  ``0.5 * E_{x, y ~ rho_t}[2 / (|x - y|^2 + 1)]`` (DeepGSB: g in {0.5, 1, 2}).
* ``motion_planning(seed)``: the paper's qualitative example made reproducible: random discs between two
  Gaussians, kinetic control cost (fixed weight 1/2, ``g = 0`` allowed) and an entropy term that spreads the
  crowd over several gaps.
"""
from __future__ import annotations

import math

import torch

from .costs import Disc, Entropy, InteractionKernel, Obstacle, inverse_quadratic
from .laws import Gaussian, GaussianMixture
from .problem import ControlProblem

__all__ = ["gmm", "vneck", "stunnel", "motion_planning", "smooth_obstacles", "problem_by_name", "LENGTH_SCALE"]

#: typical displacement of each problem, used to scale networks' outputs
LENGTH_SCALE = {"gmm": 16.0, "vneck": 14.0, "stunnel": 22.0, "motion_planning": 10.0}


def gmm(penalty: str = "hard", weight: float = 1500.0) -> ControlProblem:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 16.0 * torch.stack([angles.cos(), angles.sin()], -1)
    discs = [Disc(c, 1.5, weight=weight, penalty=penalty) for c in ((6.0, 6.0), (6.0, -6.0), (-6.0, -6.0))]
    return ControlProblem(2, diffusion=1.0, initial=Gaussian([0.0, 0.0], 1.0), target=GaussianMixture(means, 1.0),
                          obstacles=discs, horizon=1.0)


def vneck(coef: float = 0.0, penalty: str = "hard", weight: float = 1500.0) -> ControlProblem:
    wall = Obstacle([5.0, -1.0], [0.0, 0.0], -0.36, weight=weight, penalty=penalty)
    mf = [Entropy(coef, offset=1.0)] if coef else []
    return ControlProblem(2, diffusion=1.0, base_drift=[6.0, 0.0], initial=Gaussian([-7.0, 0.0], 0.2),
                          target=Gaussian([7.0, 0.0], 0.2), obstacles=[wall], mean_field=mf, horizon=2.0)


def stunnel(g: float = 1.0, penalty: str = "hard", weight: float = 1500.0, congestion: float = 0.5) -> ControlProblem:
    walls = [Obstacle([20.0, 1.0], [5.0, 6.0], 90.0, weight=weight, penalty=penalty),
             Obstacle([20.0, 1.0], [-5.0, -6.0], 90.0, weight=weight, penalty=penalty)]
    mf = [InteractionKernel(congestion, inverse_quadratic)] if congestion else []
    return ControlProblem(2, diffusion=g, base_drift=[6.0, 0.0], initial=Gaussian([-11.0, -1.0], 0.5),
                          target=Gaussian([11.0, 1.0], 0.5), obstacles=walls, mean_field=mf, horizon=3.0)


def motion_planning(seed: int = 0, obstacles: int = 6, g: float = 0.0, entropy: float = 0.5,
                    penalty: str = "hard", weight: float = 1500.0) -> ControlProblem:
    """Discs of radius in [0.8, 1.4] at uniform centres in ``[-3, 3]^2`` (none covering an endpoint mean)."""
    gen = torch.Generator().manual_seed(seed)
    centers = -3 + 6 * torch.rand(obstacles, 2, generator=gen, dtype=torch.float64)
    radii = 0.8 + 0.6 * torch.rand(obstacles, generator=gen, dtype=torch.float64)
    discs = [Disc(c.tolist(), float(r), weight=weight, penalty=penalty) for c, r in zip(centers, radii)]
    mf = [Entropy(entropy)] if entropy else []
    return ControlProblem(2, diffusion=g, initial=Gaussian([-5.0, 0.0], 0.3), target=Gaussian([5.0, 0.0], 0.3),
                          obstacles=discs, mean_field=mf, horizon=1.0, control_weight=0.5)


def smooth_obstacles(problem: ControlProblem, weight: float, width: float, penalty: str = "softplus") -> list[Obstacle]:
    """The problem's obstacle regions with a smooth penalty (for gradient-based training)."""
    return [o.with_penalty(penalty, weight=weight, width=width) for o in problem.obstacles]


def problem_by_name(name: str, **kwargs) -> ControlProblem:
    table = {"gmm": gmm, "vneck": vneck, "stunnel": stunnel, "motion_planning": motion_planning}
    if name not in table:
        raise ValueError(f"unknown control problem {name!r}; choose one of {sorted(table)}")
    return table[name](**kwargs)
