"""Experiment configuration: a dataclass schema, YAML files and ``key=value`` overrides.

A config is a tree of dataclasses (:class:`Config` with the sections ``model``, ``data``,
``objective`` and ``train``). Files and overrides are parsed generically by walking the dataclass
fields and their type hints; the only hand-written rules are the value constraints in
``_CONSTRAINTS`` and ``_cross_checks``.

    cfg = load_config("exp.yaml", ["model.components=32", "train.lr=1e-3", "train.clip=null"])
    save_config(cfg, "runs/exp/config.yaml")

Every problem raises :class:`ConfigError` (a ``ValueError``) whose message names the dotted key and,
when known, where the value came from (the file or the override).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union, get_type_hints

import yaml

from .. import options
from ..data import registry as data_registry
from ..densities import autoregressive, factorized
from ..io import atomic_write
from ..train import TrainConfig

__all__ = [
    "Config",
    "ModelConfig",
    "DataConfig",
    "ColumnsConfig",
    "EvaluateConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "ConfigError",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "validate_config",
    "save_config",
    "valid_keys",
]


class ConfigError(ValueError):
    """An invalid configuration; the message names the dotted key (and the file or override)."""

    def __init__(self, message: str, keys: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


# ----------------------------------------------------------------------------------------- schema


class _Section(options.Options):
    """A config section that checks its fields on construction against its part of ``_CONSTRAINTS``
    (``ModelConfig(components=0)`` raises, as ``model.components=0`` does on the command line).
    ``DataConfig`` is checked by :func:`validate_config` / :func:`config_from_dict` only, so that a data
    section can be assembled field by field."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        options.validate_options(self, _section_checks(self.SECTION), self.SECTION + "." if self.SECTION else "")


@dataclass
class ModelConfig(_Section):
    """Which density/flux model to build (see ``FactorizedMixture`` / ``AutoregressiveMixture`` / ``FlowDensity``).

    ``transforms`` and ``coupling`` apply to ``type: flow`` only (``flux``, ``family`` and ``components`` do not).
    ``type: anchored`` (:class:`~probflux.AnchoredMixture`, population snapshots only) is built from the training
    snapshots: ``kernels``, ``bridge``, ``time_map`` and ``select`` apply to it alone.
    """

    SECTION: ClassVar[str] = "model"

    type: str = "factorized"
    family: str = "logistic"
    flux: str = "kr"
    components: int = 8
    hidden: int = 256
    layers: int = 3
    divergence_free: bool = False
    divfree_hidden: int = 64
    diffusion: float = 0.0
    time_frequency: float = 32.0
    transforms: int = 4
    coupling: str = "spline"
    kernels: int = 2000
    bridge: float = 0.5
    time_map: str = "w2"
    select: str = "loo"


@dataclass
class ColumnsConfig:
    """Column names of a CSV/TSV at ``data.path`` (``null``: found by the standard names, :mod:`probflux.data.files`).

    ``t``: the time column; ``x``: the coordinate columns, in order (e.g. ``[lon, lat]``; other columns are then
    ignored); ``sequence``: the event-sequence column; ``context``: per-point context columns (points only).
    """

    t: Optional[str] = None
    x: Optional[list[str]] = None
    sequence: Optional[str] = None
    context: Optional[list[str]] = None


