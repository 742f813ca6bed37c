"""The import rules of the package (docs/architecture.md, "Layout"), read from the source with ``ast``:

- ``config.py`` and ``deploy/`` import no task (``resvision.tasks``): the caller resolves the task and hands it over;
- no import cycle among the package's modules;
- no private name (``_helper``) is imported from another module.

Every import counts, function-level ones too, except those under ``if TYPE_CHECKING:`` (never run). The lazy tables
of the package ``__init__`` files (``_EXPORTS``, ``_TASK_MODULES``: strings read by ``importlib``) are not imports.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "resvision"
ROOT = Path(__file__).resolve().parent.parent  # the repository root is the package
NOT_PACKAGE = {"tests", "tools", ".venv", "build", "dist"}


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package (folders with an ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_PACKAGE or any(p.startswith(".") for p in rel.parts):
            continue
        if any(not (root.joinpath(*rel.parts[:i]) / "__init__.py").is_file() for i in range(1, len(rel.parts))):
            continue  # a folder that is not a sub-package (scripts, data)
        parts = [PACKAGE, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every ``import`` / ``from ... import`` of a module: ``(line, target module, imported name or None)``."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[int, str, str | None]] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # only the else branch ever runs
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((node.lineno, alias.name, None))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        for alias in node.names:
            self.found.append((node.lineno, target, alias.name))


@lru_cache(maxsize=None)
def imports() -> dict[str, list[tuple[int, str, str | None]]]:
    """Module -> its imports of modules of the package."""
    modules = package_modules()
    out = {}
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        out[name] = [(line, target, imported) for line, target, imported in visitor.found
                     if target == PACKAGE or target.startswith(PACKAGE + ".")]
    return out


def edge_target(target: str, imported: str | None, modules: dict[str, Path]) -> str:
    """The module an import depends on: ``from pkg import sub`` -> the submodule ``pkg.sub``; ``import a.b.c`` ->
    the deepest module of the package on that path."""
    if imported is not None and f"{target}.{imported}" in modules:
        return f"{target}.{imported}"
    while target not in modules and "." in target:
        target = target.rpartition(".")[0]
    return target


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {imported module: first line}."""
    modules = package_modules()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, found in imports().items():
        for line, target, imported in found:
            dep = edge_target(target, imported, modules)
            if dep != name and dep in modules:
                graph[name].setdefault(dep, line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import cycles (``[a, b, ..., a]``): in every strongly connected component of more than one module
    (Tarjan), a shortest cycle through each of its modules, each cycle listed once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # recursive: the graph is a few hundred modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                connect(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles: list[list[str]] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for component in sorted(components):  # a shortest cycle through each member, each cycle once
        for member in component:
            cycle = _cycle_in(graph, set(component), member)[:-1]
            start = cycle.index(min(cycle))
            cycle = [*cycle[start:], *cycle[:start], min(cycle)]  # from its first module in sorted order
            edges = frozenset(zip(cycle, cycle[1:]))
            if edges not in seen:
                seen.add(edges)
                cycles.append(cycle)
    return cycles


def _cycle_in(graph: dict[str, dict[str, int]], members: set[str], start: str) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside one strongly connected component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for dep in sorted(graph[node]):
                if dep not in members:
                    continue
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if dep not in parents:
                    parents[dep] = node
                    following.append(dep)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component of two or more modules always has one


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([*steps, cycle[-1]])


def _short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# ------------------------------------------------------------------------------------------------------------------


def test_the_scan_sees_the_package():
    modules = package_modules()
    for name in ("resvision", "resvision.config", "resvision.deploy.export", "resvision.tasks.base",
                 "resvision.tasks.detection.task", "resvision.benchmarks.measure"):
        assert name in modules
    assert not any(m.startswith(("resvision.tests", "resvision.tools")) for m in modules)
    graph = import_graph()
    assert "resvision.engine.trainer" in graph["resvision.engine"]          # from .trainer import Trainer
    assert "resvision.engine.distributed" in graph["resvision.engine.trainer"]  # from . import distributed


def test_the_scan_reads_function_level_imports_and_skips_type_checking(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("from . import b\n")
    (tmp_path / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\nelse:\n    from .d import D\n"
        "def f():\n    from ..top import _private\n    import resvision.sub.b\n")
    modules = package_modules(tmp_path)
    assert set(modules) == {"resvision", "resvision.sub", "resvision.sub.a"}
    visitor = _Imports("resvision.sub.a", False)
    visitor.visit(ast.parse((tmp_path / "sub" / "a.py").read_text()))
    assert [(t, n) for _, t, n in visitor.found] == [
        ("typing", "TYPE_CHECKING"), ("resvision.sub.d", "D"), ("resvision.top", "_private"), ("resvision.sub.b", None)]
    package = _Imports("resvision.sub", True)
    package.visit(ast.parse((tmp_path / "sub" / "__init__.py").read_text()))
    assert [(t, n) for _, t, n in package.found] == [("resvision.sub", "b")]


def test_find_cycles_names_each_cycle_with_its_lines():
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7, "d": 1}, "d": {}, "e": {"f": 2}, "f": {"e": 4, "g": 6},
             "g": {"f": 8}}
    cycles = find_cycles(graph)
    assert cycles == [["a", "b", "c", "a"], ["e", "f", "e"], ["f", "g", "f"]]
    assert _describe(cycles[0], graph) == "a (line 3) -> b (line 5) -> c (line 7) -> a"
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_config_and_deploy_import_no_task():
    bad = []
    for module, found in imports().items():
        if module == f"{PACKAGE}.config" or module == f"{PACKAGE}.deploy" or module.startswith(f"{PACKAGE}.deploy."):
            for line, target, imported in found:
                if target == f"{PACKAGE}.tasks" or target.startswith(f"{PACKAGE}.tasks."):
                    bad.append(f"{_short(module)} line {line}: from {target} import {imported}" if imported else
                               f"{_short(module)} line {line}: import {target}")
    assert not bad, ("config.py and deploy/ must not import a task (the caller resolves the task and hands it "
                     "over):\n  " + "\n  ".join(bad))


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s):\n  " + "\n  ".join(_describe(c, graph) for c in cycles)


def test_no_private_names_imported_across_modules():
    modules = package_modules()
    bad = []
    for module, found in imports().items():
        for line, target, imported in found:
            # a module (``from . import _impl``) may be private to its package: only names defined in a module count
            if imported is not None and _is_private(imported) and f"{target}.{imported}" not in modules:
                bad.append(f"{_short(module)} line {line}: {imported} from {_short(target)}")
    assert not bad, "private names imported from another module:\n  " + "\n  ".join(bad)
