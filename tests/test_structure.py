"""The layering, checked on the source: the command layer sits above everything (nothing imports it), the packages
import each other without cycles, and so do the modules, inside a package as well as across packages (function-level
imports included)."""

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


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__``)."""
    return {"merginguriel." + ".".join(p.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PKG.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in _modules().items():
        src = _unit(module)
        targets = graph.setdefault(src, set())
        for name in imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if name.startswith("merginguriel.") and _unit(name) != src:
                targets.add(_unit(name))
    return graph


def module_edges(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports: ``from P import n`` reaches the submodule ``P.n`` when there is
    one (and then not ``P`` itself, whose own imports a submodule import does not depend on), else ``P``; an import of
    an attribute of a module (``from P.m import f``) reaches ``P.m``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    named: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            named.update(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names)
    out = set()
    for name in named:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts and ".".join(parts) != module:
            out.add(".".join(parts))
    return out


def module_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: module_edges(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", known) for m, p in modules.items()}


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


def test_no_import_cycles_between_modules():
    """Inside a package too: e.g. a card module and a hub module that import each other are one tangled concern."""
    assert _cycle(module_graph()) is None


def test_module_edges_resolve_submodules_and_attributes():
    known = {"merginguriel.models", "merginguriel.models.card", "merginguriel.models.hub", "merginguriel.io"}
    code = "from merginguriel.models import card\nfrom merginguriel.models.hub import is_hub_id\nimport merginguriel.io\n"
    assert module_edges(code, "merginguriel.x", False, known) == {"merginguriel.models.card", "merginguriel.models.hub",
                                                                  "merginguriel.io"}
    # two modules that import each other, one of them inside a function, are a cycle
    graph = {"merginguriel.models.card": module_edges("def f():\n    from merginguriel.models.hub import x\n",
                                                      "merginguriel.models.card", False, known),
             "merginguriel.models.hub": module_edges("from merginguriel.models.card import y\n",
                                                     "merginguriel.models.hub", False, known)}
    assert _cycle(graph) == ["merginguriel.models.card", "merginguriel.models.hub", "merginguriel.models.card"]


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


def _mentions_method(node: ast.AST) -> bool:
    """Whether an expression reads a method name (``job.merge.method``, ``manifest.get("method")``, ``method``...)."""
    return "method" in ast.unparse(node).lower()


def _names_in(node: ast.AST) -> set[str]:
    """The string constants of a constant or of a tuple / list / set of constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def method_name_branches(source: str, methods: set[str]) -> list[str]:
    """Every place ``source`` branches on a merge method's name: a comparison or membership test between an
    expression that reads a method and a literal method name (or a collection of them), and a ``match`` case on one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            literal = set().union(*(_names_in(s) for s in sides)) & methods
            if literal and any(_mentions_method(s) for s in sides if not _names_in(s)):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Match) and _mentions_method(node.subject):
            for case in node.cases:
                literal = {n.value.value for n in ast.walk(case.pattern) if isinstance(n, ast.MatchValue)
                           and isinstance(n.value, ast.Constant)} & methods
                if literal:
                    found.append(f"line {case.pattern.lineno}: case {ast.unparse(case.pattern)}")
    return found


def test_no_branch_on_a_method_name_outside_merging_and_the_methods_own_package():
    """A merge job (and everything above the merging package) reads what a method declares, never its name: adding a
    method touches only its own module (merging/methods/) and its own library package, if it has one."""
    from merginguriel.merging import load_methods

    methods = set(load_methods())
    offenders = {}
    for module, path in _modules().items():
        parts = module.split(".")
        if parts[1] == "merging" or parts[1] in methods:  # the registry and the methods; a method's own package
            continue
        found = method_name_branches(path.read_text(encoding="utf-8"), methods)
        if found:
            offenders[module] = found
    assert offenders == {}


def test_the_method_name_finder_finds_branches():
    methods = {"adamerging", "ties", "linear"}
    code = ('if job.merge.method == "adamerging":\n    pass\n'
            'if method in ("linear", "dare_linear"):\n    pass\n'
            'x = manifest.get("method") != "ties"\n'
            'match plan.method:\n    case "ties":\n        pass\n'
            'if record.get("origin") == "linear":\n    pass\n')  # not a method: the origin of weights
    found = method_name_branches(code, methods)
    assert sorted(f.split(":")[0] for f in found) == ["line 1", "line 3", "line 5", "line 7"]
