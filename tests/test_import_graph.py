"""The package's import graph, read from the source: no cycle, and the layers point one way.

The graph has an edge A -> B when module A imports module B (``import a.b.c`` or
``from a.b import c`` also runs the packages ``a`` and ``a.b``). A package that A lives
in adds no edge: it is already being imported when A is. Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import simcompare

PKG = Path(simcompare.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported (not in functions or classes)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _module_level_imports(node.body)
            found += _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level_imports(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                found += _module_level_imports(handler.body)
        elif isinstance(node, ast.With):
            found += _module_level_imports(node.body)
    return found


def _all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import, deferred ones in functions included (TYPE_CHECKING blocks left out)."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
               for stmt in node.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skipped]


def _imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        if not MODULES[module].name == "__init__.py":
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def _graph(*, deferred: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = _all_imports(tree) if deferred else _module_level_imports(tree.body)
        deps: set[str] = set()
        for node in nodes:
            for name in _imported_names(module, node):
                parts = name.split(".")
                for k in range(1, len(parts) + 1):
                    target = ".".join(parts[:k])
                    if target in MODULES and target != module and not module.startswith(target + "."):
                        deps.add(target)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_package():
    graph = _graph(deferred=False)
    assert len(graph) >= 70
    assert "simcompare.stats.compare" in graph["simcompare.comparison"]
    assert "simcompare.stats" in graph["simcompare.reporting.sections"]  # the package runs first
    assert "simcompare.density" not in graph["simcompare.density.train"]  # its own package


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_at_module_level():
    cycles = _cycles(_graph(deferred=False))
    assert cycles == [], cycles


def _reaches(graph: dict[str, set[str]], module: str, prefix: str) -> list[str]:
    """Modules under ``prefix`` that ``module`` itself imports, deferred imports included."""
    return sorted(t for t in graph[module] if t == prefix or t.startswith(prefix + "."))


def test_the_layers_point_one_way():
    """readers -> mock / observed -> ImageSet -> density -> scores -> stats -> report."""
    graph = _graph(deferred=True)
    problems = []
    for module in graph:
        if module.startswith("simcompare.stats"):
            for later in ("simcompare.floor", "simcompare.pipeline", "simcompare.density",
                          "simcompare.mock", "simcompare.observed", "simcompare.reporting",
                          "simcompare.comparison", "simcompare.appearance"):
                problems += [f"{module} -> {t}" for t in _reaches(graph, module, later)]
        if module.startswith("simcompare.observed"):
            problems += [f"{module} -> {t}" for t in _reaches(graph, module, "simcompare.mock")]
        if module.startswith(("simcompare.sims", "simcompare.psf")):
            for later in ("simcompare.mock", "simcompare.density", "simcompare.stats"):
                problems += [f"{module} -> {t}" for t in _reaches(graph, module, later)]
        if module.startswith("simcompare.reporting"):
            for model in ("simcompare.density", "simcompare.inference", "simcompare.mismatch"):
                problems += [f"{module} -> {t}" for t in _reaches(graph, module, model)]
    assert problems == [], problems