@dataclass
class DataConfig:
    """Where the ``(t, x)`` points come from and how they are split and normalised.

    ``name``: a built-in point data set (``pinwheel``, ``branching``), ``file`` (read ``path``), or a
    population-snapshot data set (kind ``snapshots`` in :mod:`probflux.data.registry`: real ``cite``, ``emt``, ``emt10``,
    ``weinreb``; synthetic ``gaussians``, ``8gaussians``, ``moons``, ``tree``). ``n``: number of points
    of a built-in point set, or cells *per snapshot* of a synthetic snapshot set (real sets use all
    cells). ``pcs``: principal components of ``cite`` (1..50; ignored otherwise). ``leave_out``: index of
    an interior snapshot held out as the test split (snapshot sets only; ``test_fraction`` is then
    ignored). ``whiten``: PCA-whiten with the training cells (snapshot sets only; all splits are then in
    whitened coordinates and ``standardize`` is moot). Spatio-temporal event data sets (kind ``events``:
    ``earthquakes_jp``, ``covid_nj``, ``citibike``, ``pinwheel_stpp``, ``pinwheel_hawkes``, ``earthquakenpp_japan_25``,
    ``earthquakenpp_comcat_25``, ``bh_conflicts``) use their own splits (:func:`probflux.data.events.event_splits`;
    ``val_fraction``/``test_fraction``/``t0``/``t1`` do not apply) and map the observation window to ``[0, 1]``;
    ``history: k`` conditions the model on the ``k`` newest earlier events of the sequence
    (:func:`probflux.stpp.history_context`, encoded by :class:`probflux.stpp.HistoryEncoder`).

    ``name: file`` reads ``path`` (``.csv``/``.tsv`` with a header, ``.npz``, ``.npy``; docs/data.md): ``kind``
    (``points``, ``events``, ``snapshots``; ``null``: from the file's layout, or ``events`` when ``history``,
    ``window`` or ``cuts`` is set, ``snapshots`` when ``leave_out``/``whiten`` is, else ``points``), ``columns`` (CSV
    column names). Events from a file: one long sequence is split in time at ``cuts: [val_start, test_start]`` or
    by ``val_fraction``/``test_fraction`` of its window ``[t0, t1]``; several sequences are split at random by the
    fractions; an EarthquakeNPP ``train``/``val``/``test`` file keeps its own split. ``window`` (a length) cuts every
    part into windows, training windows every ``stride`` (default ``window``; ``partial_windows`` keeps each part's
    trailing partial window); without it the parts stay continuous.
    """

    name: str = "pinwheel"
    path: Optional[str] = None
    n: int = 20000
    t0: Optional[float] = None
    t1: Optional[float] = None
    standardize: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    pcs: int = 5
    leave_out: Optional[int] = None
    whiten: bool = False
    history: Optional[int] = None
    kind: Optional[str] = None
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    cuts: Optional[list[float]] = None
    window: Optional[float] = None
    stride: Optional[float] = None
    partial_windows: bool = False


@dataclass
class EvaluateConfig(_Section):
    """Size of the evaluation ``probflux fit`` runs after training and ``probflux evaluate`` runs by default
    (:func:`probflux.evaluation.evaluate`); 0 switches a part off.

    ``particles``/``steps``: SDE and ODE particles and Euler steps of the simulation distances (``w1_*``; off when
    either is 0); ``residual_points``: model samples of the continuity check; ``heldout_cells``: cells per side of the
    held-out snapshot scores (``data.leave_out`` runs). The held-out NLL is always computed.
    """

    SECTION: ClassVar[str] = "evaluate"

    particles: int = 500
    steps: int = 100
    residual_points: int = 256
    heldout_cells: int = 2000


@dataclass
class ObjectiveConfig(_Section):
    """Terms of the training loss and their weights.

    ``likelihood``: ``points`` weights every observed point equally (spatio-temporal data);
    ``snapshots`` weights every observation time equally (population snapshots, docs/mathematics.md §7).
    ``kinetic`` weights ``E|u|^2``, ``drift_energy`` weights ``E|b|^2`` (Schrödinger bridge when
    ``model.diffusion > 0``), ``jacobian_symmetry`` weights ``E||J - J^T||_F^2``; all three use
    ``kinetic_samples`` draws per step and switch on at ``kinetic_start`` over ``kinetic_ramp`` steps.
    """

    SECTION: ClassVar[str] = "objective"

    nll: float = 1.0
    likelihood: str = "points"
    kinetic: float = 0.0
    drift_energy: float = 0.0
    jacobian_symmetry: float = 0.0
    kinetic_samples: int = 256
    kinetic_start: int = 0
    kinetic_ramp: int = 0


@dataclass
class Config(_Section):
    """A whole experiment: seed, run directory and the four sections."""

    seed: int = 0
    out: str = "runs/experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


# ------------------------------------------------------------------------------------ constraints

# the checks live in probflux.options, next to the option objects that run them on construction
_choices, _at_least, _greater, _interval = options.choices, options.at_least, options.greater, options.interval
_nonempty, _device = options.nonempty, options.device
Check = options.Check  # returns None when fine, else what is required


MODEL_TYPES = ("factorized", "autoregressive", "flow", "anchored")
FLUXES = {"factorized": factorized.FLUXES, "autoregressive": autoregressive.FLUXES}  # the flow's flux is fixed by its map

