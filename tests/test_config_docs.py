"""The docs match the code: docs/config.md is the generated table of every config key, and docs/training.md shows
``probflux.train.fit``'s exact signature, argument table and ``FitResult`` fields."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import time
from pathlib import Path

from probflux.app import config
from probflux.train import FitResult, fit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_config_md_is_the_generated_table():
    committed = (DOCS / "config.md").read_text(encoding="utf-8")
    generated = config.config_reference()
    if committed != generated:
        old, new = committed.splitlines(), generated.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        raise AssertionError(
            f"docs/config.md disagrees with the schema in probflux.app.config (first difference at line {first + 1}:\n"
            f"  committed: {old[first] if first < len(old) else '<end of file>'}\n"
            f"  schema:    {new[first] if first < len(new) else '<end of file>'}).\n"
            f"Regenerate it with `{config.REGENERATE}` and commit it.")


def _table_keys(text: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", text, flags=re.M)


def test_every_schema_key_has_one_row_with_type_default_and_meaning():
    text = config.config_reference()
    keys = _table_keys(text)
    assert keys == config.valid_keys()  # every leaf once, in schema order
    defaults = dict(config._leaves(config.Config()))
    for line in (ln for ln in text.splitlines() if re.match(r"^\| `", ln)):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        key, type_, default, allowed, meaning = cells
        key = key.strip("`")
        assert type_ and meaning, line
        assert default.strip("`") == config._yaml_value(defaults[key]), line
        if config._CONSTRAINTS.get(key):  # a rule the probe of _allowed could not read would leave "any"
            assert allowed and not allowed.startswith("any"), line


def test_allowed_column_reflects_the_rules():
    """Spot checks that the generated *allowed* cells say what the checks enforce."""
    rows = {k: line for k, line in zip(_table_keys(config.config_reference()),
                                       [ln for ln in config.config_reference().splitlines() if ln.startswith("| `")])}
    assert "| >= 1 |" in rows["model.components"]
    assert "in [0, 1)" in rows["train.ema"] and "or null" in rows["train.ema"]
    assert "`adam`, `adamw`" in rows["train.optimizer"]
    assert "`earthquakenpp_japan_25`" in rows["data.name"] and "`file`" in rows["data.name"]
    assert "| >= 0 |" in rows["evaluate.particles"]


def test_a_key_without_a_meaning_is_refused(monkeypatch):
    monkeypatch.delitem(config._MEANINGS, "train.lr")
    try:
        config.config_reference()
    except config.ConfigError as e:
        assert "train.lr" in str(e)
    else:
        raise AssertionError("config_reference accepted a key without a meaning")


def test_config_md_is_linked_from_readme_and_training():
    assert "](docs/config.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](config.md)" in (DOCS / "training.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ fit's signature


def _documented_fit_call() -> ast.Call:
    text = (DOCS / "training.md").read_text(encoding="utf-8")
    block = re.search(r"```python\nfrom probflux\.train import fit\n(result = fit\(.*?\))\n```", text, flags=re.S)
    assert block, "docs/training.md: the ```python block 'from probflux.train import fit / result = fit(...)' is missing"
    # the documented call uses the signature's syntax (a bare '*'); make it a def to read its parameters
    source = block.group(1).replace("result = fit(", "def fit(", 1) + ": pass"
    return ast.parse(source).body[0]


def test_documented_fit_signature_matches_the_code():
    node = _documented_fit_call()
    sig = inspect.signature(fit)
    positional = [a.arg for a in node.args.args]
    keyword = [a.arg for a in node.args.kwonlyargs]
    actual_pos = [n for n, p in sig.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    actual_kw = [n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY]
    assert (positional, keyword) == (actual_pos, actual_kw), "docs/training.md's fit(...) lists other parameters than fit"
    for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults):
        documented = eval(compile(ast.Expression(default), "docs/training.md", "eval"), {"time": time})  # noqa: S307
        assert documented == sig.parameters[arg.arg].default, f"docs/training.md: default of {arg.arg}"


def test_documented_fit_arguments_and_fitresult_fields():
    text = (DOCS / "training.md").read_text(encoding="utf-8")
    section = text[text.index("## The trainer"):text.index("Each step does the following")]
    rows = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert rows == list(inspect.signature(fit).parameters), "docs/training.md: the argument table of fit"
    returned = re.search(r"It returns `FitResult\(([^)]*)\)`", section)
    assert returned and [f.strip() for f in returned.group(1).split(",")] == [f.name for f in dataclasses.fields(FitResult)]
    for name in (f.name for f in dataclasses.fields(FitResult)):
        assert f"`{name}`" in section, f"docs/training.md does not explain FitResult.{name}"
