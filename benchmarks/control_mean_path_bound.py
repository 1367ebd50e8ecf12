"""The control cost of the crowd's mean path: how cheap can a DeepGSB crowd get around the walls?

For any drift ``b`` the Itô mean ``m(s) = E[X_s]`` has ``m' = E[b(s, X_s)]``, so by Jensen the control term of the
Monte-Carlo cost satisfies

    E int_0^T lambda |b - v|^2 ds  >=  int_0^T lambda |m'(s) - v|^2 ds.

This script minimises the right-hand side over mean paths from the initial to the target mean that stay outside
every obstacle of the problem enlarged by ``margin`` (the region ``sum_i a_i (x_i - c_i)^2 < (sqrt(threshold) +
margin)^2``): a point crowd (margin 0) is the cheapest; a crowd of spread ``sigma`` that keeps its particles out
needs a margin of a few ``sigma``. It is a guide, not a proof: the mean of a crowd that avoids the walls need not
avoid them itself (a crowd may split), and the mean-field and squeezing costs are left out. Piecewise-linear
path on ``--points`` nodes, L-BFGS with a quadratic exterior penalty, two starts (S-shapes of amplitude 6 and 4,
``m0 + s (m1 - m0) + amp sin(2 pi s) e_y``); the best feasible path is reported. ``margin`` is in units of
``sqrt(q)``: on the S-tunnel it is the distance in ``y`` past the walls' tips. The Jensen step needs a constant base
drift ``v`` (DeepGSB's problems).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/control_mean_path_bound.py --problem stunnel --kwargs '{"g": 0.5}'
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from probflux.control import problems as cp


def _path_control(problem, p: torch.Tensor, ds: float) -> torch.Tensor:
    """``sum_k lambda |(p_{k+1} - p_k) / ds - v|^2 ds`` for nodes ``p: (K + 1, D)`` (the problem's own control cost)."""
    vel = (p[1:] - p[:-1]) / ds
    t = torch.arange(p.shape[0] - 1, dtype=torch.float64) * ds
    return (problem.control_cost(t, p[:-1], vel) * ds).sum()


def _optimise(problem, z: torch.Tensor, m0: torch.Tensor, m1: torch.Tensor, margin: float, ds: float,
              penalty: float, max_iter: int) -> torch.Tensor:
    """L-BFGS on the interior nodes ``z: (K - 1, D)`` with a quadratic exterior penalty; returns all nodes."""
    z = z.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        p = torch.cat([m0[None], z, m1[None]])
        pen = sum(torch.relu((math.sqrt(o.threshold) + margin) ** 2 - (o.a * (p - o.c) ** 2).sum(-1)).pow(2).sum()
                  for o in problem.obstacles)
        loss = _path_control(problem, p, ds) + penalty * pen
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    return torch.cat([m0[None], z.detach(), m1[None]])


def mean_path_cost(problem, margin: float, points: int = 300, starts: tuple[float, ...] = (6.0, 4.0),
                   penalty: float = 1e6, max_iter: int = 1500) -> tuple[float, torch.Tensor]:
    """Minimal ``int lambda |m' - v|^2 ds`` over feasible mean paths and the path (``(points + 1, D)`` nodes)."""
    ds = problem.horizon / points
    m0 = problem.initial.components[1].T @ problem.initial.components[0]  # the laws' means: (D,)
    m1 = problem.target.components[1].T @ problem.target.components[0]
    s = torch.linspace(0, 1, points + 1, dtype=torch.float64)[1:-1, None]
    e_y = torch.zeros_like(m0)
    e_y[1] = 1.0
    best: tuple[float, torch.Tensor] = (math.inf, None)
    for amp in starts:
        p = _optimise(problem, m0 + s * (m1 - m0) + amp * torch.sin(2 * math.pi * s) * e_y, m0, m1, margin, ds, penalty, max_iter)
        with torch.no_grad():  # feasibility on a 4x finer piecewise-linear check of the exact obstacles
            fine = torch.cat([p[:-1] + f * (p[1:] - p[:-1]) for f in (0.0, 0.25, 0.5, 0.75)] + [p[-1:]])
            c = float(_path_control(problem, p, ds))
        if not bool(problem.inside_obstacle(fine).any()) and c < best[0]:
            best = (c, p)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problem", default="stunnel")
    ap.add_argument("--kwargs", default='{"g": 0.5}', help="JSON keyword arguments of the problem")
    ap.add_argument("--margins", default="0.05,0.25,0.5,1.0")  # in units of sqrt(q) (module doc)
    ap.add_argument("--points", type=int, default=300)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    problem = cp.problem_by_name(args.problem, **json.loads(args.kwargs))
    for margin in (float(m) for m in args.margins.split(",")):
        cost, _ = mean_path_cost(problem, margin, args.points)
        print(f"{args.problem} {args.kwargs} margin {margin}: minimal control cost of the mean path {cost:.1f}", flush=True)


if __name__ == "__main__":
    main()