_CONSTRAINTS: dict[str, tuple[Check, ...]] = {
    "seed": (_at_least(0),),
    "out": (_nonempty,),
    "model.type": (_choices(*MODEL_TYPES),),
    "model.family": (_choices("logistic", "gaussian"),),
    "model.flux": (_choices(*dict.fromkeys(f for fl in FLUXES.values() for f in fl)),),
    "model.components": (_at_least(1),),
    "model.transforms": (_at_least(0),),
    "model.coupling": (_choices("spline", "affine"),),
    "model.hidden": (_at_least(1),),
    "model.layers": (_at_least(1),),
    "model.divfree_hidden": (_at_least(1),),
    "model.diffusion": (_at_least(0),),
    "model.kernels": (_at_least(1),),
    "model.bridge": (_at_least(0),),
    "model.time_map": (lambda v: None if v in ("clock", "w2") or (isinstance(v, str) and v.startswith("exp:"))
                       else "must be 'clock', 'w2' or 'exp:<number>'",),
    "model.select": (_choices("loo", "none"),),
    # data.name: checked in _cross_checks (point and snapshot data sets are listed separately)
    "data.n": (_at_least(1),),
    "data.history": (lambda v: None if v is None or v >= 1 else "must be a number of past events >= 1 or null",),
    "data.pcs": (_interval(1, 50, hi_open=False),),
    "data.leave_out": (lambda v: None if v is None or v >= 1
                       else "must be an interior snapshot index >= 1 (0 is the first snapshot) or null",),
    "data.val_fraction": (_interval(0, 1, hi_open=True),),
    "data.test_fraction": (_interval(0, 1, hi_open=True),),
    "data.kind": (lambda v: None if v in (None, "points", "events", "snapshots") else "must be 'points', 'events', 'snapshots' or null",),
    "data.window": (lambda v: None if v is None or v > 0 else "must be a window length > 0 or null",),
    "data.stride": (lambda v: None if v is None or v > 0 else "must be a stride > 0 or null",),
    "data.cuts": (lambda v: None if v is None or (len(v) == 2 and v[0] < v[1]) else "must be two increasing times [val_start, test_start] "
                  "or null",),
    "evaluate.particles": (_at_least(0),),
    "evaluate.steps": (_at_least(0),),
    "evaluate.residual_points": (_at_least(0),),
    "evaluate.heldout_cells": (_at_least(0),),
    "objective.nll": (_at_least(0),),
    "objective.kinetic": (_at_least(0),),
    "objective.kinetic_samples": (_at_least(1),),
    "objective.likelihood": (_choices("points", "snapshots"),),
    "model.time_frequency": (_at_least(math.pi / 2),),
    "objective.drift_energy": (_at_least(0),),
    "objective.jacobian_symmetry": (_at_least(0),),
    "objective.kinetic_start": (_at_least(0),),
    "objective.kinetic_ramp": (_at_least(0),),
    # the train section's rules are TrainConfig's own (probflux.train), checked whenever one is constructed
    **{f"train.{k}": checks for k, checks in TrainConfig.CHECKS.items()},
}


def _section_checks(section: str) -> dict[str, tuple[Check, ...]]:
    """The rules of ``_CONSTRAINTS`` for the leaf fields of one section (``""``: the top level)."""
    if not section:
        return {k: v for k, v in _CONSTRAINTS.items() if "." not in k}
    return {k[len(section) + 1:]: v for k, v in _CONSTRAINTS.items() if k.startswith(section + ".") and k.count(".") == 1}


