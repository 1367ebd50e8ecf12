"""RESULTS.md tables generated from the JSON records in ``benchmarks/results/``.

Every benchmark writes records ``{"benchmark", "dataset", "method", "metric", "value", "std", "seeds",
"cpu_seconds", "command"}`` and defines ``render_tables(records) -> str`` (markdown built with :func:`pivot`).
Its section of ``benchmarks/RESULTS.md`` lies between two markers,
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``, and is replaced by :func:`replace_section`; the
text outside the markers is written by hand. Regenerate every section without rerunning anything::

    .venv/bin/python benchmarks/tables.py            # all sections named in SECTIONS
    .venv/bin/python benchmarks/tables.py events     # one section

A section that is missing from RESULTS.md is appended at the end.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"

SECTIONS: dict[str, tuple[str, ...]] = {
    # section name: (bench module in benchmarks/, records file in benchmarks/results/[, its render function if not
    # render_tables])
    "core": ("bench_core", "core.json"),
    "flux_tails": ("bench_flux_tails", "flux_tails_p0.1.json"),
    "flux_tails_stress": ("bench_flux_tails", "flux_tails.json"),
    "scale_scaling": ("bench_scale", "scale.json", "render_scaling"),
    "scale_gmm64": ("bench_scale", "scale.json", "render_gmm64"),
    "scale_lq": ("bench_scale", "scale.json", "render_lq"),
    "scale_cite50": ("bench_scale", "scale.json", "render_cite50"),
    "populations": ("bench_populations", "populations.json"),
    "events": ("bench_events", "events.json"),
    "events_cnf_long": ("bench_events", "events_cnf_long.json", "render_cnf_long"),
    "control": ("bench_control", "control.json"),
}
"""The generated sections. A benchmark joins by adding one line here and a ``render_tables`` function."""


def load_records(name: str) -> list[dict[str, Any]]:
    """The records of ``benchmarks/results/<name>`` (a JSON list)."""
    path = HERE / "results" / name
    with open(path) as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def fmt_value(record: dict[str, Any], digits: int = 3) -> str:
    """``value ± std`` (std omitted when absent, zero seeds or NaN)."""
    v = record.get("value")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    s = record.get("std")
    text = f"{v:.{digits}f}"
    if s is not None and not (isinstance(s, float) and math.isnan(s)) and (record.get("seeds") or 0) > 1:
        text += f" ± {s:.{digits}f}"
    return text


def pivot(records: Iterable[dict[str, Any]], *, rows: Sequence[str] = ("dataset", "method"), column: str = "metric",
          columns: Optional[Sequence[str]] = None, cell: Callable[[dict[str, Any]], str] = fmt_value,
          where: Optional[Callable[[dict[str, Any]], bool]] = None, headers: Optional[dict[str, str]] = None,
          bold: Optional[Callable[[str, list[dict[str, Any]]], Optional[int]]] = None) -> str:
    """A markdown table: one row per distinct ``rows`` key tuple, one column per value of ``column``.

    records: the JSON records; where: a filter; columns: the column values in order (default: first-seen order);
    cell: how one record is written; headers: display names for row keys and column values;
    bold: optional ``(column_value, records_of_that_column) -> index`` of the record to print in bold.
    Rows keep the order in which their key first appears in ``records``.
    """
    recs = [r for r in records if where is None or where(r)]
    headers = headers or {}
    cols = list(columns) if columns is not None else list(dict.fromkeys(r[column] for r in recs))
    keys = list(dict.fromkeys(tuple(r[k] for k in rows) for r in recs))
    table: dict[tuple, dict[str, dict[str, Any]]] = {k: {} for k in keys}
    for r in recs:
        if r[column] in cols:
            table[tuple(r[k] for k in rows)][r[column]] = r
    best: dict[str, int] = {}
    if bold is not None:
        for c in cols:
            col_recs = [table[k][c] for k in keys if c in table[k]]
            i = bold(c, col_recs) if col_recs else None
            if i is not None:
                best[c] = id(col_recs[i])
    lines = ["| " + " | ".join([headers.get(k, k) for k in rows] + [headers.get(c, c) for c in cols]) + " |",
             "|" + "---|" * (len(rows) + len(cols))]
    for k in keys:
        cells = []
        for c in cols:
            r = table[k].get(c)
            text = "" if r is None else cell(r)
            cells.append(f"**{text}**" if r is not None and best.get(c) == id(r) else text)
        lines.append("| " + " | ".join([str(v) for v in k] + cells) + " |")
    return "\n".join(lines)


def commands(records: Iterable[dict[str, Any]]) -> str:
    """The distinct ``command`` fields, as an indented block (how to reproduce the table)."""
    cmds = list(dict.fromkeys(r.get("command", "") for r in records if r.get("command")))
    return "\n".join("    " + c for c in cmds)


def replace_section(path: Path | str, name: str, markdown: str) -> None:
    """Replace the text between ``<!-- generated:name -->`` and ``<!-- /generated:name -->`` in ``path``."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    begin, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text:
        if end not in text.split(begin, 1)[1]:
            raise ValueError(f"{path}: marker {begin!r} has no closing {end!r}")
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    from probflux.io import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


def render(name: str, path: Path | str = RESULTS_MD) -> None:
    """Regenerate section ``name`` of RESULTS.md from its records."""
    if name not in SECTIONS:
        raise SystemExit(f"tables.py: unknown section {name!r}; known: {', '.join(SECTIONS)}")
    replace_section(path, name, renderer(name)(load_records(SECTIONS[name][1])))


def renderer(name: str) -> Callable[[list[dict[str, Any]]], str]:
    """The function that renders section ``name`` from its records."""
    module_name, _, *function = SECTIONS[name]
    function_name = function[0] if function else "render_tables"
    sys.path.insert(0, str(HERE))
    module = importlib.import_module(module_name)
    if not hasattr(module, function_name):
        raise SystemExit(f"tables.py: benchmarks/{module_name}.py defines no {function_name}(records)")
    return getattr(module, function_name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sections", nargs="*", help=f"sections to regenerate (default: all of {', '.join(SECTIONS)})")
    args = p.parse_args(argv)
    for name in args.sections or SECTIONS:
        render(name)
        print(f"regenerated section {name!r} of {RESULTS_MD.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
