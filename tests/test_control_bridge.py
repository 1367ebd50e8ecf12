"""Bridges of probflux.control.bridge: rho_0 and rho_1 are the given laws for *every* parameter value.

The density contract (continuity to round-off, normalisation, SDE marginals, gradients) runs over the
``bridge-*`` and ``pinned-flow`` families in tests/test_contract.py; here: the endpoints against the closed-form
log-densities for random parameters, the coupling's marginals, the objective dropping the pinned terms, the
fitted-density route for samples, and the precise errors.
"""
from __future__ import annotations

import pytest
import torch

import probflux.control as pc
from probflux.control.bridge import BridgeMixture, FlowBridge, coupling_plan


def _laws(dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q0 = pc.GaussianMixture(4 * r(2, dim) - 2, [(0.2 + r(dim)).tolist(), (0.3 + r(dim)).tolist()], weights=(0.2 + r(2)).tolist())
    q1 = pc.GaussianMixture(4 * r(3, dim) + 2, [(0.2 + r(dim)).tolist() for _ in range(3)], weights=(0.2 + r(3)).tolist())
    return q0, q1


def _randomise(model: torch.nn.Module, seed: int, scale: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kind", ["mixture-ot", "mixture-independent", "flow", "flow-spline"])
@pytest.mark.parametrize("dim", [1, 3])
def test_endpoints_equal_the_laws_for_random_parameters(kind, dim):
    for seed in range(3):
        q0, q1 = _laws(dim, seed)
        if kind.startswith("mixture"):
            model = BridgeMixture(q0, q1, replicas=2, coupling=kind.split("-")[1], hidden=16, layers=2, loc_scale=3.0)
        else:
            q0, q1 = (pc.Gaussian(q.means[0], torch.diagonal(q.covs[0])) for q in (q0, q1))
            model = FlowBridge(q0, q1, 2, hidden=16, coupling_kind="spline" if kind.endswith("spline") else "affine")
        model = _randomise(model.double(), seed)
        x = torch.cat([q0.sample(64, torch.Generator().manual_seed(1)), q1.sample(64, torch.Generator().manual_seed(2))])

        def close(a, b):  # round-off relative to |log q| (a flow's S_0^{-1} o S_0 is the identity to ~1e-12)
            return bool(((a - b).abs() <= 1e-10 * (1 + b.abs())).all())

        assert close(model.log_prob(0.0, x), q0.log_prob(x)) and close(model.log_prob(1.0, x), q1.log_prob(x))
        # the interior is learned: it is neither endpoint law nor independent of the parameters
        assert (model.log_prob(0.5, x) - q0.log_prob(x)).abs().max() > 1e-3
        other = _randomise(model, seed + 10)  # perturbed further
        assert close(other.log_prob(0.0, x), q0.log_prob(x)) and close(other.log_prob(1.0, x), q1.log_prob(x))


def test_pinned_flow_pins_rho_0_only():
    q0 = pc.Gaussian([0.5, -1.0], [0.3, 2.0])
    model = _randomise(FlowBridge(q0, None, 2, hidden=16).double(), 0)
    x = 2 * torch.randn(50, 2, dtype=torch.float64)
    assert (model.log_prob(0.0, x) - q0.log_prob(x)).abs().max() < 1e-10
    assert (model.log_prob(1.0, x) - q0.log_prob(x)).abs().max() > 1e-2
    assert pc.pins(model) == (True, False) and pc.pins(BridgeMixture(q0, q0)) == (True, True)


def test_coupling_has_the_component_weights_as_marginals():
    q0, q1 = _laws(2, 0)
    for kind in ("ot", "independent"):
        plan = coupling_plan(q0.weights, q1.weights, q0.means, q1.means, kind)
        assert torch.allclose(plan.sum(1), q0.weights, atol=1e-12) and torch.allclose(plan.sum(0), q1.weights, atol=1e-12)
    assert int((coupling_plan(q0.weights, q1.weights, q0.means, q1.means, "ot") > 0).sum()) <= 2 + 3 - 1
    model = BridgeMixture(q0, q1)
    assert model.components <= 4 and model.fixed_weights


def test_objective_drops_the_pinned_endpoint_terms():
    problem = pc.ControlProblem(2, diffusion=1.0, initial=pc.Gaussian([0.0, 0.0], 1.0), target=pc.Gaussian([3.0, 0.0], 0.5))
    for density, want in ((BridgeMixture(problem.initial, problem.target, hidden=16, layers=2), set()),
                          (pc.PinnedMixture(problem.initial, 2, hidden=16, layers=2), {"target_nll"})):
        logged = []
        pc.solve(problem, density, steps=2, dtype="float64", endpoint_samples=64, batch_size=32, log_every=1,
                 callback=lambda step, record, logged=logged: logged.append(set(record)))
        assert "control" in logged[-1] and logged[-1] & {"initial_nll", "target_nll"} == want, logged[-1]


def test_samples_are_pinned_through_a_fitted_mixture():
    truth = pc.GaussianMixture([[-3.0, 0.0], [3.0, 1.0]], [[0.5, 1.0], [1.0, 0.2]], weights=[0.3, 0.7])
    fitted = pc.fit_gaussian_mixture(truth.sample(20000, torch.Generator().manual_seed(0)), 2)
    order = fitted.means[:, 0].argsort()
    assert torch.allclose(fitted.means[order], truth.means, atol=0.05)
    assert torch.allclose(fitted.weights[order], truth.weights, atol=0.02)
    model = BridgeMixture(pc.Gaussian([0.0, 0.0], 1.0), fitted).double()
    x = fitted.sample(32, torch.Generator().manual_seed(3))
    assert (model.log_prob(1.0, x) - fitted.log_prob(x)).abs().max() < 1e-10
    with pytest.raises(ValueError, match="components must be an int in"):
        pc.fit_gaussian_mixture(torch.zeros(3, 2), 5)


def test_bad_laws_are_named():
    corr = pc.Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]])
    with pytest.raises(ValueError, match="target: the covariances must be diagonal"):
        BridgeMixture(pc.Gaussian([0.0, 0.0], 1.0), corr)
    with pytest.raises(TypeError, match="initial must be a probflux.control.Gaussian or GaussianMixture"):
        BridgeMixture(pc.Samples(torch.zeros(5, 2)), None)
    with pytest.raises(ValueError, match="target has dimension 3 but initial has 2"):
        FlowBridge(pc.Gaussian([0.0, 0.0], 1.0), pc.Gaussian([0.0, 0.0, 0.0], 1.0))
    with pytest.raises(ValueError, match="replicas must be a positive int"):
        BridgeMixture(pc.Gaussian([0.0], 1.0), None, replicas=0)
    with pytest.raises(ValueError, match="coupling must be one of"):
        coupling_plan(torch.ones(2) / 2, torch.ones(2) / 2, torch.zeros(2, 1), torch.ones(2, 1), "greedy")


def test_identity_init_flow_starts_as_its_mixture_bridge_and_still_learns():
    q0 = pc.Gaussian([0.5, -1.0, 0.0], [0.3, 2.0, 1.0])
    q1 = pc.Gaussian([2.0, 1.0, -1.0], [0.5, 1.0, 0.2])
    t = torch.rand(40, dtype=torch.float64)
    x = 2 * torch.randn(40, 3, dtype=torch.float64)
    for target in (None, q1):
        model = FlowBridge(q0, target, 2, hidden=16, identity_init=True).double()
        # F_t = S_t o S_0^{-1} = id: density and velocity are the inner mixture bridge's, at every t
        assert (model.log_prob(t, x) - model.base.log_prob(t, x)).abs().max() < 1e-12
        assert (model.velocity(t, x) - model.base.velocity(t, x)).abs().max() < 1e-12
        # the zeroed last layers still get gradients, so the flow can leave the identity
        model.log_prob(t, x).sum().backward()
        last = model.flow.couplings[0].hyper[-1].weight.grad
        assert last is not None and float(last.abs().max()) > 0
        random = FlowBridge(q0, target, 2, hidden=16).double()
        assert (random.log_prob(t, x) - random.base.log_prob(t, x)).abs().max() > 1e-6
