"""Which way the imports go (docs/design.md section 1), checked on the source.

Every import of every module of ``strategies`` and ``harness`` counts, at the top or
inside a function (an import inside a function still ties the two modules together)::

    harness.cli -> harness.commands -> harness.session / runner / distributed / faults / report
    harness.runner -> harness.plan, harness.supervisor, harness.child, harness.measure
    harness.report -> harness.results          harness.faults -> harness.supervisor, harness.results
    harness.results -> harness.errors only     everything -> strategies;  strategies -> nothing of harness

and there is no cycle among the modules at all. Only the command line prints: the
other modules return what they have to say, except the entry points of the processes
the harness starts, whose standard output is their protocol.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("strategies", "harness")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            # ``from package import module`` imports the module, ``from module import name`` the module
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def reaches(name: str, prefix: str) -> list[str]:
    """The modules under ``prefix`` that ``name`` imports directly."""
    return sorted(t for t in GRAPH[name] if t == prefix or t.startswith(prefix + "."))


def test_the_graph_sees_the_imports() -> None:
    assert "harness.results.summary" in GRAPH["harness.results.load"]
    assert "strategies.base" in GRAPH["strategies.pipe"] or "strategies.request_response" in GRAPH["strategies.pipe"]
    assert "harness.session" in GRAPH["harness.commands.run"]  # imported inside a function too


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n.startswith("strategies")))
def test_strategies_never_import_the_harness(name: str) -> None:
    assert reaches(name, "harness") == []


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n.startswith("harness.results")))
def test_the_results_model_imports_nothing_of_the_harness_but_its_errors(name: str) -> None:
    others = [t for t in reaches(name, "harness") if not t.startswith("harness.results") and t != "harness.errors"]
    assert others == []


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n.startswith("harness.report")))
def test_reports_never_import_the_runner_or_the_commands(name: str) -> None:
    forbidden = (
        "harness.runner",
        "harness.commands",
        "harness.session",
        "harness.distributed",
        "harness.faults",
        "harness.supervisor",
        "harness.child",
    )
    assert [t for t in GRAPH[name] if t.startswith(forbidden)] == []


def test_only_the_command_line_imports_the_commands() -> None:
    users = sorted(n for n, targets in GRAPH.items() if any(t.startswith("harness.commands") for t in targets))
    assert [n for n in users if not n.startswith("harness.commands") and n != "harness.cli"] == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module: the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    # A package's __init__ re-exporting its own modules is how a package is read, not a cycle of design.
    graph = {
        n: {t for t in targets if t not in PACKAGE_INITS} for n, targets in GRAPH.items() if n not in PACKAGE_INITS
    }
    assert cycles(graph) == []


PACKAGE_INITS = {module_name(p) for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")}

# The processes the harness starts (a measurement, a fault scenario and its emit(), a soak): their
# standard output is their protocol with the harness.
PRINTING_ENTRY_POINTS = {"harness.faults.scenarios", "harness.faults.probe", "harness.faults.soak", "harness.child"}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_only_the_command_line_prints(name: str) -> None:
    if name == "harness.cli" or name.startswith("harness.commands") or name in PRINTING_ENTRY_POINTS:
        return
    tree = ast.parse(modules()[name].read_text())
    printing = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert printing == [], f"{name} prints at line(s) {printing}: return the text, let the CLI print it"
