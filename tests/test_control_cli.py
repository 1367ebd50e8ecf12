"""``probflux control CONFIG [key=value ...]``: end to end on a tiny problem, every shipped config builds, bad specs are named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from probflux.app import cli
from probflux.app.config import ConfigError
from probflux.app.control import build_density, build_problem, load_control_config

ROOT = Path(__file__).resolve().parents[1]

TINY = """
out: {out}
seed: 0
problem:
  dim: 2
  horizon: 1.0
  diffusion: 0.5
  base_drift: [1.0, 0.0]
  initial: {{type: gaussian, mean: [-2.0, 0.0], cov: 0.2}}
  target: {{type: samples, path: target.npy, components: 2}}
  obstacles:
    - {{type: disc, center: [0.0, 0.0], radius: 0.5}}
    - {{type: ellipse, center: [0.0, 3.0], axes: [1.0, 0.5]}}
    - {{type: quadric, coefficients: [1.0, -1.0], center: [0.0, -3.0], threshold: -4.0}}
  mean_field:
    - {{type: entropy, coef: 0.1, offset: 1.0}}
  running_cost: {{type: quadratic, q: 0.1}}
model: {{type: bridge_mixture, hidden: 16, layers: 2}}
train: {{steps: 5, samples: 32, batch_size: 32}}
evaluate: {{particles: 100, steps: 40, figures: true, animation: false}}
"""


def _tiny(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "target.npy", np.concatenate([rng.normal([2, 1], 0.3, (200, 2)), rng.normal([2, -1], 0.3, (200, 2))]))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.format(out=tmp_path / "run"))
    return cfg


def test_control_command_end_to_end(tmp_path, capsys):
    cfg = _tiny(tmp_path)
    assert cli.main(["control", str(cfg), "train.steps=3", "model.replicas=2"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and metrics["pins"] == [True, True] and metrics["model"] == "bridge_mixture"
    for key in ("mc_cost", "mc_cost_se", "simulation_free_cost", "obstacle_violation_rate", "w2_target", "w2_target_floor"):
        assert np.isfinite(metrics[key]), key
    assert set(metrics["terms"]) >= {"control", "state", "entropy"}
    for name in ("paths.png", "density.png", "model.pt", "config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    assert "run directory" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["gmm", "vneck", "stunnel", "motion_planning", "lq"])
def test_every_shipped_config_builds(name):
    cfg = load_control_config(str(ROOT / "configs" / f"control_{name}.yaml"))
    problem, info = build_problem(cfg["problem"])
    density = build_density(problem, cfg["model"], info.get("length_scale", 1.0))
    assert density.dim == problem.dim and density.pins_initial
    assert density.pins_target == (problem.target is not None)
    if name == "lq":
        assert info["riccati_optimum"] > 0


@pytest.mark.parametrize("overrides, match", [
    (["problem.intial={type: gaussian}"], r"unknown key 'problem.intial'; did you mean 'problem.initial'"),
    (["trian.steps=3"], r"unknown key 'trian.steps'; did you mean 'train.steps'"),
    (["train.steps=many"], r"train.steps: must be an integer"),
    (["train.lr=0"], r"train.lr: must be > 0"),
    (["train.time_schedule=true"], r"train.time_schedule: needs train.max_seconds"),
    (["model.type=spline"], r"model.type: must be one of bridge_mixture, bridge_flow, pinned_mixture"),
    (["problem.initial={type: gaussian, mean: [0.0]}"], r"problem.initial.mean: needs 2 entries"),
    (["problem.initial={type: normal, mean: [0.0, 0.0]}"], r"problem.initial: must be a mapping with type: one of gaussian"),
    (["problem.initial={type: gaussian, mean: [0.0, 0.0], cov: -1.0}"], r"problem.initial: Gaussian: covariance must be positive"),
    (["problem.target={type: samples, path: missing.npy}"], r"problem.target.path: file .*missing.npy.* does not exist"),
    (["problem.obstacles=[{type: disc, center: [0.0, 0.0]}]"], r"problem.obstacles\[0\].radius: a number is required"),
    (["problem.obstacles=[{type: disc, center: [0.0, 0.0], radius: -1.0}]"], r"problem.obstacles\[0\]: Disc: radius must be > 0"),
    (["problem.obstacles=[{type: disc, center: [0.0, 0.0], radius: 1.0, color: red}]"], r"problem.obstacles\[0\].color: unknown key"),
    (["problem.mean_field=[{type: entropy}]"], r"problem.mean_field\[0\].coef: a number is required"),
    (["problem.diffusion=-1.0"], r"problem.diffusion"),
])
def test_bad_specs_name_the_key(tmp_path, overrides, match):
    cfg = _tiny(tmp_path)
    with pytest.raises(ConfigError, match=match):
        build_problem(load_control_config(str(cfg), overrides)["problem"], tmp_path)


def test_bad_builtin_and_exit_code(tmp_path, capsys):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("problem: {builtin: vneck, options: {coefficient: 3}}\n")
    with pytest.raises(ConfigError, match=r"problem.options: .*coefficient"):
        build_problem(load_control_config(str(cfg))["problem"])
    cfg.write_text("problem: {builtin: tunnel}\n")
    with pytest.raises(ConfigError, match=r"problem.builtin: must be one of gmm, vneck, stunnel, motion_planning, lq"):
        build_problem(load_control_config(str(cfg))["problem"])
    assert cli.main(["control", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "problem.builtin" in err
