"""probflux: simulation-free diffusion dynamics through exact density–flux pairs.

``import probflux`` loads the core only — the density families, :class:`Dynamics`, :func:`simulate` and the
continuity check. The layers above it load on first use: :mod:`probflux.objectives`, :mod:`probflux.train`,
:mod:`probflux.evaluation`, :mod:`probflux.metrics`, :mod:`probflux.data`, :mod:`probflux.stpp`,
:mod:`probflux.control`, :mod:`probflux.plot` and the application layer :mod:`probflux.app` (configs, run
directories, the CLI).

>>> import probflux as pf
>>> rho = pf.FactorizedMixture(2, components=4, hidden=16)
>>> x = rho.sample(0.5, 3)
>>> tuple(x.shape), tuple(rho.log_prob(0.5, x).shape)
((3, 2), (3,))
"""
from __future__ import annotations

import importlib
from typing import Any

from ._validation import set_validation
from ._version import __version__
from .checks import Residual, continuity_residual
from .densities import AnchoredMixture, AutoregressiveMixture, Conditioned, FactorizedMixture, FlowDensity, TimeDensity
from .divfree import DivergenceFree
from .dynamics import SDE, Dynamics
from .simulate import simulate

_SUBMODULES = ("app", "checkpoint", "control", "data", "densities", "evaluation", "io", "metrics", "nn", "normalize", "objectives",
               "plot", "stpp", "train")

__all__ = [
    "TimeDensity",
    "FactorizedMixture",
    "AutoregressiveMixture",
    "AnchoredMixture",
    "FlowDensity",
    "DivergenceFree",
    "Conditioned",
    "Dynamics",
    "SDE",
    "simulate",
    "continuity_residual",
    "Residual",
    "set_validation",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'probflux' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBMODULES])
