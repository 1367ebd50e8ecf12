"""probflux.control: Riccati closed form, exactness of the simulation-free objective, mean-field terms,
horizon rescaling, problem validation (issue #6)."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

import probflux as pf
from probflux.control import (
    Congestion,
    ControlObjective,
    ControlProblem,
    Disc,
    Entropy,
    Gaussian,
    GaussianMixture,
    InteractionKernel,
    Obstacle,
    PinnedMixture,
    default_density,
    lq_optimal_cost,
    lq_problem,
    model_drift,
    model_log_density,
    monte_carlo_cost,
    riccati,
    riccati_integral,
    simulation_free_cost,
    solve,
)
from probflux.objectives import Batch


def frozen(model: PinnedMixture) -> PinnedMixture:
    """``rho_t = rho_0`` for all t: the network's last layer outputs 0."""
    with torch.no_grad():
        model.net.linears[-1].weight.zero_()
        model.net.linears[-1].bias.zero_()
    return model


def perturbed_pinned(initial, seed: int = 0, **kw) -> PinnedMixture:
    torch.manual_seed(seed)
    m = PinnedMixture(initial, components=kw.pop("components", 2), hidden=16, layers=2, max_frequency=4.0, **kw).double()
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


# ----------------------------------------------------------------------------------------- LQ closed form
@pytest.mark.parametrize("q,r,T", [(1.0, 3.0, 1.0), (0.0, 2.0, 1.0), (2.0, 0.5, 2.0)])
def test_riccati_solves_the_ode_and_its_integral(q, r, T):
    s = torch.linspace(0, T, 201, dtype=torch.float64, requires_grad=True)
    P = riccati(s, q, r, T)
    (dP,) = torch.autograd.grad(P.sum(), s)
    assert torch.allclose(-dP, q - P.detach() ** 2, atol=1e-10)
    assert abs(float(P[-1].detach()) - r) < 1e-12
    quad, _ = integrate.quad(lambda v: float(riccati(torch.tensor(v, dtype=torch.float64), q, r, T)), 0, T)
    assert abs(riccati_integral(q, r, T) - quad) < 1e-9


@pytest.mark.parametrize("g,T", [(1.0, 1.0), (0.7, 2.0)])
def test_optimal_feedback_simulated_reaches_the_closed_form(g, T):
    """b* = -P(s) x simulated by Euler–Maruyama costs (1/2) P(0) E|X0|^2 + (g^2 D/2) int P (derivation check)."""
    problem = lq_problem(2, g=g, horizon=T)
    res = monte_carlo_cost(problem, lambda s, x: -riccati(s, 1.0, 3.0, T)[:, None] * x, n=10000, steps=400, w2=False)
    opt = lq_optimal_cost(2, g=g, horizon=T)
    assert abs(res["cost"] - opt) < 4 * res["cost_se"] + 0.01 * opt
    # a suboptimal gain costs measurably more
    worse = monte_carlo_cost(problem, lambda s, x: -0.5 * riccati(s, 1.0, 3.0, T)[:, None] * x, n=10000, steps=400, w2=False)
    assert worse["cost"] > opt + 4 * worse["cost_se"]


def test_lq_short_training_reaches_riccati_d2():
    problem = lq_problem(2)
    density = default_density(problem, components=1, hidden=32, layers=2)
    fit = solve(problem, density, steps=300, lr=3e-3, batch_size=64, dtype="float64", warmup=20, ema=None,
                objective=ControlObjective(problem, samples=256))
    opt = lq_optimal_cost(2)
    mc = monte_carlo_cost(problem, model_drift(problem, fit.model), n=4000, steps=200, w2=False)
    sf = simulation_free_cost(problem, fit.model, n=4096)
    assert mc["cost"] > opt - 4 * mc["cost_se"]  # nothing beats the optimum
    assert abs(mc["cost"] / opt - 1) < 0.03, (mc["cost"], opt)
    assert abs(sf["cost"] / opt - 1) < 0.03, (sf["cost"], opt)


