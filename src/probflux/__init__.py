"""probflux: simulation-free diffusion dynamics through exact density–flux pairs."""
from ._validation import set_validation
from .base import TimeDensity
from .conditioned import Conditioned
from .checks import Residual, continuity_residual
from .factorized import FactorizedMixture
from .autoregressive import AutoregressiveMixture
from .flow import FlowDensity
from .divfree import DivergenceFree
from .dynamics import Dynamics, SDE
from .simulate import simulate
from . import mixture1d, stpp
from . import control

__version__ = "0.1.0"

__all__ = [
    "TimeDensity",
    "FactorizedMixture",
    "AutoregressiveMixture",
    "FlowDensity",
    "DivergenceFree",
    "Conditioned",
    "Dynamics",
    "SDE",
    "simulate",
    "mixture1d",
    "stpp",
    "continuity_residual",
    "Residual",
    "set_validation",
    "__version__",
]
