"""Data for probflux: spatio-temporal points and population snapshots.

* :mod:`probflux.data.points` — :class:`TemporalPoints` ``(t_i, x_i[, c_i])``, :func:`load_points`, the
  built-in point data sets (:func:`pinwheel`, :func:`branching`), :func:`split` and :func:`load_data`.
* :mod:`probflux.data.snapshots` — :class:`Snapshots` (unpaired samples at a few times), the single-cell
  loaders (:func:`cite`, :func:`emt_3d`, :func:`emt_10d`, :func:`weinreb_2d`), synthetic snapshot
  generators, the :data:`SNAPSHOTS` registry and :func:`load_snapshots`.

:func:`load_data` serves both: ``data.name`` in :data:`BUILTIN`, ``"file"`` or :data:`SNAPSHOTS`.
"""
from .points import BUILTIN, TemporalPoints, branching, builtin, load_data, load_points, pinwheel, split
from .snapshots import (
    SNAPSHOTS,
    SnapshotSplit,
    Snapshots,
    Standardization,
    Whitening,
    branching_tree,
    cite,
    data_root,
    data_root_candidates,
    emt_3d,
    emt_10d,
    gaussian_to_8gaussians,
    gaussian_to_gaussian,
    load_snapshots,
    moons,
    snapshot_set,
    split_snapshots,
    weinreb_2d,
)

__all__ = [
    # points
    "TemporalPoints",
    "load_points",
    "pinwheel",
    "branching",
    "BUILTIN",
    "builtin",
    "split",
    "load_data",
    # snapshots
    "Snapshots",
    "Standardization",
    "Whitening",
    "SnapshotSplit",
    "data_root",
    "data_root_candidates",
    "cite",
    "emt_3d",
    "emt_10d",
    "weinreb_2d",
    "gaussian_to_gaussian",
    "gaussian_to_8gaussians",
    "moons",
    "branching_tree",
    "SNAPSHOTS",
    "snapshot_set",
    "split_snapshots",
    "load_snapshots",
]

# events: spatio-temporal event sequences (Neural STPP format), see probflux.data.events
from .events import (  # noqa: E402
    EVENT_DATASETS,
    EventDataset,
    EventSequences,
    PooledEvents,
    bh_conflicts,
    citibike,
    covid_nj,
    earthquakenpp,
    earthquakenpp_window,
    earthquakes_jp,
    event_dataset,
    pinwheel_hawkes,
    pinwheel_stpp,
    split_sequences,
    windows,
)

__all__ += [
    "EventSequences",
    "PooledEvents",
    "earthquakes_jp",
    "covid_nj",
    "citibike",
    "pinwheel_stpp",
    "earthquakenpp",
    "earthquakenpp_window",
    "bh_conflicts",
    "pinwheel_hawkes",
    "split_sequences",
    "windows",
    "EventDataset",
    "EVENT_DATASETS",
    "event_dataset",
]
