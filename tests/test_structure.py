"""The layering, checked on the source: the command layer sits above everything (nothing imports it), and the
packages import each other without cycles (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "merginguriel"


def _unit(module: str) -> str:
    """The layer unit of a module: its top-level package (``merginguriel.merging``) or top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """The absolute names of what ``module`` (whose code is ``source``) imports: ``from X import y`` counts as
    ``X.y`` as well (``y`` may be a submodule), relative imports are resolved against the module's package."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            names += [mod, *(f"{mod}.{a.name}" for a in node.names)]
    return names


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        module = "merginguriel." + ".".join(path.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__")
        src = _unit(module)
        targets = graph.setdefault(src, set())
        for name in imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
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


def test_every_import_form_is_seen():
    """``from merginguriel import cli`` and relative imports name the command layer as surely as a dotted import."""
    forms = {"from merginguriel.cli.main import main": "merginguriel.cli.main", "import merginguriel.cli": "merginguriel.cli",
             "from merginguriel import cli": "merginguriel.cli", "from ..cli import main": "merginguriel.cli.main",
             "from .. import cli": "merginguriel.cli", "from . import engine": "merginguriel.merging.engine"}
    for code, want in forms.items():
        assert want in imported_modules(f"def f():\n    {code}\n", "merginguriel.merging.cli_user", False), code
    assert "merginguriel.merging.engine" in imported_modules("from .engine import merge", "merginguriel.merging", True)


def test_the_wheel_lists_every_package_and_maps_the_top_level_configs():
    """pyproject lists the packages (a folder mapped elsewhere is beyond packages.find): every package folder of the
    tree must be there, or the wheel silently lacks it; and merginguriel.configs is the top-level configs/ folder,
    the one copy of the YAML."""
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    tree = {".".join(p.parent.relative_to(REPO).parts) for p in PKG.rglob("__init__.py")}
    assert set(setup["packages"]) == tree | {"merginguriel.configs"}
    assert setup["package-dir"] == {"merginguriel.configs": "configs"}
    assert (REPO / "configs" / "__init__.py").is_file() and not (PKG / "configs").exists()
    assert set(setup["package-data"]["merginguriel.configs"]) >= {"*.yaml", "ablations/*.yaml"}
