"""``probflux control CONFIG [key=value ...]``: a control / mean-field problem from YAML, trained and checked.

The schema (docs/control.md, section "The command"; one complete example per built-in problem in
``configs/control_*.yaml``)::

    out: runs/control          # run directory (metrics.json, model.pt, config.yaml, figures)
    seed: 0
    problem:                   # a built-in problem ...
      builtin: vneck           #   gmm | vneck | stunnel | motion_planning | lq
      options: {coef: 3.0}     #   its keyword arguments (problems.py, lq.py)
    # ... or one written out (all keys below; a built-in's keys can be overridden too):
    #   dim, horizon, diffusion, control_weight ("kl" or a number), base_drift ([D] numbers),
    #   initial / target: {type: gaussian, mean, cov} | {type: mixture, means, covs, weights}
    #                     | {type: samples, path: FILE.npy, components: K}  (a diagonal mixture fitted by EM, then pinned)
    #   obstacles: [{type: disc, center, radius} | {type: ellipse, center, axes}
    #               | {type: quadric, coefficients, center, threshold}]   (each with weight, default 1500)
    #   running_cost: {type: quadratic, q}   terminal_cost: {type: quadratic, r}   ((q/2)|x|^2, (r/2)|x|^2)
    #   mean_field: [{type: entropy, coef, offset} | {type: congestion, coef} | {type: interaction, coef}]
    model: {type: bridge_mixture, replicas: 1, hidden: 64, layers: 3, transforms: 2, coupling: ot, loc_scale: null,
            identity_init: false}   # bridge_flow: true starts the flow at F_t = id
    train: {steps: 1000, lr: 0.003, batch_size: 256, samples: 256, max_seconds: null, endpoint_weight: 30.0,
            obstacle_penalty: softplus, obstacle_weight: 300.0, obstacle_width: 0.3, control_start: 0,
            time_schedule: false}     # true (with max_seconds): the LR schedule runs over the CPU budget
    evaluate: {particles: 2000, steps: 500, figures: true, animation: true}

Model types: ``bridge_mixture`` / ``bridge_flow`` pin ``rho_0`` and (with a target) ``rho_1`` exactly
(:mod:`probflux.control.bridge`); ``pinned_mixture`` pins ``rho_0`` only (the target is then a penalty with
``endpoint_weight``). Training is :func:`probflux.control.solve` (:func:`probflux.train.fit`); the evaluation is
:func:`probflux.control.monte_carlo_cost` (the problem's own hard obstacles, fine Euler–Maruyama steps), with
``W2`` to the target against its sampling floor (``W2`` between two independent target draws of the same size).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .config import ConfigError, _parse_override, _yaml_load

BUILTINS = ("gmm", "vneck", "stunnel", "motion_planning", "lq")
MODELS = ("bridge_mixture", "bridge_flow", "pinned_mixture")
LAW_TYPES = ("gaussian", "mixture", "samples")
OBSTACLE_TYPES = ("disc", "ellipse", "quadric")
MEAN_FIELD_TYPES = ("entropy", "congestion", "interaction")


@dataclasses.dataclass
class ModelSection:
    type: str = "bridge_mixture"
    replicas: int = 1
    hidden: int = 64
    layers: int = 3
    transforms: int = 2
    coupling: str = "ot"
    loc_scale: Optional[float] = None
    components: int = 8  # pinned_mixture only
    identity_init: bool = False  # bridge_flow only: F_t = id at the start (FlowBridge)


@dataclasses.dataclass
class TrainSection:
    steps: int = 1000
    lr: float = 0.003
    batch_size: int = 256
    samples: int = 256
    max_seconds: Optional[float] = None
    endpoint_weight: float = 30.0
    obstacle_penalty: str = "softplus"
    obstacle_weight: float = 300.0
    obstacle_width: float = 0.3
    control_start: int = 0
    time_schedule: bool = False  # with max_seconds: the LR schedule runs over the CPU budget (control.solve)


@dataclasses.dataclass
class EvaluateSection:
    particles: int = 2000
    steps: int = 500
    figures: bool = True
    animation: bool = True


PROBLEM_KEYS = ("builtin", "options", "dim", "horizon", "diffusion", "control_weight", "base_drift", "initial", "target",
                "obstacles", "running_cost", "terminal_cost", "mean_field")
SECTIONS = {"model": ModelSection, "train": TrainSection, "evaluate": EvaluateSection}
TOP = ("out", "seed", "problem", *SECTIONS)


def _valid_keys() -> list[str]:
    keys = ["out", "seed", *(f"problem.{k}" for k in PROBLEM_KEYS)]
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _unknown(key: str) -> ConfigError:
    match = difflib.get_close_matches(key, _valid_keys(), n=1, cutoff=0.6)
    hint = f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(_valid_keys())}"
    return ConfigError(f"unknown key {key!r}{hint}", [key])


def _field_type(key: str) -> Any:
    """Type hint of a dotted key of this schema (``Any`` for the free-form problem entries); raises for unknown keys."""
    parts = key.split(".")
    if parts[0] in ("out",) and len(parts) == 1:
        return str
    if parts[0] == "seed" and len(parts) == 1:
        return int
    if parts[0] == "problem" and (len(parts) == 1 or parts[1] in PROBLEM_KEYS):
        return Any
    if parts[0] in SECTIONS and len(parts) == 2:
        hints = {f.name: f.type for f in dataclasses.fields(SECTIONS[parts[0]])}
        if parts[1] in hints:
            return Any
    raise _unknown(key)


def load_control_config(path: Optional[str], overrides: Sequence[str] = ()) -> dict:
    """Read the YAML, apply ``key=value`` overrides (the parser of :mod:`probflux.app.config`), check every key."""
    raw: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path!r}") from None
        loaded = _yaml_load(text)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping (out, seed, problem, model, train, evaluate)")
        raw = loaded or {}
    for item in overrides:
        key, value = _parse_override(item, _field_type)
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"{part}: expected a mapping (from override {item!r})", [part])
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    for k in raw:
        if k not in TOP:
            raise _unknown(str(k))
    cfg = {"out": str(raw.get("out", "runs/control")), "seed": raw.get("seed", 0)}
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError(f"seed: must be an integer; got {cfg['seed']!r}", ["seed"])
    problem = raw.get("problem")
    if not isinstance(problem, dict) or not problem:
        raise ConfigError("problem: required, a mapping (problem.builtin: one of " + ", ".join(BUILTINS) + ", or dim/initial/...)",
                          ["problem"])
    for k in problem:
        if k not in PROBLEM_KEYS:
            raise _unknown(f"problem.{k}")
    cfg["problem"] = problem
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a mapping", [name])
        hints = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for k, v in section.items():
            if k not in hints:
                raise _unknown(f"{name}.{k}")
            default = hints[k].default
            want = type(default) if default is not None else float
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if v is None and default is None:
                pass
            elif want is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigError(f"{name}.{k}: must be an integer; got {v!r}", [f"{name}.{k}"])
            elif want is float and not (isinstance(v, float) and math.isfinite(v)):
                raise ConfigError(f"{name}.{k}: must be a finite number; got {v!r}", [f"{name}.{k}"])
            elif want in (str, bool) and not isinstance(v, want):
                raise ConfigError(f"{name}.{k}: must be a {want.__name__}; got {v!r}", [f"{name}.{k}"])
            values[k] = v
        cfg[name] = cls(**values)
    m, t, e = cfg["model"], cfg["train"], cfg["evaluate"]
    if m.type not in MODELS:
        raise ConfigError(f"model.type: must be one of {', '.join(MODELS)}; got {m.type!r}", ["model.type"])
    for key, v in (("model.replicas", m.replicas), ("model.hidden", m.hidden), ("model.layers", m.layers),
                   ("model.components", m.components), ("train.steps", t.steps), ("train.batch_size", t.batch_size),
                   ("train.samples", t.samples), ("evaluate.particles", e.particles), ("evaluate.steps", e.steps)):
        if v < 1:
            raise ConfigError(f"{key}: must be >= 1; got {v}", [key])
    for key, v in (("model.transforms", m.transforms), ("train.control_start", t.control_start)):
        if v < 0:
            raise ConfigError(f"{key}: must be >= 0; got {v}", [key])
    for key, v in (("train.lr", t.lr), ("train.obstacle_width", t.obstacle_width)):
        if not v > 0:
            raise ConfigError(f"{key}: must be > 0; got {v}", [key])
    if t.max_seconds is not None and not t.max_seconds > 0:
        raise ConfigError(f"train.max_seconds: must be > 0 or null; got {t.max_seconds}", ["train.max_seconds"])
    if t.time_schedule and t.max_seconds is None:
        raise ConfigError("train.time_schedule: needs train.max_seconds (the schedule runs over that CPU time)",
                          ["train.time_schedule", "train.max_seconds"])
    if t.obstacle_penalty not in ("softplus", "sigmoid"):
        raise ConfigError(f"train.obstacle_penalty: must be softplus or sigmoid; got {t.obstacle_penalty!r}", ["train.obstacle_penalty"])
    if m.coupling not in ("ot", "independent"):
        raise ConfigError(f"model.coupling: must be ot or independent; got {m.coupling!r}", ["model.coupling"])
    return cfg


# ----------------------------------------------------------------------------------------------- building the problem
def _numbers(v: Any, key: str, length: Optional[int] = None) -> list[float]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v):
        raise ConfigError(f"{key}: must be a list of numbers; got {v!r}", [key])
    if length is not None and len(v) != length:
        raise ConfigError(f"{key}: needs {length} entries (the problem's dim); got {len(v)}", [key])
    return [float(a) for a in v]


def _spec(v: Any, key: str, types: Sequence[str]) -> dict:
    if not isinstance(v, dict) or v.get("type") not in types:
        raise ConfigError(f"{key}: must be a mapping with type: one of {', '.join(types)}; got {v!r}", [f"{key}.type"])
    return v


def _keys(spec: dict, key: str, allowed: Sequence[str]) -> None:
    for k in spec:
        if k != "type" and k not in allowed:
            raise ConfigError(f"{key}.{k}: unknown key for type {spec['type']}; allowed: {', '.join(allowed)}", [f"{key}.{k}"])


def build_law(v: Any, dim: int, key: str, base: Optional[Path] = None):
    """A :class:`probflux.control.Law` from its YAML spec (errors name ``key``)."""
    import probflux.control as pc

    spec = _spec(v, key, LAW_TYPES)
    try:
        if spec["type"] == "gaussian":
            _keys(spec, key, ("mean", "cov"))
            return pc.Gaussian(_numbers(spec.get("mean"), f"{key}.mean", dim), spec.get("cov", 1.0))
        if spec["type"] == "mixture":
            _keys(spec, key, ("means", "covs", "weights"))
            means = spec.get("means")
            if not isinstance(means, list) or not means:
                raise ConfigError(f"{key}.means: must be a list of K means of {dim} numbers", [f"{key}.means"])
            means = [_numbers(m, f"{key}.means[{i}]", dim) for i, m in enumerate(means)]
            return pc.GaussianMixture(means, spec.get("covs", 1.0), spec.get("weights"))
        _keys(spec, key, ("path", "components"))
        path = spec.get("path")
        if not isinstance(path, str):
            raise ConfigError(f"{key}.path: the .npy file of samples (N, {dim}) is required", [f"{key}.path"])
        p = Path(path) if Path(path).is_absolute() or base is None else base / path
        if not p.is_file():
            raise ConfigError(f"{key}.path: file {str(p)!r} does not exist", [f"{key}.path"])
        x = np.load(p)
        if x.ndim != 2 or x.shape[1] != dim:
            raise ConfigError(f"{key}.path: samples must have shape (N, {dim}); got {x.shape}", [f"{key}.path"])
        comps = spec.get("components", 1)
        if isinstance(comps, bool) or not isinstance(comps, int):
            raise ConfigError(f"{key}.components: must be an integer; got {comps!r}", [f"{key}.components"])
        return pc.fit_gaussian_mixture(x, comps)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{key}: {e}", [key]) from None


def build_obstacle(v: Any, dim: int, key: str):
    import probflux.control as pc

    spec = _spec(v, key, OBSTACLE_TYPES)
    need = {"disc": ("radius",), "ellipse": (), "quadric": ("threshold",)}[spec["type"]] + ("weight",) * ("weight" in spec)
    for k in need:
        if not isinstance(spec.get(k), (int, float)) or isinstance(spec.get(k), bool):
            raise ConfigError(f"{key}.{k}: a number is required; got {spec.get(k)!r}", [f"{key}.{k}"])
    common = {"weight": float(spec.get("weight", 1500.0))}
    try:
        if spec["type"] == "disc":
            _keys(spec, key, ("center", "radius", "weight"))
            return pc.Disc(_numbers(spec.get("center"), f"{key}.center", dim), spec.get("radius"), **common)
        if spec["type"] == "ellipse":
            _keys(spec, key, ("center", "axes", "weight"))
            return pc.Ellipse(_numbers(spec.get("center"), f"{key}.center", dim), _numbers(spec.get("axes"), f"{key}.axes", dim), **common)
        _keys(spec, key, ("coefficients", "center", "threshold", "weight"))
        return pc.Obstacle(_numbers(spec.get("coefficients"), f"{key}.coefficients", dim),
                           _numbers(spec.get("center"), f"{key}.center", dim), float(spec["threshold"]), **common)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{key}: {e}", [key]) from None


def _quadratic(v: Any, key: str, coef: str):
    spec = _spec(v, key, ("quadratic",))
    _keys(spec, key, (coef,))
    c = spec.get(coef)
    if not isinstance(c, (int, float)) or isinstance(c, bool) or not c >= 0:
        raise ConfigError(f"{key}.{coef}: must be a number >= 0; got {c!r}", [f"{key}.{coef}"])
    return float(c)


def build_problem(spec: Mapping[str, Any], base: Optional[Path] = None) -> tuple[Any, dict]:
    """The :class:`probflux.control.ControlProblem` and facts for the evaluation (``lq``: the Riccati optimum)."""
    import probflux.control as pc
    from probflux.control import problems as cp

    info: dict = {}
    if "builtin" in spec:
        name, options = spec["builtin"], spec.get("options") or {}
        if name not in BUILTINS:
            raise ConfigError(f"problem.builtin: must be one of {', '.join(BUILTINS)}; got {name!r}", ["problem.builtin"])
        if not isinstance(options, dict):
            raise ConfigError("problem.options: expected a mapping of the problem's keyword arguments", ["problem.options"])
        extra = [k for k in spec if k not in ("builtin", "options")]
        if extra:
            raise ConfigError(f"problem.{extra[0]}: a built-in problem takes only problem.options", [f"problem.{extra[0]}"])
        fn = pc.lq_problem if name == "lq" else getattr(cp, name)
        try:
            problem = fn(**options)
        except TypeError as e:
            raise ConfigError(f"problem.options: {e}", ["problem.options"]) from None
        except ValueError as e:
            raise ConfigError(f"problem.options: {e}", ["problem.options"]) from None
        info["builtin"] = name
        if name == "lq":
            info["riccati_optimum"] = pc.lq_optimal_cost(**{k: v for k, v in options.items()})
        else:
            info["length_scale"] = cp.LENGTH_SCALE[name]
        return problem, info
    dim = spec.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"problem.dim: must be a positive integer; got {dim!r}", ["problem.dim"])
    if "initial" not in spec:
        raise ConfigError("problem.initial: required (the law of X_0)", ["problem.initial"])
    initial = build_law(spec["initial"], dim, "problem.initial", base)
    target = None if spec.get("target") is None else build_law(spec["target"], dim, "problem.target", base)
    obstacles = spec.get("obstacles") or []
    if not isinstance(obstacles, list):
        raise ConfigError("problem.obstacles: must be a list", ["problem.obstacles"])
    obst = [build_obstacle(o, dim, f"problem.obstacles[{i}]") for i, o in enumerate(obstacles)]
    mf_specs = spec.get("mean_field") or []
    if not isinstance(mf_specs, list):
        raise ConfigError("problem.mean_field: must be a list", ["problem.mean_field"])
    mean_field = []
    for i, m in enumerate(mf_specs):
        key = f"problem.mean_field[{i}]"
        m = _spec(m, key, MEAN_FIELD_TYPES)
        _keys(m, key, ("coef", "offset") if m["type"] == "entropy" else ("coef",))
        coef = m.get("coef")
        if not isinstance(coef, (int, float)) or isinstance(coef, bool):
            raise ConfigError(f"{key}.coef: a number is required", [f"{key}.coef"])
        if m["type"] == "entropy":
            mean_field.append(pc.Entropy(float(coef), offset=float(m.get("offset", 0.0))))
        elif m["type"] == "congestion":
            mean_field.append(pc.Congestion(float(coef)))
        else:
            mean_field.append(pc.InteractionKernel(float(coef)))
    running = terminal = None
    if spec.get("running_cost") is not None:
        q = _quadratic(spec["running_cost"], "problem.running_cost", "q")
        running = lambda s, x: 0.5 * q * x.pow(2).sum(-1)  # noqa: E731
    if spec.get("terminal_cost") is not None:
        r = _quadratic(spec["terminal_cost"], "problem.terminal_cost", "r")
        terminal = lambda x: 0.5 * r * x.pow(2).sum(-1)  # noqa: E731
    drift = spec.get("base_drift")
    kwargs = dict(diffusion=spec.get("diffusion", 1.0), horizon=spec.get("horizon", 1.0),
                  control_weight=spec.get("control_weight", "kl"))
    for key in ("diffusion", "horizon"):
        if not isinstance(kwargs[key], (int, float)) or isinstance(kwargs[key], bool):
            raise ConfigError(f"problem.{key}: must be a number; got {kwargs[key]!r}", [f"problem.{key}"])
    try:
        problem = pc.ControlProblem(dim, base_drift=None if drift is None else _numbers(drift, "problem.base_drift", dim),
                                    running_cost=running, terminal_cost=terminal, initial=initial, target=target,
                                    mean_field=mean_field, obstacles=obst, **kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        msg = str(e)
        key = next((k for k in ("diffusion", "horizon", "control_weight") if k in msg), None)
        raise ConfigError(f"problem{'.' + key if key else ''}: {msg}", [f"problem.{key}" if key else "problem"]) from None
    return problem, info


def build_density(problem: Any, model: ModelSection, loc_scale: float, seed: int = 0):
    import torch

    import probflux.control as pc
    from probflux.control.solve import farthest_points

    torch.manual_seed(seed)
    try:
        if model.type == "pinned_mixture":
            return pc.default_density(problem, components=model.components, hidden=model.hidden, layers=model.layers,
                                      loc_scale=loc_scale, flux="mixture", fixed_weights=True, seed=seed)
        target = problem.target if problem.target is not None and hasattr(problem.target, "components") else None
        if problem.target is not None and target is None:
            raise ConfigError("problem.target: a bridge pins Gaussian or mixture laws; use type: samples (fitted) or "
                              "model.type: pinned_mixture", ["problem.target"])
        if model.type == "bridge_mixture":
            dens = pc.BridgeMixture(problem.initial, target, replicas=model.replicas, coupling=model.coupling,
                                    loc_scale=loc_scale, hidden=model.hidden, layers=model.layers, max_frequency=8.0)
            if target is None and dens.components > 1:
                pts = problem.initial.sample(2000, torch.Generator().manual_seed(seed))
                dens.init_detours(farthest_points(pts, dens.components))
            return dens
        return pc.FlowBridge(problem.initial, target, model.transforms, replicas=model.replicas, coupling=model.coupling,
                             loc_scale=loc_scale, hidden=model.hidden, layers=model.layers, identity_init=model.identity_init)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model: {e}", ["model.type"]) from None


# ----------------------------------------------------------------------------------------------- run
def run_control(cfg: dict, base: Optional[Path] = None, progress: bool = False) -> dict:
    """Build, train (:func:`probflux.control.solve`), evaluate by Monte Carlo, write ``metrics.json`` and figures."""
    import torch

    import probflux.control as pc
    from probflux.control import problems as cp
    from probflux.io import write_json
    from probflux.metrics import wasserstein

    problem, info = build_problem(cfg["problem"], base)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    m, t, e, seed = cfg["model"], cfg["train"], cfg["evaluate"], cfg["seed"]
    L = m.loc_scale or info.get("length_scale") or 1.0
    density = build_density(problem, m, L, seed)
    obstacles = cp.smooth_obstacles(problem, t.obstacle_weight, t.obstacle_width, t.obstacle_penalty)
    objective = pc.ControlObjective(problem, samples=t.samples, train_obstacles=obstacles, endpoint_weight=t.endpoint_weight,
                                    control_start=t.control_start)
    start = time.process_time()
    fit = pc.solve(problem, density, objective=objective, steps=t.steps, lr=t.lr, batch_size=t.batch_size, dtype="float64",
                   warmup=min(50, t.steps // 10), seed=seed, max_seconds=t.max_seconds, clock=time.process_time,
                   time_schedule=bool(t.time_schedule), progress=progress)
    cpu = time.process_time() - start
    torch.save(fit.model.state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(_dump(cfg))
    max_drift = 20 * L / problem.horizon
    target = None if problem.target is None or not problem.target.can_sample else \
        problem.target.sample(e.particles, torch.Generator().manual_seed(seed + 99))
    mc = pc.monte_carlo_cost(problem, pc.model_drift(problem, fit.model), n=e.particles, steps=e.steps, seed=seed + 1000,
                             target_samples=target, keep=400 if e.figures else 0, max_drift=max_drift)
    sf = pc.simulation_free_cost(problem, fit.model, n=4096, seed=seed)
    metrics: dict = {
        "problem": info.get("builtin", "custom"), "model": m.type, "pins": list(pc.pins(fit.model.density)),
        "train_steps": fit.step, "train_cpu_seconds": cpu,
        "mc_cost": mc["cost"], "mc_cost_se": mc["cost_se"], "terms": {k: {"mean": a, "se": b} for k, (a, b) in mc["terms"].items()},
        "simulation_free_cost": sf["cost"], "obstacle_violation_rate": mc["violation"], "clipped_drift_fraction": mc["clipped"],
        "evaluate": {"particles": e.particles, "em_steps": e.steps},
    }
    if target is not None:
        floor = wasserstein(problem.target.sample(e.particles, torch.Generator().manual_seed(seed + 7)), target, 2, method="exact")
        metrics.update(w2_target=mc["w2"], w2_target_floor=floor)
    if "riccati_optimum" in info:
        metrics.update(riccati_optimum=info["riccati_optimum"], gap_to_riccati=mc["cost"] / info["riccati_optimum"] - 1)
    files = []
    if e.figures:
        files += _figures(problem, fit.model, mc["path"], out, e.animation)
    metrics["figures"] = [str(f) for f in files]
    write_json(out / "metrics.json", metrics)
    return metrics


def _dump(cfg: dict) -> str:
    import yaml

    d = {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in cfg.items()}
    return yaml.safe_dump(d, sort_keys=False)


def _figures(problem: Any, dynamics: Any, path: Any, out: Path, animation: bool) -> list[Path]:
    """``paths.png`` (simulated particles at 11 times over the obstacles, 2-D or the first two coordinates),
    ``density.png`` (:func:`probflux.plot.density_snapshots`, 2-D) and ``animation.gif`` (:func:`probflux.plot.animate`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from probflux import plot

    files = []
    p = path.numpy()[..., :2]
    lo, hi = p.reshape(-1, 2).min(0), p.reshape(-1, 2).max(0)
    pad = 0.1 * (hi - lo) + 1e-3
    lo, hi = lo - pad, hi + pad
    fig, ax = plt.subplots(figsize=(5, 4))
    if problem.dim == 2 and problem.obstacles:
        xs, ys = np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300)
        X, Y = np.meshgrid(xs, ys)
        inside = problem.inside_obstacle(torch.tensor(np.stack([X.ravel(), Y.ravel()], -1))).numpy().reshape(X.shape)
        ax.contourf(X, Y, inside, levels=[0.5, 1.5], colors=["0.35"])
    cmap = plt.get_cmap("viridis")
    for k in range(p.shape[0]):
        ax.scatter(p[k, :, 0], p[k, :, 1], s=2, color=cmap(k / max(p.shape[0] - 1, 1)))
    ax.set_title("simulated particles, s = 0 .. T (colour)", fontsize=9)
    ax.set_aspect("equal")
    fig.tight_layout()
    files.append(out / "paths.png")
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)
    if problem.dim == 2:
        bounds = [[float(lo[0]), float(hi[0])], [float(lo[1]), float(hi[1])]]
        plot.density_snapshots(dynamics, (0.0, 0.25, 0.5, 0.75, 1.0), path=out / "density.png", bounds=bounds, grid=100)
        files.append(out / "density.png")
        if animation:
            files.append(plot.animate(dynamics, out / "animation.gif", frames=21, n_particles=300, bounds=bounds))
    return files


def cmd_control(args: Any) -> int:
    """The ``probflux control`` subcommand (registered in :mod:`probflux.app.cli`)."""
    cfg = load_control_config(args.config, list(args.overrides))
    metrics = run_control(cfg, base=Path(args.config).resolve().parent)
    print(json.dumps({k: v for k, v in metrics.items() if k != "terms"}, indent=2))
    print(f"run directory: {cfg['out']}")
    return 0
