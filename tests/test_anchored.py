"""AnchoredMixture against closed forms (tests/test_contract.py runs the generic density contract on it).

* one kernel on a straight path with a fixed bandwidth is a translating Gaussian (density, velocity, score);
  natural cubic splines through collinear knots are that straight line;
* one kernel with the Brownian-bridge spread: ``s(t)^2 = s^2 + g^2 t (1 - t)``, velocity ``v + (s'/s)(x - mu)``;
* thousands of kernels integrate to one (2-D quadrature);
* kernels built from snapshots sit on observed cells at the snapshot times, and with ``curvature = 0`` their
  centres between two snapshots are exactly the McCann interpolation of the chained exact OT couplings;
* the per-time (matrix product) and per-point evaluations agree; bad arguments are named.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import probflux as pf
from probflux.transport import mccann_interpolation

D64 = torch.float64


def _straight(a, b, s, knots=(0.0, 1.0), curvature=1.0, bridge=0.0) -> pf.AnchoredMixture:
    a, b = torch.tensor(a, dtype=D64), torch.tensor(b, dtype=D64)
    tau = torch.tensor(knots, dtype=D64)
    paths = (a + tau[:, None] * (b - a))[None]  # (1, K, D), collinear knots
    return pf.AnchoredMixture.from_paths(list(knots), paths, scales=s, curvature=curvature, bridge=bridge)


@pytest.mark.parametrize("knots", [(0.0, 1.0), (0.2, 0.3, 0.5, 0.8)])
def test_one_kernel_on_a_line_is_a_translating_gaussian(knots):
    a, b, s = [0.5, -1.0], [2.0, 1.5], 0.7
    model = _straight(a, b, s, knots=knots)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=g, dtype=D64)  # beyond the end knots too (linear continuation)
    x = 3 * torch.randn(64, 2, generator=g, dtype=D64)
    v = torch.tensor(b, dtype=D64) - torch.tensor(a, dtype=D64)
    mu = torch.tensor(a, dtype=D64) + t[:, None] * v
    exact = torch.distributions.Normal(mu, s).log_prob(x).sum(-1)
    assert torch.allclose(model.log_prob(t, x), exact, atol=1e-12)
    assert torch.allclose(model.velocity(t, x), v.expand(64, 2), atol=1e-12)
    assert torch.allclose(model.score(t, x), -(x - mu) / s ** 2, atol=1e-12)
    # the same at one shared time (the matrix-product path)
    t0 = torch.full((64,), 0.3, dtype=D64)
    mu0 = torch.tensor(a, dtype=D64) + 0.3 * v
    assert torch.allclose(model.log_prob(t0, x), torch.distributions.Normal(mu0, s).log_prob(x).sum(-1), atol=1e-12)
    assert torch.allclose(model.velocity(t0, x), v.expand(64, 2), atol=1e-12)


def test_one_kernel_with_bridge_spread():
    a, b, s0, gb = [0.0, 1.0, -1.0], [1.0, -2.0, 0.5], 0.3, 0.8
    model = _straight(a, b, s0, bridge=gb)
    g = torch.Generator().manual_seed(1)
    t = torch.rand(32, generator=g, dtype=D64)
    x = torch.randn(32, 3, generator=g, dtype=D64)
    av, bv = torch.tensor(a, dtype=D64), torch.tensor(b, dtype=D64)
    mu = av + t[:, None] * (bv - av)
    var = s0 ** 2 + gb ** 2 * t * (1 - t)
    exact = torch.distributions.Normal(mu, var.sqrt()[:, None]).log_prob(x).sum(-1)
    assert torch.allclose(model.log_prob(t, x), exact, atol=1e-12)
    rate = 0.5 * gb ** 2 * (1 - 2 * t) / var  # s'/s
    assert torch.allclose(model.velocity(t, x), (bv - av) + rate[:, None] * (x - mu), atol=1e-12)
    # at the knots the bridge adds nothing
    assert torch.allclose(model.log_prob(torch.zeros(32, dtype=D64), x),
                          torch.distributions.Normal(av, s0).log_prob(x).sum(-1), atol=1e-12)


def test_thousands_of_kernels_integrate_to_one():
    """2000 kernels (per-kernel bandwidths, random weights, bridge spread) in 2-D at a time between knots:
    composite Simpson on a 201^2 grid over +-6 (the narrowest kernel spans > 3 grid steps per sd)."""
    g = torch.Generator().manual_seed(2)
    M, K, t = 2000, 3, 0.35
    paths = torch.randn(M, 1, 2, generator=g, dtype=D64).repeat(1, K, 1) + 0.5 * torch.randn(M, K, 2, generator=g, dtype=D64)
    model = pf.AnchoredMixture.from_paths([0.0, 0.4, 1.0], paths.clamp(-2.5, 2.5), scales=0.45, per_kernel_scale=True, bridge=0.3)
    with torch.no_grad():
        model.raw_scale.add_(0.2 * torch.randn(model.raw_scale.shape, generator=g, dtype=D64))
        model.logits.copy_(torch.randn(M, generator=g, dtype=D64))
    with torch.no_grad():
        assert float(model._kernels(torch.tensor([t], dtype=D64))[2].min()) > 3 * 12 / 200
    axis = np.linspace(-6.0, 6.0, 201)
    xx, yy = np.meshgrid(axis, axis, indexing="ij")
    with torch.no_grad():
        rho = model.log_prob(t, torch.tensor(np.stack([xx.ravel(), yy.ravel()], -1))).exp().numpy().reshape(xx.shape)
    mass = integrate.simpson(integrate.simpson(rho, x=axis, axis=1), x=axis)
    assert abs(mass - 1) < 1e-6, mass


def _rows_in(points: torch.Tensor, cloud: torch.Tensor, tol: float = 1e-12) -> bool:
    return bool(((points[:, None] - cloud[None]).abs().amax(-1).min(1).values < tol).all())


@pytest.mark.parametrize("curvature", [0.0, 1.0])
def test_kernels_from_snapshots_sit_on_cells(curvature):
    g = torch.Generator().manual_seed(3)
    times = [0.0, 0.3, 1.0]
    clouds = [torch.randn(n, 2, generator=g, dtype=D64) + k for k, n in enumerate((60, 45, 80))]
    model = pf.AnchoredMixture.from_snapshots(times, clouds, components=40, seed=0, curvature=curvature)
    assert model.components == 40 and model.dtype == D64
    for tk, cloud in zip(times, clouds):
        centres = model._kernels(torch.tensor([tk], dtype=D64))[0][0]
        assert _rows_in(centres, cloud)  # every centre is an observed cell of that snapshot ...
        assert torch.unique(centres, dim=0).shape[0] == 40  # ... and no cell is used twice
    # more kernels than the smallest snapshot has cells: paths through the chained couplings, still on cells
    many = pf.AnchoredMixture.from_snapshots(times, clouds, components=100, curvature=curvature)
    for tk, cloud in zip(times, clouds):
        assert _rows_in(many._kernels(torch.tensor([tk], dtype=D64))[0][0], cloud)


def test_straight_paths_between_two_snapshots_are_the_mccann_interpolation():
    g = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(50, 3, generator=g, dtype=D64), 2 + 0.5 * torch.randn(50, 3, generator=g, dtype=D64)
    model = pf.AnchoredMixture.from_snapshots([0.0, 1.0], [x0, x1], components=50, curvature=0.0, bandwidth="likelihood")
    for s in (0.25, 0.6):
        centres = model._kernels(torch.tensor([s], dtype=D64))[0][0]
        mc = mccann_interpolation(x0, x1, s)
        assert torch.allclose(torch.sort(centres[:, 0]).values, torch.sort(mc[:, 0]).values, atol=1e-12)
        assert _rows_in(centres, mc)


def test_time_warp_keeps_cells_at_snapshots_and_continuity():
    """With the W2-progress warp the kernels still sit on cells at the snapshot (clock) times, the continuity
    residual stays at round-off, and a one-kernel warped path moves at phi'(t) times the knot-time speed."""
    g = torch.Generator().manual_seed(6)
    times = [0.0, 0.1, 0.3, 1.0]
    clouds = [(1 + k) * torch.randn(n, 2, generator=g, dtype=D64) + k for k, n in enumerate((60, 45, 80, 50))]
    model = pf.AnchoredMixture.from_snapshots(times, clouds, components=40, warp=True, bridge=0.4)
    assert not torch.allclose(model.knots, torch.tensor(times, dtype=D64))  # progress knots differ from clock times
    for tk, cloud in zip(times, clouds):
        assert _rows_in(model._kernels(torch.tensor([tk], dtype=D64))[0][0], cloud)
    t = torch.rand(30, generator=g, dtype=D64)
    assert pf.continuity_residual(model, t, model.sample(t)).relative.max() < 1e-8
    line = pf.AnchoredMixture.from_paths([0.0, 0.5, 1.0], torch.tensor([[[0.0], [1.0], [2.0]]]), scales=0.3, warp=[0.0, 0.2, 1.0])
    p, dp = line._progress(t)
    assert torch.allclose(line.velocity(t, torch.zeros(30, 1, dtype=D64))[:, 0], 2 * dp, atol=1e-12)
    assert bool((dp > 0).all()) and torch.allclose(line._progress(torch.tensor([0.2], dtype=D64))[0], torch.tensor([0.5], dtype=D64))


