"""probflux.transport against closed forms: 1-D OT is the sorted matching, an SPD-affine image is matched to
itself (Brenier), the McCann interpolant of two Gaussians is the Gaussian of the interpolated map."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probflux.metrics import ot_cost
from probflux.transport import (
    Coupling,
    displacement,
    entropic_plan,
    mccann_interpolation,
    ot_plan,
    ot_trajectories,
    piecewise_linear,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_1d_equal_sizes_is_sorted_matching():
    r = _rng(0)
    x0, x1 = r.normal(size=(200, 1)), r.gamma(2.0, size=(200, 1))
    plan = ot_plan(x0, x1)
    assert plan.is_permutation()
    rank0 = np.argsort(np.argsort(x0[:, 0]))
    rank1 = np.argsort(np.argsort(x1[:, 0]))
    # the k-th smallest of x0 goes to the k-th smallest of x1
    assert (rank1[plan.j.numpy()] == rank0[plan.i.numpy()]).all()
    assert plan.cost(x0, x1) == pytest.approx(np.mean((np.sort(x0[:, 0]) - np.sort(x1[:, 0])) ** 2), rel=1e-12)
    assert plan.cost(x0, x1) == pytest.approx(ot_cost(x0, x1), rel=1e-10)


def test_1d_mccann_is_quantile_average():
    r = _rng(1)
    x0, x1 = r.normal(size=(150, 1)), 3 + r.exponential(size=(150, 1))
    for s in (0.0, 0.3, 1.0):
        got = np.sort(mccann_interpolation(x0, x1, s).numpy()[:, 0])
        want = (1 - s) * np.sort(x0[:, 0]) + s * np.sort(x1[:, 0])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_spd_affine_image_is_matched_to_itself_and_interpolates_the_map():
    """x1 = A x0 + c with A SPD: T(x) = A x + c is the gradient of a convex function, hence the OT map."""
    r = _rng(2)
    x0 = r.normal(size=(300, 3))
    q, _ = np.linalg.qr(r.normal(size=(3, 3)))
    A = q @ np.diag([0.5, 1.0, 2.5]) @ q.T
    c = np.array([1.0, -2.0, 0.5])
    x1 = x0 @ A.T + c
    perm = r.permutation(300)  # shuffle x1 so the identity is not given away by the order
    plan = ot_plan(x0, x1[perm])
    inv = np.argsort(perm)
    assert (plan.j.numpy() == inv[plan.i.numpy()]).all()
    s = 0.4
    got = mccann_interpolation(x0, x1[perm], s).numpy()
    want = x0 @ ((1 - s) * np.eye(3) + s * A).T + s * c
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_gaussian_mccann_moments():
    """Between N(m0, I) and N(m1, sigma^2 I) the geodesic at s is N((1-s) m0 + s m1, ((1-s) + s sigma)^2 I)."""
    r = _rng(3)
    n, sigma, s = 1500, 2.0, 0.25
    x0 = r.normal(size=(n, 2))
    x1 = np.array([4.0, 0.0]) + sigma * r.normal(size=(n, 2))
    pts = mccann_interpolation(x0, x1, s).numpy()
    np.testing.assert_allclose(pts.mean(0), (1 - s) * x0.mean(0) + s * x1.mean(0), atol=1e-12)  # exact for any coupling
    assert pts.std(0) == pytest.approx(np.full(2, (1 - s) + s * sigma), rel=0.06)


def test_geodesic_property_w2():
    r = _rng(4)
    x0, x1 = r.normal(size=(120, 2)), r.normal(size=(120, 2)) * 0.5 + 3
    w = ot_cost(x0, x1) ** 0.5
    mid = mccann_interpolation(x0, x1, 0.5)
    assert ot_cost(x0, mid) ** 0.5 == pytest.approx(0.5 * w, rel=1e-8)
    assert ot_cost(mid, x1) ** 0.5 == pytest.approx(0.5 * w, rel=1e-8)


def test_unequal_sizes_marginals_and_seeded_draws():
    r = _rng(5)
    x0, x1 = r.normal(size=(40, 2)), r.normal(size=(70, 2)) + 1
    b = r.uniform(0.5, 1.5, size=70)
    plan = ot_plan(x0, x1, b=b)
    assert not plan.is_permutation()
    assert plan.i.numel() <= 40 + 70 - 1
    np.testing.assert_allclose(np.bincount(plan.i.numpy(), plan.w.numpy(), 40), np.full(40, 1 / 40), atol=1e-12)
    np.testing.assert_allclose(np.bincount(plan.j.numpy(), plan.w.numpy(), 70), b / b.sum(), atol=1e-12)
    pts, wts = displacement(x0, x1, 0.5, plan=plan)
    assert pts.shape == (plan.i.numel(), 2) and float(wts.sum()) == pytest.approx(1.0)
    state = torch.get_rng_state()
    a1 = mccann_interpolation(x0, x1, 0.5, plan=plan, seed=7)
    a2 = mccann_interpolation(x0, x1, 0.5, plan=plan, seed=7)
    a3 = mccann_interpolation(x0, x1, 0.5, plan=plan, seed=8, n=500)
    assert torch.equal(torch.get_rng_state(), state)
    assert a1.shape == (70, 2) and torch.equal(a1, a2) and a3.shape == (500, 2)
    # every drawn point is a support point of the exact interpolant
    d = torch.cdist(a3, pts).min(dim=1).values
    assert float(d.max()) < 1e-6  # torch.cdist rounds (matmul form)


def test_chained_trajectories():
    r = _rng(6)
    clouds = [r.normal(size=(50, 2)) + k for k in range(3)]
    idx, pts = ot_trajectories(clouds)
    assert idx.shape == (50, 3) and pts.shape == (50, 3, 2)
    assert torch.equal(idx[:, 0], torch.arange(50))
    plan01 = ot_plan(clouds[0], clouds[1])
    assert torch.equal(idx[plan01.i, 1], plan01.j)
    np.testing.assert_allclose(piecewise_linear([0, 1, 3], pts, 2.0).numpy(), 0.5 * (clouds[1][idx[:, 1]] + clouds[2][idx[:, 2]]))
    # unequal sizes: each consecutive pair of the chain lies in the plan's support, and the chain is seeded
    clouds = [r.normal(size=(30, 2)), r.normal(size=(45, 2)), r.normal(size=(20, 2))]
    i1, _ = ot_trajectories(clouds, n=200, seed=3)
    i2, _ = ot_trajectories(clouds, n=200, seed=3)
    assert torch.equal(i1, i2)
    for k in range(2):
        p = ot_plan(clouds[k], clouds[k + 1])
        support = set(zip(p.i.tolist(), p.j.tolist()))
        assert all((a, b) in support for a, b in zip(i1[:, k].tolist(), i1[:, k + 1].tolist()))


def test_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="x1"):
        ot_plan(x, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="x0"):
        ot_plan(np.zeros(5), x)
    with pytest.raises(ValueError, match="b must have shape"):
        ot_plan(x, x, b=np.ones(3))
    with pytest.raises(ValueError, match="s must be"):
        mccann_interpolation(x, x, 1.5)
    with pytest.raises(ValueError, match="plan couples"):
        mccann_interpolation(x, np.zeros((6, 2)), 0.5, plan=ot_plan(x, x))
    with pytest.raises(TypeError, match="plan must be a Coupling"):
        displacement(x, x, 0.5, plan=(1, 2))
    with pytest.raises(ValueError, match="NaN"):
        ot_plan(np.array([[0.0, np.nan]]), x)
    with pytest.raises(ValueError, match="t must lie"):
        piecewise_linear([0, 1], torch.zeros(3, 2, 1), 2.0)
    assert isinstance(ot_plan(x, x), Coupling)


def _sb_cross_covariance(a: float, b: float, eps: float) -> float:
    """Static Schrödinger bridge between N(m0, a^2) and N(m1, b^2) for the reference sqrt(eps) W on [0, 1]
    (Bunne et al. 2023): the coupling is Gaussian with covariance (sqrt(4 a^2 b^2 + eps^2) - eps) / 2."""
    return 0.5 * (np.sqrt(4 * a * a * b * b + eps * eps) - eps)


@pytest.mark.parametrize("eps", [0.25, 1.0])
def test_entropic_plan_is_the_gaussian_schrodinger_coupling(eps):
    """1-D N(-1, 0.5^2) -> N(1, 1) clouds of 1000: the plan's cross-covariance matches the closed form with the
    clouds' own standard deviations (the exact OT plan would give a*b, 2.4x more at eps = 1); marginals hold."""
    r = _rng(5)
    x0, x1 = -1 + 0.5 * r.normal(size=(1000, 1)), 1 + r.normal(size=(1000, 1))
    plan = entropic_plan(x0, x1, eps)
    w = plan.w.numpy()
    a, b = x0[plan.i.numpy(), 0], x1[plan.j.numpy(), 0]
    ma, mb = (w * a).sum(), (w * b).sum()
    cov = (w * (a - ma) * (b - mb)).sum()
    want = _sb_cross_covariance(x0.std(), x1.std(), eps)
    assert cov == pytest.approx(want, rel=0.04), (cov, want)
    assert np.bincount(plan.i.numpy(), weights=w, minlength=1000) == pytest.approx(np.full(1000, 1 / 1000), abs=1e-6)
    assert np.bincount(plan.j.numpy(), weights=w, minlength=1000) == pytest.approx(np.full(1000, 1 / 1000), abs=1e-6)


def test_entropic_plan_tends_to_exact_ot_and_names_bad_input():
    r = _rng(6)
    x0, x1 = r.normal(size=(150, 2)), r.normal(size=(150, 2)) + 1.0
    exact, blurred = ot_plan(x0, x1), entropic_plan(x0, x1, 0.02)
    assert exact.cost(x0, x1) <= blurred.cost(x0, x1) < 1.02 * exact.cost(x0, x1)
    assert entropic_plan(x0, x1, 1.0).cost(x0, x1) > 1.05 * exact.cost(x0, x1)
    with pytest.raises(ValueError, match="eps"):
        entropic_plan(x0, x1, 0.0)
    with pytest.raises(RuntimeError, match="num_iter_max"):
        entropic_plan(x0, x1, 1e-4, num_iter_max=3)
    with pytest.raises(ValueError, match="dimension"):
        entropic_plan(x0, x1[:, :1], 1.0)
