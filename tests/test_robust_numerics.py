"""Robust numerics (issue 14): models far from their initialisation stay finite everywhere, and large
batches are evaluated in bounded memory through the chunked path of :class:`~probflux.TimeDensity`.

A model whose every parameter is perturbed by ``0.3·N(0,1)`` or ``1.0·N(0,1)`` (as after a learning-rate
spike) has narrow, far-apart components: between them ``rho`` underflows in float64 and the exact
velocity ``j/rho`` exceeds the floating range. Before the fix these points gave inf/nan velocity, drift
and autograd continuity residual in every mixture family.
"""
from __future__ import annotations

import pytest
import torch

import probflux as pf
from conftest import make_density
from probflux.densities import mixture1d as m1

ROBUST_KINDS = (
    "factorized-logistic-kr",
    "factorized-logistic-mixture",
    "factorized-gaussian-kr",
    "factorized-gaussian-mixture",
    "ar-kr",
    "ar-sigmoid",
    "flow-spline",
    "flow-affine",
)
# (perturbation, seed, dim): each mixture family was non-finite at some of these before the fix
CASES = [(0.3, 0, 2), (0.3, 1, 2), (1.0, 0, 2), (1.0, 1, 2), (1.0, 2, 2), (1.0, 0, 3)]
FLOW_CASES = [(1.0, 1, 2)]  # the flows' velocity costs more; they were finite before as well


