"""The package's shape: no import cycle, dependencies point one way, ``import probflux`` loads the core only.

Imports are read from the source (``ast``), lazy ones inside functions included, so a cycle hidden behind
a function-level import fails here too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "probflux"

# layer of each module (by dotted prefix, longest match wins); a module may import its own layer or lower ones
LAYERS = {
    "probflux._validation": 0, "probflux._version": 0, "probflux._random": 0, "probflux.options": 0, "probflux.nn": 0,
    "probflux.io": 0, "probflux.checkpoint": 0, "probflux.normalize": 0, "probflux.metrics": 0,
    "probflux.transport": 0,
    "probflux.densities": 1, "probflux.divfree": 1,
    "probflux.dynamics": 2, "probflux.simulate": 2, "probflux.checks": 2, "probflux": 2,  # the package root re-exports the core
    "probflux.data": 3, "probflux.objectives": 3, "probflux.evaluation": 4, "probflux.train": 5,
    "probflux.stpp": 6, "probflux.control": 6, "probflux.plot": 6, "probflux.app": 7, "probflux.__main__": 7,
}
# the application-level packages of layer 6 are independent of each other
SIBLINGS = ("probflux.stpp", "probflux.control", "probflux.plot")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """probflux modules ``path`` imports (absolute or relative, at any depth of the file)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("probflux"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("probflux"):
                continue
            out.add(mod)
            for a in node.names:  # `from . import x` imports the submodule x
                if (SRC.parent / (mod.replace(".", "/") + "/" + a.name + ".py")).exists() or (
                        SRC.parent / (mod.replace(".", "/") + "/" + a.name)).is_dir():
                    out.add(f"{mod}.{a.name}")
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    names = {_module_name(f): f for f in files}
    return {n: {m for m in _imports(f, n) if m in names} for n, f in names.items()}


def _prefixes(name: str) -> list[str]:
    # "probflux" names the package root only; every other entry covers a module or a subpackage
    return [p for p in LAYERS if name == p or (p != "probflux" and name.startswith(p + "."))]


def _layer(name: str) -> int:
    return LAYERS[max(_prefixes(name), key=len)]


def _is_parent_package(a: str, b: str) -> bool:
    return b.startswith(a + ".")


def test_no_import_cycle() -> None:
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle in the sense that matters (they never
    # import the package back); edges from a submodule up to its package would be
    edges = {a: {b for b in bs if not _is_parent_package(a, b)} for a, bs in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)


def test_dependencies_point_one_way() -> None:
    bad = []
    for a, bs in _graph().items():
        for b in bs:
            if _is_parent_package(a, b):
                continue
            if _layer(b) > _layer(a):
                bad.append(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})")
            sa = next((s for s in SIBLINGS if a == s or a.startswith(s + ".")), None)
            sb = next((s for s in SIBLINGS if b == s or b.startswith(s + ".")), None)
            if sa and sb and sa != sb:
                bad.append(f"{a} imports its sibling {b}")
    assert not bad, "\n".join(sorted(bad))


def test_every_module_has_a_layer() -> None:
    for name in _graph():
        assert _prefixes(name), f"{name} has no layer in tests/test_architecture.py LAYERS"


def test_import_probflux_loads_the_core_only() -> None:
    code = ("import sys, probflux; mods = sorted(m for m in sys.modules if m.startswith('probflux'));"
            "print(' '.join(mods))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = [m for m in out if _layer(m) >= 3]
    assert not heavy, f"import probflux loaded {heavy}"
    for lazy in ("train", "data", "control", "app", "plot", "stpp", "evaluation", "objectives"):
        assert f"probflux.{lazy}" not in out
    # first use loads a subpackage
    code = "import probflux, sys; probflux.control; print('probflux.control' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"
