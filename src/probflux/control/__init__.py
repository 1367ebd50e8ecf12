"""Stochastic optimal control and mean-field games, simulation-free (docs/control.md; the objective in docs/mathematics.md §7).

* :class:`ControlProblem` — dynamics, costs, initial/target laws, mean-field terms, obstacles, horizon.
* :class:`ControlObjective` — the simulation-free objective for :func:`probflux.train.fit`; :func:`solve` trains one.
* :func:`monte_carlo_cost` — the honest check by Euler–Maruyama; :func:`simulation_free_cost` — the same from ``rho_t``.
* :mod:`~probflux.control.lq` (Riccati closed form), :mod:`~probflux.control.problems` (DeepGSB crowds, motion
  planning), :mod:`~probflux.control.baseline` (simulation-based neural policy).
"""
from .bridge import BridgeMixture, FlowBridge, coupling_plan, pins
from .costs import Congestion, Disc, Ellipse, Entropy, InteractionKernel, MeanField, Obstacle, inverse_quadratic, kde_log_density
from .evaluate import model_drift, model_log_density, monte_carlo_cost, simulation_free_cost
from .laws import Gaussian, GaussianMixture, Law, LogDensity, Samples, fit_gaussian_mixture
from .lq import lq_optimal_cost, lq_problem, riccati, riccati_integral
from .objective import ControlObjective, endpoint_points
from .pinned import PinnedMixture
from .problem import ControlProblem
from .solve import default_density, solve

__all__ = [
    "ControlProblem", "ControlObjective", "endpoint_points", "PinnedMixture", "BridgeMixture", "FlowBridge",
    "coupling_plan", "pins", "fit_gaussian_mixture",
    "Law", "Gaussian", "GaussianMixture", "Samples", "LogDensity",
    "Obstacle", "Disc", "Ellipse", "MeanField", "Entropy", "Congestion", "InteractionKernel", "inverse_quadratic",
    "kde_log_density", "monte_carlo_cost", "simulation_free_cost", "model_drift", "model_log_density",
    "riccati", "riccati_integral", "lq_optimal_cost", "lq_problem", "solve", "default_density",
]