def _points(dim: int, seed: int) -> torch.Tensor:
    """Near the data (standard normal), and on spheres of radius 10, 30, 100 plus the diagonals ±r."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(16, dim, generator=g, dtype=torch.float64)]
    for r in (10.0, 30.0, 100.0):
        d = torch.randn(12, dim, generator=g, dtype=torch.float64)
        diagonals = torch.tensor([[r], [-r]], dtype=torch.float64).expand(2, dim)
        parts += [r * d / d.norm(dim=1, keepdim=True), diagonals]
    return torch.cat(parts)


def _quantities(model: pf.TimeDensity, t: float, x: torch.Tensor) -> dict[str, torch.Tensor]:
    dyn = pf.Dynamics(model, 0.5)
    res = pf.continuity_residual(model, t, x)
    return {
        "log_prob": model.log_prob(t, x),
        "flux": model.flux(t, x),
        "velocity": model.velocity(t, x),
        "score": model.score(t, x),
        "drift": dyn.drift(t, x),
        "residual": res.residual,
        "relative": res.relative,
    }


@pytest.mark.parametrize("kind", ROBUST_KINDS)
def test_perturbed_models_are_finite_everywhere(kind: str) -> None:
    underflow_points = 0
    for scale, seed, dim in CASES if kind.startswith(("factorized", "ar")) else FLOW_CASES:
        model = make_density(kind, dim, seed=seed, perturb=scale)
        x = _points(dim, seed)
        for t in (0.0, 0.5, 1.0):
            q = _quantities(model, t, x)
            for name, value in q.items():
                bad = ~torch.isfinite(value)
                assert not bad.any(), (f"{kind} (+{scale}·N(0,1), seed {seed}, D={dim}) t={t}: {name} non-finite "
                                       f"at x={x[bad.reshape(len(x), -1).any(-1)][:3].tolist()}")
            under = q["log_prob"] < -700  # rho underflows (or nearly) in float64
            underflow_points += int(under.sum())
            assert torch.isfinite(q["velocity"][under]).all()
    if kind.startswith(("factorized", "ar")):  # the cases reach points where rho underflows
        assert underflow_points > 0


@pytest.mark.parametrize("kind", ROBUST_KINDS[:6])
def test_perturbed_models_keep_the_continuity_equation_near_the_data(kind: str) -> None:
    """The caps change nothing where the velocity is representable: at samples the residual stays round-off."""
    for scale, seed, dim in CASES[:3]:
        model = make_density(kind, dim, seed=seed, perturb=scale)
        t = torch.rand(64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = model.sample(t)
        rel = pf.continuity_residual(model, t, x).relative
        assert float(rel.max()) < 1e-8, (kind, scale, seed, float(rel.max()))


def test_capped_ratios_are_exact_below_the_cap_and_finite_beyond() -> None:
    for dtype in (torch.float32, torch.float64):
        cap = m1.log_ratio_cap(dtype)
        a = torch.tensor([-1e4, 0.0, 3.0, cap - 1.0, cap + 1.0, 1e4], dtype=dtype)
        e = m1.capped_exp(a)
        assert torch.isfinite(e).all()
        assert torch.equal(e[:4], torch.exp(a[:4]))
        assert torch.equal(e[4:], torch.exp(torch.tensor([cap, cap], dtype=dtype)))
        # the products of two capped factors and sums over many terms stay finite
        assert torch.isfinite(e[-1] * e[-1] * 1e4)
        u = m1.clamp_velocity(torch.tensor([-float(torch.finfo(dtype).max), -2.0, 5.0, float(torch.finfo(dtype).max)], dtype=dtype))
        assert torch.isfinite(u).all() and u[1] == -2.0 and u[2] == 5.0


def test_one_dimensional_gap_between_narrow_components_is_finite() -> None:
    """A closed case: two components of scale e^-6 at ±30 with time-varying weights; at x = 0 rho is ~e^-1e9."""
    for family in ("logistic", "gaussian"):
        logits = torch.tensor([0.0, 1.0], dtype=torch.float64)
        loc = torch.tensor([-30.0, 30.0], dtype=torch.float64)
        log_scale = torch.full((2,), -6.0, dtype=torch.float64)
        x = torch.tensor([0.0, -29.0, 29.5], dtype=torch.float64)
        terms = m1.mixture_terms(x, logits, loc, log_scale, family)
        A = m1.cdf_tangent_over_pdf(terms, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                                    torch.zeros(2, dtype=torch.float64))
        assert torch.isfinite(A).all() and float(A[0]) > 0  # mass flows right to left through the gap: F grows
        assert float(terms.log_pdf[0]) < -700


# ---------------------------------------------------------------------------------------------- chunked path
CHUNK_KINDS = ("factorized-logistic-kr", "factorized-gaussian-mixture", "ar-kr", "ar-sigmoid", "flow-affine")


@pytest.mark.parametrize("kind", CHUNK_KINDS)
def test_chunked_evaluation_is_identical_to_one_piece(kind: str) -> None:
    model = make_density(kind, 2, perturb=0.3)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    t = torch.rand(1000, generator=g, dtype=torch.float64)
    methods = ["log_prob", "velocity", "flux", "score"] + (["cdf"] if model.has_rosenblatt else [])
    for name in methods:
        f = getattr(model, name)
        with torch.no_grad():
            whole = f(t, x, chunk_size=10**9)
            pieces = f(t, x, chunk_size=128)  # 8 chunks, the last one partial
            scalar_t = f(0.3, x, chunk_size=128)
            assert torch.equal(scalar_t, f(0.3, x, chunk_size=10**9)), name
        assert torch.equal(whole, pieces), name
        assert whole.shape == pieces.shape


def test_chunked_path_is_automatic_without_a_graph_and_bounds_the_rows_per_call() -> None:
    model = make_density("factorized-logistic-kr", 2)
    model.chunk_size = 64
    rows: list[int] = []
    hook = model._velocity

    def spy(t, x, ctx):
        rows.append(x.shape[0])
        return hook(t, x, ctx)

    model._velocity = spy  # type: ignore[method-assign]
    x = torch.randn(300, 2, dtype=torch.float64)
    with torch.no_grad():
        u = model.velocity(0.5, x)
    assert rows == [64, 64, 64, 64, 44] and u.shape == (300, 2)
    rows.clear()
    u_graph = model.velocity(0.5, x)  # gradients enabled: one piece, differentiable
    assert rows == [300] and u_graph.requires_grad
    assert torch.equal(u, u_graph.detach())


def test_explicit_chunks_keep_gradients() -> None:
    model = make_density("ar-kr", 2)
    x = torch.randn(200, 2, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    g_whole = torch.autograd.grad(model.log_prob(0.4, x).sum(), params)
    g_chunk = torch.autograd.grad(model.log_prob(0.4, x, chunk_size=64).sum(), params)
    for a, b in zip(g_whole, g_chunk):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_chunk_size_must_be_a_positive_integer(bad) -> None:
    model = make_density("factorized-gaussian-kr", 2)
    with pytest.raises(ValueError, match="chunk_size"):
        model.velocity(0.5, torch.zeros(3, 2, dtype=torch.float64), chunk_size=bad)