def _cross_checks(cfg: Config) -> list[tuple[str, tuple[str, ...]]]:
    """Rules tying several fields together: ``(message, dotted keys involved)``."""
    out = []
    m, d, o = cfg.model, cfg.data, cfg.objective
    allowed = FLUXES.get(m.type)  # None: the flow family's flux is fixed by its map
    if allowed is not None and m.flux not in allowed:
        out.append((f"model.flux: {m.flux!r} is not available for model.type={m.type!r} (choose {' or '.join(map(repr, allowed))})",
                    ("model.flux", "model.type")))
    if m.type == "autoregressive" and m.family != "logistic":
        out.append((f"model.family: {m.family!r} is only available for model.type='factorized' (the autoregressive model is logistic)",
                    ("model.family", "model.type")))
    point_names = data_registry.names("points") + data_registry.names("file")
    snapshot_names, event_names = data_registry.names("snapshots"), data_registry.names("events")
    if d.name not in point_names + snapshot_names + event_names:
        snaps = ", ".join(repr(n) for n in snapshot_names)
        events = ", ".join(repr(n) for n in event_names)
        out.append((f"data.name: must be one of {', '.join(repr(n) for n in point_names)}, got {_show(d.name)}, "
                    f"or a population-snapshot data set: {snaps}, "
                    f"or an event data set: {events}", ("data.name",)))
    is_file = d.name in data_registry.names("file")
    if d.kind is not None and not is_file and d.name in point_names + snapshot_names + event_names:
        own = data_registry.dataset(d.name).kind
        if d.kind != own:
            out.append((f"data.kind: {d.name!r} is a built-in {own} data set, not {d.kind!r} (data.kind is for data.name=file)",
                        ("data.kind", "data.name")))
    file_events = is_file and d.kind in (None, "events")
    which = f"data.name={d.name!r}" + (f" with data.kind={d.kind!r}" if is_file else "")
    if d.history is not None and d.name not in event_names and not file_events:
        out.append((f"data.history: only available for event data sets ({', '.join(event_names)}, or data.name=file with events), "
                    f"not {which}", ("data.history", "data.name", "data.kind")))
    for key, value in (("leave_out", d.leave_out), ("whiten", d.whiten)):
        if value not in (None, False) and d.name not in snapshot_names and not (is_file and d.kind in (None, "snapshots")):
            out.append((f"data.{key}: only available for population-snapshot data sets ({', '.join(snapshot_names)}, "
                        f"or data.name=file with snapshots), not {which}", (f"data.{key}", "data.name", "data.kind")))
    for key, value in (("cuts", d.cuts), ("window", d.window), ("stride", d.stride)):
        if value is not None and not file_events:
            out.append((f"data.{key}: only for event files (data.name=file, data.kind events or null); the built-in event sets have "
                        f"their own protocol; got {which}", (f"data.{key}", "data.name", "data.kind")))
    if d.stride is not None and d.window is None:
        out.append(("data.stride: needs data.window (the window length)", ("data.stride", "data.window")))
    if d.partial_windows and d.window is None:
        out.append(("data.partial_windows: needs data.window (the window length)", ("data.partial_windows", "data.window")))
    if not is_file and any(getattr(d.columns, f.name) is not None for f in dataclasses.fields(d.columns)):
        out.append((f"data.columns: names the columns of a file at data.path; data.name is {d.name!r}", ("data.columns", "data.name")))
    if is_file and not d.path:
        out.append(("data.path: required when data.name is 'file' (a .csv, .tsv, .npz or .npy file)", ("data.path", "data.name")))
    if d.name != "file" and d.path is not None:
        out.append((f"data.path: is set but data.name is {d.name!r}; set data.name=file to load it", ("data.path", "data.name")))
    if d.t0 is not None and d.t1 is not None and not d.t0 < d.t1:
        out.append((f"data.t0: must be < data.t1, got t0={d.t0} and t1={d.t1}", ("data.t0", "data.t1")))
    if d.val_fraction + d.test_fraction >= 1:
        out.append((f"data.val_fraction + data.test_fraction must be < 1, got {d.val_fraction} + {d.test_fraction}",
                    ("data.val_fraction", "data.test_fraction")))
    if o.nll == 0 and o.kinetic == 0 and o.drift_energy == 0:
        out.append(("objective.nll and objective.kinetic are both 0: nothing to train", ("objective.nll", "objective.kinetic")))
    if o.drift_energy > 0 and m.diffusion == 0:
        out.append(("objective.drift_energy: needs model.diffusion > 0 (with g = 0 it is objective.kinetic)",
                    ("objective.drift_energy", "model.diffusion")))
    return out


# ---------------------------------------------------------------------------------- generic walk