# ----------------------------------------------------------------------------------------- exactness
def test_simulation_free_objective_equals_monte_carlo_for_a_fixed_model():
    """Every path term estimated from rho_t equals the Monte Carlo estimate along simulated SDE paths
    (rho_0 pinned to the initial law; horizon T = 2 exercises the time rescaling)."""
    initial = Gaussian([0.5, -0.3], [0.6, 0.4])
    problem = ControlProblem(
        2, diffusion=0.8, base_drift=lambda s, x: torch.stack([1.0 + 0 * s, -0.5 * x[:, 1]], -1),
        running_cost=lambda s, x: 0.1 * s * x.pow(2).sum(-1), terminal_cost=lambda x: (x[:, 0] - 1).pow(2),
        initial=initial, horizon=2.0, obstacles=[Disc([1.0, 0.0], 0.7, weight=3.0, penalty="sigmoid", width=0.1)],
        mean_field=[Entropy(0.5), Congestion(2.0), InteractionKernel(0.3)],
    )
    dyn = problem.dynamics(perturbed_pinned(initial))
    sf = simulation_free_cost(problem, dyn, n=20000, seed=1)
    mc = monte_carlo_cost(problem, model_drift(problem, dyn), n=2500, steps=300, seed=2,
                          log_density=model_log_density(problem, dyn), w2=False)
    for k, (m_sf, e_sf) in sf["terms"].items():
        m_mc, e_mc = mc["terms"][k]
        assert abs(m_sf - m_mc) < 4 * math.hypot(e_sf, e_mc) + 0.01 * abs(m_sf) + 1e-3, (k, m_sf, m_mc)
    assert abs(sf["cost"] - mc["cost"]) < 4 * math.hypot(sf["cost_se"], mc["cost_se"]) + 0.01 * abs(sf["cost"])
    # the check has power: a wrong time scaling of the drift is detected
    wrong = monte_carlo_cost(problem, lambda s, x: 2.0 * model_drift(problem, dyn)(s, x), n=1000, steps=100, seed=2,
                             log_density=model_log_density(problem, dyn), w2=False)
    assert abs(wrong["cost"] - sf["cost"]) > 6 * math.hypot(sf["cost_se"], wrong["cost_se"])


# ----------------------------------------------------------------------------------------- mean-field terms
def test_mean_field_terms_on_a_known_gaussian():
    """rho_t = N(m, diag(v)) for all t: E[log rho] = -H, E[rho] = (4 pi)^{-D/2} |Sigma|^{-1/2}, and
    E k(x, y) with x - y ~ N(0, 2 Sigma) by quadrature — through ControlObjective (times T = 3)."""
    var = torch.tensor([0.5, 2.0], dtype=torch.float64)
    initial = Gaussian([1.0, -1.0], var)
    T = 3.0
    problem = ControlProblem(2, diffusion=1.0, initial=initial, horizon=T,
                             mean_field=[Entropy(1.0), Congestion(1.0), InteractionKernel(1.0)])
    dyn = problem.dynamics(frozen(PinnedMixture(initial, components=1, hidden=8, layers=1).double()))
    n = 40000
    terms = ControlObjective(problem, samples=n)(dyn, Batch(torch.zeros(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                                                           generator=torch.Generator().manual_seed(0)))
    D, det = 2, float(var.prod())
    neg_entropy = -0.5 * D * math.log(2 * math.pi * math.e) - 0.5 * math.log(det)
    congestion = (4 * math.pi) ** (-D / 2) * det ** -0.5
    # E 2/(|Z|^2 + 1), Z ~ N(0, 2 diag(var)) by 2-D quadrature
    def f(a, b):
        dens = math.exp(-a * a / (4 * var[0]) - b * b / (4 * var[1])) / (4 * math.pi * math.sqrt(det))
        return 2.0 / (a * a + b * b + 1) * dens
    kernel, _ = integrate.dblquad(f, -30, 30, -30, 30, epsabs=1e-10)
    # standard errors of the per-sample integrands, times T
    assert abs(float(terms["entropy"]) - T * neg_entropy) < 4 * T * 1.0 / math.sqrt(n)
    assert abs(float(terms["congestion"]) - T * congestion) < 4 * T * congestion / math.sqrt(n)
    assert abs(float(terms["interaction"]) - T * kernel) < 4 * T * 1.0 / math.sqrt(n)
    assert "control" in terms and float(terms["control"]) > 0  # a static density with g > 0 still needs drift


def test_pinned_mixture_has_the_initial_law_exactly():
    initial = GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [[0.3, 0.5], [1.0, 0.2]], weights=[0.3, 0.7])
    model = perturbed_pinned(initial, components=4)
    x = initial.sample(500, torch.Generator().manual_seed(0))
    assert torch.allclose(model.log_prob(0.0, x), initial.log_prob(x), atol=1e-10)
    assert not torch.allclose(model.log_prob(0.5, x), initial.log_prob(x), atol=1e-3)  # it does move
    residual = pf.continuity_residual(model, torch.rand(64, dtype=torch.float64), 2 * torch.randn(64, 2, dtype=torch.float64))
    assert residual.relative.max() < 1e-8
    with pytest.raises(ValueError, match="multiple of the initial law's 2 components"):
        PinnedMixture(initial, components=3)
    with pytest.raises(ValueError, match="must be diagonal"):
        PinnedMixture(Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]]), components=2)


