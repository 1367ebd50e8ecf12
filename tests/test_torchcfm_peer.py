"""The TorchCFM baseline wrapper ``benchmarks/peers/torchcfm_peer.py`` (skipped without torchcfm).

Install: ``pip install --no-deps torchcfm``. Numbers in comments were measured on CPU, one thread,
torchcfm 1.0.7; the file runs in about 10 s.
"""
from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchcfm")
pytest.importorskip("torchsde")
pytest.importorskip("torchdiffeq")

from probflux.metrics import w1  # noqa: E402

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "torchcfm_peer.py"
_spec = importlib.util.spec_from_file_location("torchcfm_peer", _PATH)
tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tp)
CFMPeer = tp.CFMPeer

SHIFT = torch.tensor([3.0, 1.0])


def _problem():
    """N(0, I) at t = 0 -> N((3, 1), 0.25 I) at t = 1: 1000 training and 500 test cells per snapshot."""
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g) * 0.5 + SHIFT
    test0, test1 = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) * 0.5 + SHIFT
    floor = torch.randn(500, 2, generator=g) * 0.5 + SHIFT  # a second sample of the target law
    return src, tgt, test0, test1, floor


@pytest.fixture(scope="module")
def problem():
    return _problem()


def test_otcfm_transports_onto_the_target(problem):
    """300 steps, batch 128: W1(test cells, target) falls from 3.21 to 0.15 (measured), against a noise
    floor of 0.10 (W1 between two 500-cell samples of the target law). Asserted: below 0.35 and below a
    tenth of the initial distance. Integrating back from t = 1 to 0 returns the cells within 0.002."""
    src, tgt, test0, test1, floor = problem
    before, noise = w1(test0, test1), w1(test1, floor)
    assert before == pytest.approx(3.21, abs=0.01) and noise == pytest.approx(0.10, abs=0.01)
    peer = CFMPeer("otcfm", 2, batch_size=128, seed=0)
    info = peer.fit([0.0, 1.0], [src, tgt], steps=300)
    assert info["steps"] == 300 and math.isfinite(info["loss"]) and info["wall_seconds"] > 0
    out = peer.transport(test0, 0.0, 1.0)
    assert out.shape == test0.shape and out.dtype == test0.dtype
    after = w1(out, test1)
    assert after < 0.35 and after < 0.1 * before, (before, after)
    # backwards through the same ODE lands (close to) where it started
    back = peer.transport(out, 1.0, 0.0)
    assert float((back - test0).norm(dim=1).mean()) < 0.05


def test_wall_seconds_budget_is_respected(problem):
    src, tgt, *_ = problem
    peer = CFMPeer("otcfm", 2, batch_size=256, seed=1)
    budget = 0.5
    start = time.perf_counter()
    info = peer.fit([0.0, 1.0], [src, tgt], wall_seconds=budget)
    outer = time.perf_counter() - start
    # the clock is read before every step, so the overrun is one step (~5 ms here); 0.25 s of slack
    assert info["steps"] > 0
    assert budget <= info["wall_seconds"] < budget + 0.25, info
    assert outer < budget + 0.75, outer  # set-up (network, matchers) included
    # with both limits, whichever comes first
    assert peer.fit([0.0, 1.0], [src, tgt], steps=5, wall_seconds=60.0)["steps"] == 5
    assert peer.fit([0.0, 1.0], [src, tgt], steps=10**9, wall_seconds=0.0)["steps"] == 0


