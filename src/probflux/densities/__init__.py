"""The density families: each a :class:`TimeDensity` ``rho_t(x)`` with an exact flux ``j_t(x)``.

* :class:`TimeDensity` (:mod:`.base`) — the contract every family implements;
* :class:`FactorizedMixture` (:mod:`.factorized`) — time-varying mixtures of products of 1-D components;
* :class:`AutoregressiveMixture` (:mod:`.autoregressive`) — MADE-conditioned 1-D mixtures per coordinate;
* :class:`FlowDensity` (:mod:`.flow`) — a time-dependent normalising flow, flux from the map's velocity;
* :class:`KernelMixture` (:mod:`.anchored_events`) — many isotropic Gaussian kernels anchored at data points;
* :class:`AnchoredMixture` (:mod:`.anchored`) — Gaussian kernels on observed cells, moved along spline paths;
* :class:`Conditioned` (:mod:`.conditioned`) — any family with a learned encoding of a context;
* :mod:`.mixture1d` — the 1-D mixture CDFs and fluxes the mixtures are built from.
"""
from .anchored import AnchoredMixture
from .anchored_events import KernelMixture
from .autoregressive import AutoregressiveMixture
from .base import TimeDensity
from .conditioned import Conditioned
from .factorized import FactorizedMixture
from .flow import FlowDensity

__all__ = ["TimeDensity", "AnchoredMixture", "FactorizedMixture", "AutoregressiveMixture", "FlowDensity", "Conditioned", "KernelMixture"]