# ----------------------------------------------------------------------------------------- horizon rescaling
@pytest.mark.parametrize("T", [0.5, 3.0])
def test_horizon_rescaling_of_diffusion_and_drift(T):
    """Model time t = s/T: g_m = sqrt(T) g(Ts), physical drift b_m / T. For a static density the physical
    drift is (g^2/2) grad log q whatever T is (the stationary Langevin drift)."""
    initial = Gaussian([0.0, 1.0], [0.5, 2.0])
    g = lambda s: 0.5 + 0.1 * s
    problem = ControlProblem(2, diffusion=g, initial=initial, horizon=T)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    assert torch.allclose(problem.model_diffusion(t), math.sqrt(T) * g(T * t))
    dyn = problem.dynamics(frozen(PinnedMixture(initial, components=1, hidden=8, layers=1).double()))
    x = initial.sample(50, torch.Generator().manual_seed(0))
    s = torch.full((50,), 0.3 * T, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(initial.log_prob(xr).sum(), xr)
    assert torch.allclose(model_drift(problem, dyn)(s, x), 0.5 * g(s)[:, None] ** 2 * score, atol=1e-10)


# ----------------------------------------------------------------------------------------- validation
def test_bad_problem_specs_are_rejected_with_precise_messages():
    q0 = Gaussian([0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match=r"diffusion g must be a finite number >= 0; got -1.0"):
        ControlProblem(2, diffusion=-1.0, initial=q0)
    with pytest.raises(ValueError, match=r"diffusion\(s\) must be finite and >= 0"):
        ControlProblem(2, diffusion=lambda s: s - 0.5, initial=q0)
    with pytest.raises(ValueError, match="initial has dimension 3 but the problem has dim=2"):
        ControlProblem(2, initial=Gaussian([0.0, 0.0, 0.0], 1.0))
    with pytest.raises(ValueError, match="target has dimension 2 but the problem has dim=3"):
        ControlProblem(3, initial=torch.zeros(10, 3), target=q0)
    with pytest.raises(ValueError, match=r"obstacles\[1\] is defined in 3 dimensions but the problem has dim=2"):
        ControlProblem(2, initial=q0, obstacles=[Disc([0.0, 0.0], 1.0), Disc([0.0, 0.0, 1.0], 1.0)])
    with pytest.raises(ValueError, match="control_weight='kl'.*needs diffusion > 0"):
        ControlProblem(2, diffusion=0.0, initial=q0)
    with pytest.raises(ValueError, match="horizon must be a finite number > 0"):
        ControlProblem(2, initial=q0, horizon=0.0)
    with pytest.raises(ValueError, match="base_drift has 3 entries but the problem has dim=2"):
        ControlProblem(2, initial=q0, base_drift=[1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"running_cost\(s, x\) must return \(N,\)"):
        ControlProblem(2, initial=q0, running_cost=lambda s, x: x)
    with pytest.raises(TypeError, match=r"mean_field\[0\] must be a probflux.control.MeanField"):
        ControlProblem(2, initial=q0, mean_field=[lambda x: x])
    with pytest.raises(ValueError, match="covariance must be positive definite"):
        Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    problem = ControlProblem(2, diffusion=1.0, initial=q0, horizon=4.0)
    wrong = pf.Dynamics(PinnedMixture(q0, components=1, hidden=8, layers=1), diffusion=1.0)  # forgot sqrt(T)
    with pytest.raises(ValueError, match=r"problem's model diffusion sqrt\(T\) g\(T t\)"):
        ControlObjective(problem)(wrong, Batch(torch.zeros(4), torch.zeros(4, 2)))
    with pytest.raises(ValueError, match="penalty must be one of"):
        Obstacle([1.0, 1.0], [0.0, 0.0], 1.0, penalty="soft")


def test_obstacle_penalties():
    disc = Disc([1.0, 0.0], 2.0, weight=10.0)
    x = torch.tensor([[1.0, 0.0], [1.0, 1.9], [1.0, 2.1], [10.0, 0.0]], dtype=torch.float64)
    assert disc.cost(x).tolist() == [10.0, 10.0, 0.0, 0.0]
    sig = disc.with_penalty("sigmoid", width=1e-3).cost(x)
    assert torch.allclose(sig, disc.cost(x), atol=1e-6)
    soft = disc.with_penalty("softplus", weight=1.0, width=1.0).cost(x)
    assert torch.allclose(soft, torch.nn.functional.softplus(4.0 - (x - torch.tensor([1.0, 0.0])).pow(2).sum(-1)))


# ----------------------------------------------------------------------------------------- pieces of the benchmark
def test_fixed_weights_and_endpoint_initialisation():
    initial = Gaussian([0.0, 0.0], 1.0)
    model = perturbed_pinned(initial, components=4, fixed_weights=True, flux="mixture", loc_scale=10.0)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    logits = model._params(t, None)[0]
    assert torch.allclose(torch.softmax(logits, -1), torch.full((3, 4), 0.25, dtype=torch.float64))
    torch.manual_seed(0)
    fresh = PinnedMixture(initial, components=4, hidden=16, layers=2, loc_scale=10.0).double()
    pts = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [0.0, -10.0]], dtype=torch.float64)
    fresh.init_endpoints(pts)
    loc1 = fresh._params(torch.ones(1, dtype=torch.float64), None)[1][0]
    assert (loc1 - pts).abs().max() < 0.5  # the last layer's weights are small at initialisation
    with pytest.raises(ValueError, match=r"points must be \(4, 2\)"):
        fresh.init_endpoints(pts[:3])


def test_baseline_sinkhorn_and_short_training():
    from probflux.control.baseline import sinkhorn_divergence, train_baseline

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    assert abs(float(sinkhorn_divergence(x, x))) < 1e-6
    y = (x + 3.0).requires_grad_(True)
    sd = sinkhorn_divergence(y, x)
    assert float(sd.detach()) > 5.0  # ~ |shift|^2 = 18, less the entropic blur
    (grad,) = torch.autograd.grad(sd, y)
    assert float(grad[:, 0].mean()) > 0  # moving y back towards x lowers it
    problem = lq_problem(2)
    policy, info = train_baseline(problem, steps=150, particles=128, sde_steps=20, lr=3e-3, hidden=32, seed=0)
    drift = lambda s, x: policy(s.float(), x.float()).double()
    trained = monte_carlo_cost(problem, drift, n=4000, steps=100, w2=False)
    opt = lq_optimal_cost(2)
    assert info["steps"] == 150 and abs(trained["cost"] / opt - 1) < 0.1, trained["cost"]
    with pytest.raises(ValueError, match="time_schedule=True needs max_seconds"):
        train_baseline(problem, steps=5, time_schedule=True)


def test_repeated_mean_field_terms_are_named_alike_by_every_estimate():
    """Two terms of one kind keep apart under the same names in the simulation-free cost, the Monte Carlo
    cost and the training objective (one mean-field evaluation); for rho_t = N(0, I) at all times each equals
    T coef (E log rho + offset) with E log rho = -(D/2) log(2 pi e)."""
    initial = Gaussian([0.0, 0.0], 1.0)
    T = 2.0
    problem = ControlProblem(2, diffusion=1.0, initial=initial, horizon=T, mean_field=[Entropy(0.5), Entropy(0.2, offset=1.0)])
    dyn = problem.dynamics(frozen(PinnedMixture(initial, components=1, hidden=8, layers=1).double()))
    sf = simulation_free_cost(problem, dyn, n=4096)
    mc = monte_carlo_cost(problem, model_drift(problem, dyn), n=256, steps=4, log_density=model_log_density(problem, dyn), w2=False)
    terms = ControlObjective(problem, samples=64)(dyn, Batch(torch.zeros(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                                                            generator=torch.Generator().manual_seed(0)))
    assert set(sf["terms"]) == set(mc["terms"]) == {"control", "entropy", "entropy_1"}
    assert {"entropy", "entropy_1"} <= set(terms)
    neg_entropy = -math.log(2 * math.pi * math.e)
    for key, coef, offset in (("entropy", 0.5, 0.0), ("entropy_1", 0.2, 1.0)):
        mean, se = sf["terms"][key]
        assert abs(mean - T * coef * (neg_entropy + offset)) < 4 * se, (key, mean)