class _FakeClock:
    """A clock that advances ``tick`` seconds per reading: the budget then depends on readings, not on the machine."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick, self.reads = 0.0, tick, 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.tick
        return self.now


def test_clock_budget_counts_steps_on_the_given_clock(problem):
    """With a clock that advances 1 s per reading, fit reads it once at the start, once before every step and
    once at the end: a budget of 5 s allows exactly 4 steps (readings 2..5 see 1..4 s elapsed, the 6th sees 5 s)
    and reports the final reading minus the first, 7 - 1 = 6 s. The real time taken is irrelevant, so the test cannot be flaky."""
    src, tgt, *_ = problem
    clock = _FakeClock(1.0)
    info = CFMPeer("otcfm", 2, batch_size=64, seed=0).fit([0.0, 1.0], [src, tgt], wall_seconds=5.0, clock=clock)
    assert info["steps"] == 4 and info["wall_seconds"] == 6.0 and clock.reads == 7
    # a finer clock allows proportionally more steps: 0.25 s per reading, 5 s budget -> 19 steps
    info = CFMPeer("otcfm", 2, batch_size=64, seed=0).fit([0.0, 1.0], [src, tgt], wall_seconds=5.0, clock=_FakeClock(0.25))
    assert info["steps"] == 19
    # the CPU clock works as a budget too, and a non-callable clock is refused by name
    info = CFMPeer("otcfm", 2, batch_size=64, seed=0).fit([0.0, 1.0], [src, tgt], wall_seconds=0.2, clock=time.process_time)
    assert info["steps"] > 0 and 0.2 <= info["wall_seconds"] < 0.45, info
    with pytest.raises(TypeError, match="clock must be a callable"):
        CFMPeer("otcfm", 2, seed=0).fit([0.0, 1.0], [src, tgt], wall_seconds=1.0, clock=1.0)


def test_sf2m_runs_and_is_reproducible(problem):
    """SF2M, 200 steps, batch 64: both samplers give finite cells near the target (measured W1 on 200 test
    cells: ODE 0.145, SDE with 50 Euler-Maruyama steps 0.146, from 3.2; asserted < 0.5), and the SDE
    path is fixed by its seed."""
    src, tgt, test0, test1, _ = problem
    peer = CFMPeer("sf2m", 2, batch_size=64, seed=0)
    info = peer.fit([0.0, 1.0], [src, tgt], steps=200)
    assert info["steps"] == 200 and math.isfinite(info["loss"])
    x = test0[:200]
    ode = peer.transport(x, 0.0, 1.0)
    sde = peer.transport(x, 0.0, 1.0, sde=True, steps=50)
    assert torch.isfinite(ode).all() and torch.isfinite(sde).all()
    assert w1(ode, test1) < 0.5 and w1(sde, test1) < 0.5
    assert torch.equal(sde, peer.transport(x, 0.0, 1.0, sde=True, steps=50))
    assert not torch.equal(sde, peer.transport(x, 0.0, 1.0, sde=True, steps=50, seed=123))
    with pytest.raises(ValueError, match="forwards only"):
        peer.transport(x, 1.0, 0.0, sde=True)


def test_fit_is_seeded_and_leaves_global_rngs_alone(problem):
    src, tgt, test0, *_ = problem
    np_before = np.random.get_state()[1].copy()
    torch_before = torch.get_rng_state().clone()
    outs = []
    for _ in range(2):
        peer = CFMPeer("otcfm", 2, batch_size=32, seed=7)
        peer.fit([0.0, 1.0], [src, tgt], steps=20)
        outs.append(peer.transport(test0[:50], 0.0, 1.0))
    assert torch.equal(outs[0], outs[1])
    assert np.array_equal(np.random.get_state()[1], np_before)
    assert torch.equal(torch.get_rng_state(), torch_before)


def test_time_units_are_the_callers(problem):
    """Times (0, 1) and (10, 12) give the same internal problem, so the same cells; the velocity is in the
    caller's units (halved when the gap doubles)."""
    src, tgt, test0, *_ = problem
    a, b = CFMPeer("icfm", 2, batch_size=32, seed=3), CFMPeer("icfm", 2, batch_size=32, seed=3)
    a.fit([0.0, 1.0], [src, tgt], steps=30)
    b.fit([10.0, 12.0], [src, tgt], steps=30)
    x = test0[:20]
    assert torch.allclose(a.transport(x, 0.0, 1.0), b.transport(x, 10.0, 12.0), atol=1e-6)
    assert torch.allclose(a.velocity(0.5, x), 2.0 * b.velocity(11.0, x), atol=1e-6)


def test_leave_one_out_protocol():
    """Snapshots of N((2t, 0), I) at t = 0, 1, 2, 3 with t = 2 held out: fit on t = 0, 1, 3 (gaps 1 and 2),
    push the t = 1 cells to t = 2 and compare with the held-out cells. Measured: W1 0.23 against a
    pushed-nowhere baseline (t = 1 cells vs t = 2 cells) of 1.93; asserted < 0.5."""
    g = torch.Generator().manual_seed(5)
    snap = {t: torch.randn(600, 2, generator=g) + torch.tensor([2.0 * t, 0.0]) for t in (0, 1, 2, 3)}
    peer = CFMPeer("otcfm", 2, batch_size=128, seed=0)
    peer.fit([0.0, 1.0, 3.0], [snap[0], snap[1], snap[3]], steps=300)
    pushed = peer.transport(snap[1], 1.0, 2.0)
    baseline, err = w1(snap[1], snap[2]), w1(pushed, snap[2])
    assert baseline > 1.8 and err < 0.5, (baseline, err)


def test_validation():
    with pytest.raises(ValueError, match="^method must be one of"):
        CFMPeer("rf", 2)
    with pytest.raises(ValueError, match="^dim must be a positive integer"):
        CFMPeer("otcfm", 0)
    with pytest.raises(ValueError, match="^sigma must be > 0 for sf2m"):
        CFMPeer("sf2m", 2, sigma=0.0)
    peer = CFMPeer("otcfm", 2)
    x = torch.zeros(4, 2)
    with pytest.raises(RuntimeError, match="fit must be called"):
        peer.transport(x, 0.0, 1.0)
    with pytest.raises(ValueError, match="give steps, wall_seconds or both"):
        peer.fit([0.0, 1.0], [x, x])
    with pytest.raises(ValueError, match="^samples must hold one tensor per time"):
        peer.fit([0.0, 1.0, 2.0], [x, x], steps=1)
    with pytest.raises(ValueError, match=r"^times must be strictly increasing; times\[0\]"):
        peer.fit([1.0, 1.0], [x, x], steps=1)
    with pytest.raises(ValueError, match=r"^samples\[1\] must have shape \(n, 2\)"):
        peer.fit([0.0, 1.0], [x, torch.zeros(4, 3)], steps=1)
    with pytest.raises(ValueError, match=r"^samples\[0\] contains NaN or inf \(first at row 2\)"):
        peer.fit([0.0, 1.0], [torch.tensor([[0.0, 0], [0, 0], [float("nan"), 0]]), x], steps=1)
    peer.fit([0.0, 1.0], [x + torch.randn(4, 2), x + 1], steps=1)
    with pytest.raises(ValueError, match="only method='sf2m'"):
        peer.transport(x, 0.0, 1.0, sde=True)
    with pytest.raises(ValueError, match=r"^x0 must have shape \(n, 2\)"):
        peer.transport(torch.zeros(3), 0.0, 1.0)