_unwrap_optional, _type_name, _show = options._unwrap_optional, options.type_name, options.show


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against a scalar type hint (:func:`probflux.options.coerce`); ints become floats for float fields."""
    try:
        return options.coerce(value, tp, key)
    except options.OptionError as e:
        raise ConfigError(str(e), [key]) from None


def _unknown_key(key: str) -> ConfigError:
    valid = valid_keys(sections=True)
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in valid if k.rsplit(".", 1)[-1] == leaf and k != key]
    match = same_leaf[:1] or difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not match:  # compare the leaf with the leaves of the same section
        section = key.rsplit(".", 1)[0] + "." if "." in key else ""
        leaves = {k.rsplit(".", 1)[-1]: k for k in valid if k.startswith(section) and k.count(".") == key.count(".")}
        match = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)]
    hint = f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(valid_keys())}"
    return ConfigError(f"unknown key {key!r}{hint}", [key])


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``raw``, recursing into nested dataclass fields."""
    flds = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if not isinstance(k, str):
            raise ConfigError(f"{prefix or 'top level'}: keys must be strings, got {k!r}", [prefix.rstrip(".")])
        if k not in flds:
            raise _unknown_key(prefix + k)
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name in flds:
        if name not in raw:
            continue
        key, tp, value = prefix + name, hints[name], raw[name]
        if dataclasses.is_dataclass(tp):
            if value is None:  # an empty section in YAML: all defaults
                value = {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a mapping, got {_show(value)}", [key])
            kwargs[name] = _build(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(value, tp, key)
    try:
        return cls(**kwargs)
    except options.OptionError as e:  # a section's own range check (probflux.options), named by its dotted key
        if e.key.startswith(prefix):
            raise ConfigError(str(e), [e.key]) from None
        raise ConfigError(prefix + str(e), [prefix + e.key]) from None


def _leaves(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.extend(_leaves(v, prefix + f.name + "."))
        else:
            out.append((prefix + f.name, v))
    return out


def valid_keys(*, sections: bool = False) -> list[str]:
    """All dotted leaf keys of the schema (plus the section names when ``sections=True``)."""

    def walk(cls: type, prefix: str) -> list[str]:
        hints, keys = get_type_hints(cls), []
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                if sections:
                    keys.append(prefix + f.name)
                keys.extend(walk(hints[f.name], prefix + f.name + "."))
            else:
                keys.append(prefix + f.name)
        return keys

    return walk(Config, "")


def validate_config(cfg: Config) -> Config:
    """Check types and value constraints of a :class:`Config`; returns it (floats normalised)."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected a Config, got {type(cfg).__name__}")
    cfg = config_from_dict(config_to_dict(cfg))
    return cfg


def _check_values(cfg: Config) -> None:
    for key, value in _leaves(cfg):
        for check in _CONSTRAINTS.get(key, ()):
            problem = check(value)
            if problem:
                raise ConfigError(f"{key}: {problem}, got {_show(value)}", [key])
    for message, involved in _cross_checks(cfg):
        raise ConfigError(message, involved)


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (missing keys take defaults)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"top level must be a mapping of sections (model, data, objective, train), got {type(d).__name__}")
    cfg = _build(Config, d, "")
    _check_values(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain ``dict`` of a config (YAML/JSON serialisable)."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------------- files, CLI


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-3`` as a float (YAML 1.1 insists on ``1.0e-3``) and refuses a key
    given twice in one mapping (plain YAML silently keeps the last value)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first at line {first.start_mark.line + 1}); each key may appear once",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _field_type(key: str) -> Any:
    """Type hint of a dotted key (``None`` if unknown)."""
    cls: Any = Config
    parts = key.split(".")
    for part in parts:
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return None
        cls = get_type_hints(cls)[part]
    return cls


def _parse_override(item: Any, field_type: Optional[Any] = None) -> tuple[str, Any]:
    """``key=value`` → ``(key, YAML value)``; ``field_type(key)`` gives the key's type hint (default: :class:`Config`'s;
    another schema, e.g. :mod:`probflux.app.control`'s, passes its own, which raises for an unknown key)."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {item!r} must have the form key=value (e.g. model.components=32)")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key; expected key=value (e.g. model.components=32)")
    tp = (field_type or _field_type)(key)
    if tp is None:
        raise _unknown_key(key)
    try:
        value = _yaml_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: invalid YAML value ({getattr(e, 'problem', None) or e})", [key]) from None
    base, optional = _unwrap_optional(tp)
    if base is str and not isinstance(value, str) and not (value is None and optional) and text.strip():
        value = text.strip()  # out=2024 means the string "2024"
    return key, value


def load_config(path: Union[str, os.PathLike, None], overrides: Sequence[str] = (), *, base: Optional[Mapping[str, Any]] = None) -> Config:
    """Read a YAML config (``None``: all defaults, or the dict ``base``, e.g. a run's saved config) and apply
    dotted ``key=value`` overrides.

    Override values are parsed as YAML (``train.clip=null`` → ``None``, ``train.lr=1e-3`` → ``0.001``).
    Raises :class:`ConfigError` naming the file, line, key or override at fault.
    """
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a sequence of 'key=value' strings, got the single string {overrides!r}")
    if path is not None and base is not None:
        raise ConfigError("give a config file or a base dict, not both")
    raw: dict[str, Any] = copy.deepcopy(dict(base)) if base is not None else {}
    fname = None
    if path is not None:
        fname = os.fspath(path)
        try:
            with open(fname, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {fname!r}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {fname!r}: {e}") from None
        try:
            loaded = _yaml_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            start = getattr(e, "context_mark", None)
            if start is not None and mark is not None and start.line != mark.line:
                problem += f" ({getattr(e, 'context', None) or 'started'} at line {start.line + 1})"
            raise ConfigError(f"{fname}: invalid YAML{where}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{fname}: top level must be a mapping of sections (model, data, objective, train), "
                              f"got {type(loaded).__name__}")
        raw = copy.deepcopy(loaded)
    file_raw = copy.deepcopy(raw)

    origin: dict[str, str] = {}  # dotted key -> override text
    try:
        for item in overrides:
            key, value = _parse_override(item)
            origin[key] = item
            node = raw
            parts = key.split(".")
            for i, part in enumerate(parts[:-1]):
                if node.get(part) is None:
                    node[part] = {}
                elif not isinstance(node[part], dict):
                    sub = ".".join(parts[: i + 1])
                    raise ConfigError(f"{sub}: expected a mapping, got {_show(node[part])}", [sub])
                node = node[part]
            node[parts[-1]] = value
    except ConfigError as e:
        raise _locate(e, origin, file_raw, fname, current=item) from None

    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise _locate(e, origin, file_raw, fname) from None


def _in_file(raw: Mapping[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _locate(e: ConfigError, origin: dict[str, str], file_raw: Mapping[str, Any], fname: Optional[str], current: Any = None) -> ConfigError:
    """Append where the offending value came from: the override(s) or the file."""
    msg = str(e)
    if current is not None:
        where = "" if msg.startswith("override") else f" (from override {current!r})"
    else:
        def from_override(k: str) -> Optional[str]:
            parts = k.split(".")
            for j in range(len(parts), 0, -1):
                if ".".join(parts[:j]) in origin:
                    return origin[".".join(parts[:j])]
            return None

        hits = [o for o in (from_override(k) for k in e.keys) if o is not None]
        if hits:
            where = " (from override " + ", ".join(repr(h) for h in dict.fromkeys(hits)) + ")"
        elif fname is not None and (not e.keys or any(_in_file(file_raw, k) or k == "" for k in e.keys)):
            where = f" (in {fname})"
        else:
            where = ""
    return ConfigError(msg + where, e.keys)


def save_config(cfg: Config, path: Union[str, os.PathLike]) -> None:
    """Write ``cfg`` as YAML atomically (:func:`probflux.checkpoint.atomic_write`)."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ------------------------------------------------------------------------------ reference table

# one line per key; config_reference() refuses a key without one (tests/test_config_docs.py)
_MEANINGS: dict[str, str] = {
    "seed": "seeds data generation and splits, initialisation, batches, Monte-Carlo draws and evaluation",
    "out": "the run directory (fit refuses one holding another run unless --overwrite)",
    "model.type": "`FactorizedMixture`, `AutoregressiveMixture`, `FlowDensity` or `AnchoredMixture` (docs/concepts.md, populations.md)",
    "model.family": "component family of a mixture (`gaussian`: factorized only)",
    "model.flux": "the exact flux of a mixture (docs/concepts.md); allowed values depend on `model.type`",
    "model.components": "`K`: mixture components (factorized) or logistics per conditional (autoregressive)",
    "model.hidden": "network width",
    "model.layers": "network depth (time MLP, MADE, or coupling networks of a flow)",
    "model.divergence_free": "add a learned `DivergenceFree` velocity term (needs `D >= 2`)",
    "model.divfree_hidden": "width of the divergence-free term's network",
    "model.diffusion": "`g` in model coordinates, for simulation, evaluation and plots (the NLL does not depend on it)",
    "model.time_frequency": "highest frequency of the sinusoidal time features (`>= pi/2`: one period covers `[0, 1]`)",
    "model.transforms": "coupling transforms of a flow (`type: flow` only)",
    "model.coupling": "coupling layer of a flow: monotone rational-quadratic spline or affine (`type: flow` only)",
    "model.kernels": "kernels of an anchored mixture, on chained OT couplings of the training snapshots (`type: anchored` only)",
    "model.bridge": "Brownian-bridge spread `g` between snapshots, model units (`type: anchored`; `select: loo` chooses it)",
    "model.time_map": "clock time -> progress of an anchored mixture: `clock`, `w2` (cumulative W2) or `exp:<k>` (`select: loo` picks it)",
    "model.select": "`loo`: an anchored mixture's time map, bridge, bandwidth chosen leaving out training snapshots; `none`: as given",
    "data.name": "a built-in data set or `file` (read `data.path`)",
    "data.path": "the data file of `name: file` (`.csv`/`.tsv` with a header, `.npz`, `.npy`; docs/data.md)",
    "data.n": "points of a built-in point set, or cells per snapshot of a synthetic snapshot set",
    "data.t0": "start of the data time interval mapped to `[0, 1]` (null: the earliest time)",
    "data.t1": "end of the data time interval mapped to `[0, 1]` (null: the latest time); `t0 < t1`",
    "data.standardize": "standardise `x` with the training split's mean and standard deviation",
    "data.val_fraction": "validation share of a seeded split; `val_fraction + test_fraction < 1`",
    "data.test_fraction": "test share of a seeded split (ignored with `leave_out`)",
    "data.pcs": "principal components of `cite` (ignored otherwise)",
    "data.leave_out": "index of an interior snapshot held out as the test split (snapshot data only)",
    "data.whiten": "PCA-whiten with the training cells (snapshot data only)",
    "data.history": "condition on the `k` newest earlier events of the sequence (event data only)",
    "data.kind": "what a file holds: `points`, `events` or `snapshots` (null: from the file and the other keys)",
    "data.columns.t": "the time column of a CSV/TSV (null: `t`/`time`, or `time_index`/`day` for snapshots)",
    "data.columns.x": "the coordinate columns of a CSV/TSV, in order (null: every other numeric column)",
    "data.columns.sequence": "the event-sequence column of a CSV/TSV (null: `sequence`/`id` when present)",
    "data.columns.context": "per-point context columns of a CSV/TSV (points only)",
    "data.cuts": "`[val_start, test_start]`: split times of one long event sequence from a file",
    "data.window": "cut every part of an event file into windows of this length (null: continuous)",
    "data.stride": "step between training windows (default: `window`); needs `window`",
    "data.partial_windows": "keep each part's trailing partial window, so every event lies in some window; needs `window`",
    "objective.nll": "weight of the likelihood term",
    "objective.likelihood": "`points`: every point weighs the same; `snapshots`: every observation time does",
    "objective.kinetic": "weight of the kinetic energy `E|u|^2` (least-action dynamics)",
    "objective.drift_energy": "weight of `E|b|^2` (Schrödinger bridge; needs `model.diffusion > 0`)",
    "objective.jacobian_symmetry": "weight of `E||J - J^T||_F^2` (a gradient-field velocity)",
    "objective.kinetic_samples": "global draws per step of the kinetic, drift-energy and Jacobian terms",
    "objective.kinetic_start": "step at which those terms switch on",
    "objective.kinetic_ramp": "steps over which their weight ramps up linearly from 0",
    "train.steps": "optimisation steps",
    "train.batch_size": "global mini-batch size",
    "train.optimizer": "Adam or AdamW",
    "train.lr": "peak learning rate",
    "train.weight_decay": "weight decay of the optimiser",
    "train.warmup": "linear learning-rate warm-up steps",
    "train.min_lr_ratio": "final learning rate / `lr` of the cosine decay",
    "train.clip": "gradient-norm clipping (null: none)",
    "train.ema": "EMA decay of the weights used for evaluation and `best.pt` (null: no EMA)",
    "train.dtype": "floating-point precision of the model",
    "train.device": "`auto`: cuda, else mps, else cpu",
    "train.eval_every": "steps between validation evaluations",
    "train.log_every": "steps between `metrics.jsonl` lines",
    "train.checkpoint_every": "steps between `latest.pt` writes",
    "train.patience": "stop after this many evaluations without improvement (null: never)",
    "train.eval_points": "validation points per evaluation",
    "train.divergence_factor": "a finite loss above this multiple of max(1, |first loss|) counts as diverged (null: only NaN/inf)",
    "train.threads": "torch threads while training (restored afterwards; null: unchanged); 1 is often fastest on a busy machine",
    "train.max_seconds": "stop training early after this many seconds of wall time (null: run all steps)",
    "evaluate.particles": "SDE/ODE particles of the simulation distances `w1_*` (0: off)",
    "evaluate.steps": "Euler steps of those simulations (0: off)",
    "evaluate.residual_points": "model samples of the continuity-residual check (0: off)",
    "evaluate.heldout_cells": "cells per side of the held-out snapshot scores (`leave_out` runs)",
}

REGENERATE = "python -m probflux.app.config --markdown > docs/config.md"


def _yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return str(v)


def _allowed(key: str, tp: Any) -> str:
    """What ``_CONSTRAINTS`` allows for ``key``, read from the message of each check on a value it must refuse."""
    base, optional = _unwrap_optional(tp)
    probes: list[Any] = {int: [-math.inf], float: [-math.inf], str: ["\0", ""]}.get(base, [[math.inf, -math.inf]])
    parts = []
    for check in _CONSTRAINTS.get(key, ()):
        for probe in probes:
            try:
                problem = check(probe)
            except (TypeError, ValueError):
                continue
            if problem:
                text = re.sub(r"^must (be |lie )?", "", problem.replace("must not be empty", "non-empty"))
                text = re.sub(r"\d+\.\d{5,}", lambda m: f"{float(m.group()):.4g}", text)
                text = re.sub(r"'([^']*)'", r"`\1`", text)
                parts.append(text.removesuffix(" or null"))
                break
    if key == "data.name":
        kinds = ("points", "file", "snapshots", "events")
        parts.append("; ".join(f"{kind}: " + ", ".join(f"`{n}`" for n in data_registry.names(kind)) for kind in kinds))
    if key == "model.flux":
        parts = ["; ".join(f"{t}: " + ", ".join(f"`{f}`" for f in fl) for t, fl in FLUXES.items())]
    text = "; ".join(parts) or ("`true`, `false`" if base is bool else "any")
    return f"{text} or null" if optional else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bar inside a table cell, even in a code span, must be escaped


def _rst_to_markdown(text: str) -> str:
    text = re.sub(r":(?:class|func|mod|meth|attr):`~?([^`]+)`", r"`\1`", text)
    return " ".join(text.replace("``", "`").split())


def config_reference() -> str:
    """The reference of every config key as markdown (the content of docs/config.md): one table with the type,
    default, allowed values (read from ``_CONSTRAINTS``) and meaning of each key, then each section's docstring.
    Regenerate the file with ``python -m probflux.app.config --markdown > docs/config.md``."""
    missing = [k for k in valid_keys() if k not in _MEANINGS]
    stale = [k for k in _MEANINGS if k not in valid_keys()]
    if missing or stale:
        raise ConfigError(f"probflux.app.config._MEANINGS: add a one-line meaning for {missing}; remove {stale}", missing + stale)
    defaults = dict(_leaves(Config()))
    lines = [
        "# Configuration keys",
        "",
        f"<!-- Generated from the schema in src/probflux/app/config.py by `{REGENERATE}`;",
        "     do not edit by hand: tests/test_config_docs.py fails when this file and the schema disagree. -->",
        "",
        "Every key of a YAML config (`probflux fit CONFIG`) and of a `key=value` override. Missing keys take the",
        "default. Override values are read as YAML (`train.clip=null` is `None`, `1e-3` a float). A wrong type,",
        "a value outside *allowed*, an unknown key (with a \"did you mean\") or a broken rule between keys is a",
        "`ConfigError` naming the dotted key and the file or override it came from. *type*: `int` fields take",
        "integers only (never `true`), `float` fields finite numbers. How the keys are used: docs/training.md,",
        "docs/data.md, docs/populations.md and docs/events.md.",
        "",
        "| key | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    sections: list[tuple[str, type]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key, tp = prefix + f.name, hints[f.name]
            if dataclasses.is_dataclass(tp):
                sections.append((key, tp))
                lines.append(f"| **{key}** | | | | |")
                walk(tp, key + ".")
            else:
                default = _yaml_value(defaults[key])
                allowed = _allowed(key, tp)
                cells = (f"`{key}`", _type_name(tp), f"`{default}`", allowed, _MEANINGS[key])
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")

    walk(Config, "")
    lines += ["", "## Sections", ""]
    for key, cls in sections:
        lines += [f"**{key}** (`{cls.__module__}.{cls.__qualname__}`): {_rst_to_markdown(cls.__doc__ or '')}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m probflux.app.config", description="print the config reference")
    parser.add_argument("--markdown", action="store_true", required=True, help="the table of every key (docs/config.md)")
    parser.parse_args()
    from probflux.app.config import config_reference as reference  # the package's module, not this __main__ copy

    sys.stdout.write(reference())
