"""The control benchmark's helpers: the W2-against-floor table and the mean-path bound on the control cost."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_control  # noqa: E402
import control_mean_path_bound as bound  # noqa: E402
import probflux.control as pc  # noqa: E402


def test_floor_table_difference_and_z_from_the_records():
    recs = [
        {"dataset": "p", "method": "sampling-floor", "metric": "w2_target_floor", "value": 0.10, "std": 0.004, "seeds": 16},
        {"dataset": "p", "method": "ours", "metric": "w2_target", "value": 0.11, "std": 0.003, "seeds": 9},
        {"dataset": "q", "method": "ours", "metric": "w2_target", "value": 0.5, "std": 0.1, "seeds": 3},  # no floor: no row
    ]
    lines = bench_control.floor_table(recs).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| p | ours |")
    e = 0.004 * math.sqrt(1 / 9 + 1 / 16)  # the floor's spread: a draw of W2 to the reference under "X_T ~ target"
    assert f"+0.01 ± {e:.2g}" in lines[2] and lines[2].endswith(f"| {0.01 / e:+.1f} |")
    wide = bench_control.floor_table([recs[0], dict(recs[1], std=0.04)]).splitlines()[2]  # its own spread is wider
    assert wide.endswith(f"| {0.01 / math.sqrt(0.04**2 / 9 + 0.004**2 / 16):+.1f} |")


def _problem(obstacles=()):
    return pc.ControlProblem(2, diffusion=1.0, base_drift=[6.0, 0.0], initial=pc.Gaussian([-7.0, 0.0], 0.2),
                             target=pc.Gaussian([7.0, 0.0], 0.2), obstacles=list(obstacles), horizon=2.0)


def test_mean_path_bound_is_the_straight_line_without_obstacles():
    # lambda = 1/(2 g^2) = 1/2; the optimum moves at constant speed: lambda |(m1 - m0)/T - v|^2 T = 0.5 * 1 * 2 = 1
    cost, path = bound.mean_path_cost(_problem(), 0.0, points=20, starts=(0.0,), max_iter=200)
    assert cost == pytest.approx(1.0, rel=1e-6)
    assert path[:, 1].abs().max() < 1e-6


def test_mean_path_bound_goes_around_a_disc_and_pays_for_it():
    disc = pc.Disc([0.0, 0.0], 1.0)
    cost, path = bound.mean_path_cost(_problem([disc]), 0.2, points=30, starts=(1.5,), max_iter=300)
    assert math.isfinite(cost) and cost > 1.5  # the detour of >= 1.2 in y costs more than the straight line's 1
    assert bool((path.norm(dim=-1) >= 1.0).all())
    wider, _ = bound.mean_path_cost(_problem([disc]), 0.5, points=30, starts=(1.5,), max_iter=300)
    assert wider > cost

