"""Experiment configs: schema defaults, YAML files, overrides, round trips and every error message."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from probflux.app.config import (
    Config,
    ConfigError,
    DataConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    valid_keys,
    validate_config,
)


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ------------------------------------------------------------------------------------- happy path


def test_defaults_match_the_schema() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.model.type == "factorized" and cfg.model.components == 8 and cfg.model.diffusion == 0.0
    assert cfg.data.name == "pinwheel" and cfg.data.path is None and cfg.data.t0 is None
    assert cfg.objective.nll == 1.0 and cfg.objective.kinetic_samples == 256
    assert cfg.train.lr == 2e-3 and cfg.train.clip == 1.0 and cfg.train.ema == 0.999 and cfg.train.patience is None
    assert set(valid_keys()) >= {"seed", "out", "model.components", "data.val_fraction", "train.eval_points"}
    assert "model" not in valid_keys() and "model" in valid_keys(sections=True)


def test_file_and_overrides_are_applied_and_typed(tmp_path: Path) -> None:
    path = write(tmp_path, """
seed: 1
model:
  type: autoregressive
  flux: sigmoid
  components: 4
data:
  name: branching
train:
  lr: 1e-2          # YAML 1.1 would read this as a string
  steps: 10
objective:          # empty section: defaults
""")
    cfg = load_config(path, ["model.components=32", "train.lr=1e-3", "train.clip=null", "seed=3", "train.weight_decay=1", "out=2024"])
    assert cfg.seed == 3
    assert cfg.model.type == "autoregressive" and cfg.model.flux == "sigmoid" and cfg.model.components == 32
    assert cfg.data.name == "branching" and cfg.train.steps == 10
    assert cfg.train.lr == 0.001 and type(cfg.train.lr) is float
    assert cfg.train.clip is None
    assert cfg.train.weight_decay == 1.0 and type(cfg.train.weight_decay) is float  # int accepted for float
    assert cfg.out == "2024"  # a str field keeps the override text
    assert cfg.objective == Config().objective
    # the last override of a key wins; whole sections may be overridden as mappings
    assert load_config(None, ["seed=1", "seed=2"]).seed == 2
    assert load_config(None, ["model={components: 5, hidden: 7}"]).model.hidden == 7
    assert load_config(None, ["train.patience=5", "data.t0=0", "data.t1=30"]).data.t1 == 30.0
    assert load_config(None, ["train.device=cuda:1"]).train.device == "cuda:1"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n")) == Config()


def test_round_trip_dict_and_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.family=gaussian", "model.flux=mixture", "train.clip=null", "train.lr=1e-5",
                             "data.t0=-2", "train.patience=3"])
    d = config_to_dict(cfg)
    assert isinstance(d["model"], dict) and d["train"]["clip"] is None
    assert config_from_dict(d) == cfg
    out = tmp_path / "run" / "sub" / "config.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert yaml.safe_load(out.read_text())["model"]["family"] == "gaussian"
    assert not [p for p in os.listdir(out.parent) if p != "config.yaml"], "temporary file left behind"
    save_config(Config(), out)  # atomic overwrite
    assert load_config(out) == Config()
    assert validate_config(cfg) == cfg


# ----------------------------------------------------------------------------------------- errors


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"config file not found: '{missing}'")):
        load_config(missing)
    assert issubclass(ConfigError, ValueError)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nmodel:\n  type: factorized\n   bad: [\n", name="broken.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML at line 4"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"list\.yaml: top level must be a mapping.*got list"):
        load_config(write(tmp_path, "- a\n- b\n", name="list.yaml"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config_from_dict([1, 2])  # type: ignore[arg-type]


def test_unknown_nested_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  componets: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model\.componets'; did you mean 'model\.components'\? \(in .*exp\.yaml\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'\?"):
        config_from_dict({"trian": {}})
    with pytest.raises(ConfigError, match=r"unknown key 'components'; did you mean 'model\.components'\?"):
        load_config(None, ["components=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.stepz'; did you mean 'train\.steps'\? \(from override 'train\.stepz=3'\)"):
        load_config(None, ["train.stepz=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'model\.components\.x'"):
        load_config(None, ["model.components.x=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'zzzzz'; valid keys: seed, out, model\.type"):
        load_config(None, ["zzzzz=1"])


def test_malformed_overrides() -> None:
    with pytest.raises(ConfigError, match=r"override 'train\.lr' must have the form key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match=r"override '=3' has an empty key"):
        load_config(None, ["=3"])
    with pytest.raises(ConfigError, match=r"override 'model\.type=\[': invalid YAML value"):
        load_config(None, ["model.type=["])
    with pytest.raises(ConfigError, match="single string"):
        load_config(None, "seed=3")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps=abc", "train.steps: expected int, got 'abc'"),
        ("train.steps=true", "train.steps: expected int, got True"),  # bool is not an int
        ("train.steps=1.5", "train.steps: expected int, got 1.5"),
        ("train.steps=null", "train.steps: expected int, got null"),  # None only for Optional
        ("train.lr=fast", "train.lr: expected float, got 'fast'"),
        ("train.lr=.inf", "train.lr: expected a finite float, got inf"),
        ("train.clip=yes", "train.clip: expected float or null, got True"),
        ("train.patience=2.0", "train.patience: expected int or null, got 2.0"),
        ("model.divergence_free=1", "model.divergence_free: expected bool, got 1"),
        ("model=3", "model: expected a mapping, got 3"),
    ],
)
def test_wrong_types_name_the_key_and_the_override(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message) + re.escape(f" (from override '{override}')")):
        load_config(None, [override])


def test_wrong_type_in_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  steps: abc\n")
    with pytest.raises(ConfigError, match=r"train\.steps: expected int, got 'abc' \(in .*exp\.yaml\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train: expected a mapping, got \[1, 2\]"):
        config_from_dict({"train": [1, 2]})
    with pytest.raises(ConfigError, match=r"data\.path: expected str or null, got \['a', 'b'\]"):
        config_from_dict({"data": {"name": "file", "path": ["a", "b"]}})
    with pytest.raises(ConfigError, match=r"keys must be strings, got 1"):
        config_from_dict({"model": {1: 2}})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.type=mlp"], "model.type: must be one of 'factorized', 'autoregressive', 'flow', 'anchored', got 'mlp'"),
        (["model.type=flow", "model.coupling=cubic"], "model.coupling: must be one of 'spline', 'affine'"),
        (["model.family=cauchy"], "model.family: must be one of 'logistic', 'gaussian'"),
        (["model.flux=sigmoid"], "model.flux: 'sigmoid' is not available for model.type='factorized' (choose 'kr' or 'mixture')"),
        (["model.type=autoregressive", "model.flux=mixture"], "model.flux: 'mixture' is not available for model.type='autoregressive'"),
        (["model.type=autoregressive", "model.family=gaussian"], "model.family: 'gaussian' is only available for model.type='factorized'"),
        (["model.components=0"], "model.components: must be >= 1, got 0"),
        (["model.hidden=0"], "model.hidden: must be >= 1"),
        (["model.layers=-1"], "model.layers: must be >= 1"),
        (["model.diffusion=-0.1"], "model.diffusion: must be >= 0, got -0.1"),
        (["data.name=mnist"], "data.name: must be one of 'pinwheel', 'branching', 'file', got 'mnist'"),
        (["data.name=file"], "data.path: required when data.name is 'file'"),
        (["data.path=x.npz"], "data.path: is set but data.name is 'pinwheel'"),
        (["data.n=0"], "data.n: must be >= 1"),
        (["data.t0=5", "data.t1=5"], "data.t0: must be < data.t1"),
        (["data.val_fraction=1"], "data.val_fraction: must lie in [0, 1), got 1.0"),
        (["data.test_fraction=-0.1"], "data.test_fraction: must lie in [0, 1)"),
        (["data.val_fraction=0.5", "data.test_fraction=0.5"], "data.val_fraction + data.test_fraction must be < 1"),
        (["objective.nll=-1"], "objective.nll: must be >= 0"),
        (["objective.nll=0"], "objective.nll and objective.kinetic are both 0"),
        (["objective.kinetic_samples=0"], "objective.kinetic_samples: must be >= 1"),
        (["train.optimizer=sgd"], "train.optimizer: must be one of 'adam', 'adamw', got 'sgd'"),
        (["train.lr=0"], "train.lr: must be > 0, got 0.0"),
        (["train.clip=0"], "train.clip: must be > 0"),
        (["train.ema=1"], "train.ema: must lie in [0, 1)"),
        (["train.min_lr_ratio=2"], "train.min_lr_ratio: must lie in [0, 1]"),
        (["train.dtype=float16"], "train.dtype: must be one of 'float32', 'float64'"),
        (["train.device=gpu"], "train.device: must be 'auto', 'cpu', 'cuda', 'mps' or 'cuda:N', got 'gpu'"),
        (["train.patience=0"], "train.patience: must be >= 1"),
        (["train.batch_size=0"], "train.batch_size: must be >= 1"),
        (["seed=-1"], "seed: must be >= 0"),
        (["out="], "out: expected str, got null"),
    ],
)
def test_constraint_violations(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_constraints_in_file_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  name: file\n")
    with pytest.raises(ConfigError, match=r"data\.path: required when data\.name is 'file'.*\(in .*exp\.yaml\)"):
        load_config(path)
    assert load_config(path, ["data.path=points.csv"]).data.path == "points.csv"
    with pytest.raises(ConfigError, match=r"data\.partial_windows: needs data\.window .*from override 'data\.partial_windows=true'"):
        load_config(path, ["data.path=e.csv", "data.partial_windows=true"])
    assert load_config(path, ["data.path=e.csv", "data.window=3", "data.partial_windows=true"]).data.partial_windows is True


def test_validate_config_checks_a_constructed_config() -> None:
    cfg = Config(data=DataConfig(val_fraction=2))
    with pytest.raises(ConfigError, match=r"data\.val_fraction: must lie in \[0, 1\)"):
        validate_config(cfg)