def test_grouped_and_pointwise_evaluations_agree():
    g = torch.Generator().manual_seed(5)
    model = pf.AnchoredMixture(3, 30, per_kernel_scale=True, bridge=0.5, chunk_elements=200).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=D64))
    t = torch.tensor([0.1, 0.55, 0.9], dtype=D64).repeat_interleave(20)
    x = torch.randn(60, 3, generator=g, dtype=D64)
    grouped = model._fields(t, x, None, True, True)
    pointwise = model._fields_pointwise(t, x, True, True)
    for a, b in zip(grouped, pointwise):
        assert torch.allclose(a, b, atol=1e-12)


def test_sampling_matches_the_kernels():
    """Exact sampling: one kernel, mean and standard deviation of 20000 draws within 5 standard errors."""
    model = _straight([1.0, 2.0], [3.0, -2.0], 0.5, bridge=1.0)
    torch.manual_seed(0)
    x = model.sample(0.5, 20000)
    s = math.sqrt(0.25 + 0.25)
    assert torch.allclose(x.mean(0), torch.tensor([2.0, 0.0], dtype=D64), atol=5 * s / math.sqrt(20000))
    assert torch.allclose(x.std(0), torch.full((2,), s, dtype=D64), rtol=5 / math.sqrt(2 * 20000))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="knots"):
        pf.AnchoredMixture(2, 3, knots=[0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="curvature"):
        pf.AnchoredMixture(2, 3, curvature=1.5)
    with pytest.raises(ValueError, match="scale"):
        pf.AnchoredMixture(2, 3, scale="full")
    with pytest.raises(ValueError, match="components"):
        pf.AnchoredMixture(2, 0)
    with pytest.raises(ValueError, match="paths"):
        pf.AnchoredMixture.from_paths([0.0, 1.0], torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="scales"):
        pf.AnchoredMixture.from_paths([0.0, 1.0], torch.zeros(4, 2, 2), scales=0.0)
    with pytest.raises(ValueError, match="warp"):
        pf.AnchoredMixture(2, 3, knots=[0.0, 1.0], warp=[0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="cells"):
        pf.AnchoredMixture.from_snapshots([0.0, 1.0], [torch.zeros(4, 2)])


def test_exp_time_map_moves_kernels_at_the_closed_form_fraction():
    """``time_map="exp:k"``: knots at ``p(t) = expm1(k u)/expm1(k)``, so between two snapshots the centres are the
    McCann interpolation at the fraction ``(p(t) - p(a)) / (p(b) - p(a))``, and at the snapshots they are cells."""
    g = torch.Generator().manual_seed(7)
    times = [0.0, 0.5, 1.0]
    clouds = [torch.randn(30, 2, generator=g, dtype=D64) + 2 * k for k in range(3)]
    k = 1.5
    model = pf.AnchoredMixture.from_snapshots(times, clouds, components=30, time_map=f"exp:{k}")
    assert model.selection["settings"]["time_map"] == f"exp:{k}"
    for tk, cloud in zip(times, clouds):
        assert _rows_in(model._kernels(torch.tensor([tk], dtype=D64))[0][0], cloud)
    two = pf.AnchoredMixture.from_snapshots([0.0, 1.0], clouds[::2], components=30, time_map=f"exp:{k}")
    t = 0.3
    frac = math.expm1(k * t) / math.expm1(k)
    centres = two._kernels(torch.tensor([t], dtype=D64))[0][0]
    assert abs(float(two._progress(torch.tensor([t], dtype=D64))[0]) - frac) < 1e-6  # PCHIP through 65 points of p
    assert _rows_in(centres, mccann_interpolation(clouds[0], clouds[2], frac), tol=1e-5)
    t64 = torch.rand(20, generator=g, dtype=D64)
    assert pf.continuity_residual(model, t64, model.sample(t64)).relative.max() < 1e-8
    with pytest.raises(ValueError, match="time_map"):
        pf.AnchoredMixture.from_snapshots(times, clouds, components=10, time_map="exp:fast")


def test_leave_one_out_selection_uses_the_training_snapshots():
    """``select="loo"`` scores every grid value on the interior snapshots and keeps the best of each; with two
    snapshots there is nothing to hold out and the given settings stay."""
    g = torch.Generator().manual_seed(8)
    times = [0.0, 0.2, 0.6, 1.0]
    # progress fast early: the cloud moves 3, 1, 1 over the three gaps
    clouds = [0.3 * torch.randn(40, 2, generator=g, dtype=D64) + torch.tensor([c, 0.0], dtype=D64) for c in (0.0, 3.0, 4.0, 5.0)]
    model = pf.AnchoredMixture.from_snapshots(times, clouds, components=40, select="loo", loo_cells=40)
    chosen, scores = model.selection["settings"], model.selection["scores"]
    assert set(scores) == {"time_map", "bridge", "bandwidth_factor"}
    assert set(scores["time_map"]) == set(pf.densities.anchored.LOO_TIME_MAPS)
    for key, trial in scores.items():
        assert chosen[key] == min(trial, key=trial.get)
    assert chosen["time_map"] != "clock"  # the clock puts the held-out clouds far from where they are
    kept = pf.AnchoredMixture.from_snapshots(times[:2], clouds[:2], components=40, select="loo", bridge=0.3)
    assert kept.selection == {"settings": {"time_map": "clock", "bridge": 0.3, "bandwidth_factor": 1.0}}
    with pytest.raises(ValueError, match="select"):
        pf.AnchoredMixture.from_snapshots(times, clouds, components=10, select="cv")


def test_a_model_without_data_takes_shapes_from_the_state_it_loads():
    g = torch.Generator().manual_seed(9)
    clouds = [torch.randn(25, 3, generator=g, dtype=D64) + k for k in range(3)]
    model = pf.AnchoredMixture.from_snapshots([0.0, 0.4, 1.0], clouds, components=25, time_map="exp:-1.5", bridge=0.2)
    empty = pf.AnchoredMixture(3, 25).double()
    empty.load_state_dict(model.state_dict())
    t, x = torch.rand(40, generator=g, dtype=D64), torch.randn(40, 3, generator=g, dtype=D64)
    assert torch.equal(empty.log_prob(t, x), model.log_prob(t, x))
    assert torch.equal(empty.velocity(t, x), model.velocity(t, x))


def test_probflux_fit_with_an_anchored_model(tmp_path):
    """``probflux fit ... model.type=anchored`` builds the model from the training snapshots of the split, trains,
    reloads the run (an empty model takes the checkpoint's shapes) and scores the held-out snapshot."""
    import json
    from pathlib import Path

    from probflux.app.cli import main

    out = tmp_path / "run"
    cfg = Path(__file__).resolve().parents[1] / "configs" / "cite_loo.yaml"
    assert main(["fit", str(cfg), f"out={out}", "data.name=tree", "data.n=60", "data.leave_out=1", "model.type=anchored",
                 "model.kernels=30", "train.steps=3", "train.batch_size=64", "train.eval_every=3", "train.checkpoint_every=3",
                 "objective.kinetic_samples=16",
                 "evaluate.particles=32", "evaluate.steps=5", "evaluate.residual_points=32", "evaluate.heldout_cells=60",
                 "--no-plots"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert abs(m["heldout_time"] - 1 / 3) < 1e-12
    assert 0 < m["heldout_w1_density"] < 3 and 0 < m["heldout_w1_transport"] < 3


def test_schrodinger_bridge_variant_matches_the_gaussian_closed_form():
    """``entropy = eps``: kernels on paths drawn from the entropic couplings with the Brownian-bridge spread.
    1-D N(-1, 0.5^2) -> N(1, 1), eps = 1: the marginal standard deviation at t follows the closed-form bridge
    sqrt((1-t)^2 a^2 + t^2 b^2 + 2 t (1-t) c + eps t (1-t)), c = (sqrt(4 a^2 b^2 + eps^2) - eps) / 2 (Bunne et
    al. 2023; a, b the model's endpoint standard deviations), clearly above the OT path (1-t) a + t b."""
    g = torch.Generator().manual_seed(11)
    x0 = -1 + 0.5 * torch.randn(1000, 1, generator=g, dtype=D64)
    x1 = 1 + torch.randn(1000, 1, generator=g, dtype=D64)
    eps = 1.0
    model = pf.AnchoredMixture.from_snapshots([0.0, 1.0], [x0, x1], components=1000, entropy=eps)
    assert model.selection["settings"]["bridge"] == pytest.approx(1.0)

    def sd(t):
        with torch.no_grad():
            return float(model.sample(torch.full((100_000,), t, dtype=D64)).std())

    torch.manual_seed(0)
    a, b = sd(0.0), sd(1.0)
    c = 0.5 * (math.sqrt(4 * a * a * b * b + eps * eps) - eps)
    for t in (0.25, 0.5, 0.75):
        want = math.sqrt((1 - t) ** 2 * a * a + t * t * b * b + 2 * t * (1 - t) * c + eps * t * (1 - t))
        assert sd(t) == pytest.approx(want, rel=0.03), (t, sd(t), want)
    assert sd(0.5) > 1.05 * (0.5 * a + 0.5 * b)  # the OT path: 8% less at t = 0.5
    x = model.sample(torch.full((64,), 0.4, dtype=D64))
    assert float(pf.continuity_residual(model, 0.4, x).relative.max()) < 1e-8
    with pytest.raises(ValueError, match="entropy"):
        pf.AnchoredMixture.from_snapshots([0.0, 1.0], [x0, x1], components=10, entropy=-1.0)
    with pytest.raises(ValueError, match="loo_metric"):
        pf.AnchoredMixture.from_snapshots([0.0, 1.0], [x0, x1], components=10, loo_metric="mmd")


def test_a_small_bandwidth_factor_stops_at_twice_the_minimum_scale():
    g = torch.Generator().manual_seed(12)
    clouds = [torch.randn(30, 2, generator=g, dtype=D64) + k for k in range(2)]
    model = pf.AnchoredMixture.from_snapshots([0.0, 1.0], clouds, components=30, bandwidth_factor=1e-6)
    with torch.no_grad():
        s = model._kernels(torch.tensor([0.0, 1.0], dtype=D64))[2]
    assert float(s.min()) == pytest.approx(2e-3, rel=1e-9)


def test_kernel_flow_is_the_exact_flow_of_one_stiff_kernel_where_euler_misses_it():
    """One kernel, bandwidth 0.02 at the knots and bridge g = 1: ``s(t)^2 = 0.02^2 + t (1 - t)``, so ``s'/s`` is
    1250 at t = 0. The ODE's exact flow is ``x(t) = mu(t) + (s(t)/s(0)) (x0 - mu(0))``; ``kernel_flow`` reproduces it
    at any step count; 100 Euler steps (the anchored transport defect, docs/populations.md) leave 31% of the exact
    offset from the centre (the rate at each step's left point is no guide to the stiff growth of s)."""
    a, b, s0 = [0.0, 1.0], [2.0, -1.0], 0.02
    model = _straight(a, b, s0, bridge=1.0)
    x0 = torch.tensor([[0.1, 0.95], [-0.05, 1.0], [0.0, 1.2]], dtype=D64)
    t1 = 0.5
    av, bv = torch.tensor(a, dtype=D64), torch.tensor(b, dtype=D64)
    exact = av + t1 * (bv - av) + math.sqrt(s0 ** 2 + t1 * (1 - t1)) / s0 * (x0 - av)
    for steps in (1, 7, 100):
        for method in ("kernel_flow", None):
            path = (model.kernel_flow(x0, 0.0, t1, steps) if method is None
                    else pf.simulate(model, x0, 0.0, t1, steps=steps, method=method))
            assert path.shape == (steps + 1, 3, 2)
            assert torch.allclose(path[-1], exact, atol=1e-10)
    euler = pf.simulate(model, x0, 0.0, t1, steps=100, method="euler")[-1]
    centre = av + t1 * (bv - av)
    assert float(((euler - centre).norm(dim=1) / (exact - centre).norm(dim=1)).max()) < 0.5


@pytest.mark.parametrize("per_kernel", [False, True])
def test_kernel_flow_converges_to_the_ode(per_kernel):
    """Against RK4 between knots (smooth velocity): second order with one bandwidth for all kernels (error /4 per
    halving of the step), first order with per-kernel bandwidths (the ``s_m'/s_m (v_m - u)`` term)."""
    g = torch.Generator().manual_seed(21)
    paths = torch.randn(5, 3, 2, generator=g, dtype=D64)
    model = pf.AnchoredMixture.from_paths([0.0, 0.5, 1.0], paths, scales=0.8, per_kernel_scale=per_kernel, bridge=0.4)
    with torch.no_grad():
        model.raw_scale.add_(0.2 * torch.randn(model.raw_scale.shape, generator=g, dtype=D64))
    x0 = model.sample(torch.full((40,), 0.1, dtype=D64))
    ref = pf.simulate(model, x0, 0.1, 0.45, steps=50, method="rk4")[-1]
    err = {n: float((model.kernel_flow(x0, 0.1, 0.45, steps=n)[-1] - ref).abs().max()) for n in (10, 20, 40)}
    assert err[40] < (2e-3 if per_kernel else 5e-4), err
    assert err[10] / err[20] > (1.8 if per_kernel else 3.5) and err[20] / err[40] > (1.8 if per_kernel else 3.5), err


def test_kernel_paths_map_rho_to_rho_exactly_in_law():
    """x ~ rho_{0.1} moved by 3 kernel-path steps to t = 0.7 has the exact mixture moments of rho_{0.7}
    (mean sum pi mu, second moment sum pi (s^2 + mu mu^T)), within 4 Monte Carlo standard errors."""
    g = torch.Generator().manual_seed(22)
    paths = 2 * torch.randn(3, 2, 2, generator=g, dtype=D64)
    model = pf.AnchoredMixture.from_paths([0.0, 1.0], paths, scales=torch.tensor([[0.3, 0.6], [0.9, 0.2]], dtype=D64),
                                          bridge=0.7)
    with torch.no_grad():
        model.logits.copy_(torch.tensor([0.0, 0.7, -0.4], dtype=D64))
    n = 40_000
    torch.manual_seed(3)
    x0 = model.sample(torch.full((n,), 0.1, dtype=D64))
    y = pf.simulate(model, x0, 0.1, 0.7, steps=3, method="kernel_paths", generator=torch.Generator().manual_seed(4))[-1]
    mu, _, s, _ = (v[0] for v in model._kernels(torch.tensor([0.7], dtype=D64)))
    pi = torch.softmax(model.logits, 0)
    mean = pi @ mu
    second = torch.einsum("m,mi,mj->ij", pi, mu, mu) + torch.diag(pi @ s.expand(3, 2).pow(2))
    cov = second - torch.outer(mean, mean)
    se = (cov.diagonal() / n).sqrt()
    assert bool(((y.mean(0) - mean).abs() < 4 * se).all()), (y.mean(0), mean)
    yc = y - mean
    emp = yc.T @ yc / n
    se2 = ((yc[:, :, None] * yc[:, None, :]).reshape(n, 4).var(0) / n).sqrt().reshape(2, 2)
    assert bool(((emp - cov).abs() < 4 * se2).all()), (emp, cov)


def test_kernel_methods_need_an_anchored_mixture_without_diffusion():
    x = torch.zeros(4, 2, dtype=D64)
    with pytest.raises(ValueError, match="AnchoredMixture"):
        pf.simulate(pf.FactorizedMixture(2, 3, hidden=8).double(), x, method="kernel_flow")
    model = _straight([0.0, 0.0], [1.0, 1.0], 0.5)
    with pytest.raises(ValueError, match="diffusion"):
        pf.simulate(pf.Dynamics(model, diffusion=0.5), x, method="kernel_paths")
    with pytest.raises(ValueError, match="steps"):
        model.kernel_flow(x, 0.0, 1.0, steps=0)


def test_heldout_snapshot_scores_transport_an_anchored_mixture_by_kernel_paths():
    """``probflux fit``'s held-out transport score moves an anchored mixture along its kernels by default.

    One kernel, bandwidth 0.05 at the snapshots, bridge spread g = 1 (``s'/s = g^2 / (2 s^2) = 200`` at t = 0):
    exact ``rho_0`` cells pushed to t = 0.5 by kernel paths have the law of ``rho_0.5`` (W1 to exact held-out
    samples near the sampling level, like the density's own samples), while 5 Euler steps (the old default)
    multiply each offset by ``1 + 200 * 0.1`` at the first step (W1 over 3x as large)."""
    from probflux.data import TemporalPoints
    from probflux.evaluation import heldout_snapshot_scores
    from probflux.normalize import Normalizer

    model = _straight([0.0, 0.0], [1.0, 0.0], 0.05, bridge=1.0)
    dyn = pf.Dynamics(model)
    norm = Normalizer(0.0, 1.0, torch.zeros(2, dtype=D64), torch.ones(2, dtype=D64))
    torch.manual_seed(5)
    n = 300
    cells = {t: model.sample(torch.full((n,), t, dtype=D64)) for t in (0.0, 0.5, 1.0)}
    train = TemporalPoints(torch.cat([torch.zeros(n, dtype=D64), torch.ones(n, dtype=D64)]), torch.cat([cells[0.0], cells[1.0]]))
    held = TemporalPoints(torch.full((n,), 0.5, dtype=D64), cells[0.5])
    kw = dict(cells=n, steps=5, seed=3)
    default = heldout_snapshot_scores(dyn, norm, train, held, **kw)
    paths = heldout_snapshot_scores(dyn, norm, train, held, method="kernel_paths", **kw)
    euler = heldout_snapshot_scores(dyn, norm, train, held, method="euler", **kw)
    assert default["heldout_w1_transport"] == paths["heldout_w1_transport"]
    assert default["heldout_w1_transport"] < 1.5 * default["heldout_w1_density"] + 0.02, default
    assert euler["heldout_w1_transport"] > 3 * default["heldout_w1_transport"], (euler, default)


def test_fixed_weight_reparameterisation_is_unbiased_and_keeps_the_samples():
    """With untrained weights ``rsample`` takes the pathwise gradient averaged over each draw's kernel posterior: the
    draws are unchanged and the mean gradient of ``|x|^2`` is that of the closed form ``sum_m w_m (|mu_m|^2 + |s_m|^2)``,
    as it is for the Rosenblatt (implicit) path it replaces."""
    g = torch.Generator().manual_seed(3)
    model = pf.AnchoredMixture(2, 4, per_kernel_scale=True, bridge=0.4).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=D64))
    model.logits.requires_grad_(False)
    params = [model.loc, model.raw_scale]
    t = torch.full((1,), 0.4, dtype=D64)
    mu, _, s, _ = model._kernels(t)
    w = torch.softmax(model.logits, 0)
    exact = torch.autograd.grad((w * (mu[0].pow(2).sum(-1) + s[0].expand_as(mu[0]).pow(2).sum(-1))).sum(), params)
    torch.manual_seed(0)
    tt = torch.full((40000,), 0.4, dtype=D64)
    with torch.no_grad():
        x_hat = model._sample(tt, None)
    for trained in (False, True):  # the fast path, then the D Rosenblatt sweeps on the same draws
        model.logits.requires_grad_(trained)
        x = model._reparameterize(tt, x_hat, None)
        assert torch.equal(x.detach(), x_hat)
        est = torch.autograd.grad(x.pow(2).sum(-1).mean(), params)
        for a, b in zip(est, exact):
            assert torch.allclose(a, b, atol=0.03 * float(b.abs().max())), (trained, a, b)
