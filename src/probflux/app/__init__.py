"""The application layer: YAML configs, builders from config to library objects, run directories, the CLI.

Nothing below :mod:`probflux.app` imports it: the library (densities, dynamics, objectives, training,
data, events, control, plotting) is usable without configs.

* :mod:`.config` — the config schema, YAML files and ``key=value`` overrides;
* :mod:`.builders` — :func:`build_dynamics`, :func:`build_objective`, :func:`load_data`;
* :mod:`.run` — :class:`Run` (a trained run directory), :func:`fit_config`, :func:`load_run`;
* :mod:`.cli` — the ``probflux`` command, a thin layer over :mod:`.run`.
"""
