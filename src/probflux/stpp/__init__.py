"""Spatio-temporal point processes: history features and encoders for the spatial density, and modest
temporal models (Poisson, exponential-kernel Hawkes, an ETAS-style intensity) for a full STPP likelihood, and
the EarthquakeNPP continuous protocol (:mod:`probflux.stpp.continuous`: one catalog, every event conditioned on
all strictly earlier events).

The spatial part is any :class:`probflux.TimeDensity` of the event location given the event time (mapped to
``[0, 1]``) and, for history-conditioned models, ``context`` = :func:`history_context` encoded by
:class:`HistoryEncoder` inside :class:`probflux.Conditioned`.
"""
from .history import HistoryEncoder, history_at, history_context, model_points, spatial_log_likelihood
from .kernel_history import KernelHistory
from .markov_mixture import MarkovMixture
from .selfexciting import SelfExciting
from .temporal import ConstantRate, CountETASTemporal, ETASTemporal, HawkesProcess, PoissonProcess

__all__ = [
    "history_context",
    "history_at",
    "HistoryEncoder",
    "model_points",
    "spatial_log_likelihood",
    "PoissonProcess",
    "HawkesProcess",
    "ConstantRate",
    "ETASTemporal",
    "CountETASTemporal",
    "SelfExciting",
    "KernelHistory",
    "MarkovMixture",
]
