"""Data for probflux: spatio-temporal points and population snapshots.

* :mod:`probflux.data.registry` — the single list of named data sets and their kinds;
* :mod:`probflux.data.points` — :class:`TemporalPoints` ``(t_i, x_i[, c_i])``, :func:`load_points`, the
  built-in point data sets (:func:`pinwheel`, :func:`branching`) and :func:`split`.
* :mod:`probflux.data.snapshots` — :class:`Snapshots` (unpaired samples at a few times), the single-cell
  loaders (:func:`cite`, :func:`emt_3d`, :func:`emt_10d`, :func:`weinreb_2d`), synthetic snapshot
  generators, the :data:`SNAPSHOTS` registry and :func:`load_snapshots`.
* :mod:`probflux.data.events` — :class:`EventSequences` (Neural STPP format), the spatio-temporal event
  loaders, :func:`windows` and the Pinwheel–Hawkes generator.

A config's ``data`` section becomes splits through :func:`probflux.app.builders.load_data`.
"""
from . import events, points, registry, snapshots  # noqa: F401 (submodules, for probflux.data.registry etc.)
from .events import *  # noqa: F401,F403
from .points import *  # noqa: F401,F403
from .snapshots import *  # noqa: F401,F403

__all__ = [*points.__all__, *snapshots.__all__, *events.__all__]
