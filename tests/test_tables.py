"""benchmarks/tables.py: RESULTS.md sections generated from records, text outside the markers kept."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tables  # noqa: E402

RECORDS = [
    {"dataset": "a", "method": "ours", "metric": "w1", "value": 1.0, "std": 0.1, "seeds": 3},
    {"dataset": "a", "method": "peer", "metric": "w1", "value": 0.5, "std": 0.2, "seeds": 3},
    {"dataset": "a", "method": "peer", "metric": "w2", "value": 0.7, "std": 0.0, "seeds": 1},
]


def test_pivot_rows_columns_and_bold():
    md = tables.pivot(RECORDS, bold=lambda c, rs: min(range(len(rs)), key=lambda i: rs[i]["value"]))
    assert md.splitlines() == [
        "| dataset | method | w1 | w2 |",
        "|---|---|---|---|",
        "| a | ours | 1.000 ± 0.100 |  |",
        "| a | peer | **0.500 ± 0.200** | **0.700** |",
    ]


def test_replace_section_keeps_the_hand_written_text(tmp_path):
    p = tmp_path / "R.md"
    p.write_text("# title\n\nby hand\n")
    tables.replace_section(p, "x", "first")
    tables.replace_section(p, "x", "second")
    assert p.read_text() == "# title\n\nby hand\n\n<!-- generated:x -->\nsecond\n<!-- /generated:x -->\n"
    p.write_text("<!-- generated:x -->\nopen only\n")
    with pytest.raises(ValueError, match="no closing"):
        tables.replace_section(p, "x", "text")


@pytest.mark.parametrize("name", sorted(tables.SECTIONS))
def test_results_md_sections_are_the_tables_of_their_records(name):
    """Every generated section of benchmarks/RESULTS.md is exactly what its records render to: a number edited by
    hand, or records changed without regenerating (`python benchmarks/tables.py NAME`), fails here."""
    text = tables.RESULTS_MD.read_text()
    begin, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    assert begin in text and end in text, f"RESULTS.md has no {begin} section"
    written = text.split(begin, 1)[1].split(end, 1)[0].strip()
    rendered = tables.renderer(name)(tables.load_records(tables.SECTIONS[name][1]))
    assert written == rendered.strip(), \
        f"RESULTS.md section {name!r} is stale: run .venv/bin/python benchmarks/tables.py {name}"
