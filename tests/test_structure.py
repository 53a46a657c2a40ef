"""The layering, checked on the source: the command layer sits above everything (nothing imports it), and the
packages import each other without cycles (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "merginguriel"


def _unit(module: str) -> str:
    """The layer unit of a module: its top-level package (``merginguriel.merging``) or top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        module = "merginguriel." + ".".join(path.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__")
        src = _unit(module)
        targets = graph.setdefault(src, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("merginguriel.") and _unit(name) != src:
                    targets.add(_unit(name))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if state.get(m) is None and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if state.get(n) is None and (found := visit(n)):
            return found
    return None


def test_no_domain_package_imports_the_command_layer():
    offenders = sorted(src for src, targets in import_graph().items() if src != "merginguriel.cli" and "merginguriel.cli" in targets)
    assert offenders == []


def test_no_import_cycles_between_packages():
    assert _cycle(import_graph()) is None


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
