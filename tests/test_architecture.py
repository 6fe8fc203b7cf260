"""The package's import structure (issue 15): the device runtime stands on the ground floor only,
and no module imports another that imports it back (directly or around a circle).

Imports are read from the source (every ``import`` statement, inside functions too; blocks under
``if TYPE_CHECKING:`` are annotations only and skipped), so a lazy import counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hyperobf"
# Pure-Python modules below everything else; the runtime may import these and nothing else of the package.
GROUND_FLOOR = {"hyperobf.spec", "hyperobf.model_meta", "hyperobf.model_formats",
                # what those and the runtime's own file handling stand on (no torch, no hyperobf imports above)
                "hyperobf.protection", "hyperobf.presets", "hyperobf.refiner_meta", "hyperobf.fsmodes"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str) -> set[str]:
    """Package modules ``name`` imports (``from . import x`` names module x when x is a module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for a in child.names:
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def test_runtime_imports_only_the_ground_floor():
    runtime = [m for m in MODULES if m.startswith("hyperobf.device_runtime")]
    assert len(runtime) > 5
    outside = {(m, dep) for m in runtime for dep in GRAPH[m]
               if not dep.startswith("hyperobf.device_runtime") and dep not in GROUND_FLOOR and dep != "hyperobf"}
    assert not outside, sorted(outside)
    # the format table is among what it imports, not a copy of it
    assert "hyperobf.model_formats" in GRAPH["hyperobf.device_runtime.model"]


def test_ground_floor_imports_nothing_above_it():
    for m in GROUND_FLOOR:
        assert GRAPH[m] <= GROUND_FLOOR | {"hyperobf"}, (m, sorted(GRAPH[m] - GROUND_FLOOR))


def test_no_two_modules_import_each_other():
    # A package's __init__ re-exporting its own modules is not a circle: importing the module runs the
    # __init__ anyway. Everything else may not import what imports it back, directly or around a loop.
    edges = {m: {d for d in deps if not (_is_package(d) and m.startswith(d + "."))} for m, deps in GRAPH.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    assert not cycles, cycles


def test_the_graph_sees_lazy_and_relative_imports():
    """The checks above can fail: the reader finds a function-level relative import and a module
    imported by ``from . import name``."""
    assert "hyperobf.export.registry" in GRAPH["hyperobf.psp.engine"]  # imported inside a method
    assert "hyperobf.model_formats" in GRAPH["hyperobf.psp.engine"]  # `from .. import model_formats`
    assert "hyperobf.spec" in GRAPH["hyperobf.device_runtime.model"]
