"""The layering docs/architecture.md describes, checked on the source: no import circles (function-level
imports included), the core never reaches up into the UI or the CLI, and the Studio's pages talk to the core
only through the few packages meant for them.

The graph is read with ``ast`` from every module under selavi_core/ and app/, so an import hidden inside a
function (the usual way a circle is smuggled past Python's import machinery) counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "selavi_core"
APP = ROOT / "app"

#: What app/ may import from the core: the Studio's read models, the label store, settings, errors.
APP_MAY_IMPORT = ("selavi_core.studio", "selavi_core.labels", "selavi_core.config", "selavi_core.errors")
#: Modules of the core that exist for the user interface layers above it (CLI); nothing below may import them.
UPPER = ("selavi_core.cli", "selavi_core.commands")


def _module_name(path: Path) -> str:
    """Dotted name as installed: app/ ships as the package selavi_app (pyproject.toml's package-dir)."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "app":
        parts[0] = "selavi_app"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports, anywhere in it, resolved to absolute dotted names."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            # `from pkg import submodule` imports the submodule
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = sorted(CORE.rglob("*.py")) + sorted(APP.rglob("*.py"))
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imp in _imports(path):
            # map to the longest known module (a `from x import func` names x, not x.func)
            while imp and imp not in modules:
                imp = imp.rpartition(".")[0]
            if imp and imp != name and not name.startswith(imp + "."):
                targets.add(imp)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. the import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_the_graph_sees_function_level_imports(graph):
    """Guard for the checker itself: a known import inside a function body must show up as an edge."""
    source = (CORE / "commands" / "train.py").read_text()
    assert "def " in source
    assert any(t.startswith("selavi_core.training") for t in graph["selavi_core.commands.train"])


def test_no_import_circles(graph):
    """A package __init__ re-exporting its own modules is not a circle (children are skipped above)."""
    assert _cycles(graph) == []


def test_core_never_imports_streamlit_the_app_or_the_cli():
    bad = []
    for path in CORE.rglob("*.py"):
        name = _module_name(path)
        for imp in _imports(path):
            if imp.split(".")[0] in {"streamlit", "app", "selavi_app"}:
                bad.append((name, imp))
            if not name.startswith(UPPER) and name != "selavi_core" and imp.startswith(UPPER):
                bad.append((name, imp))
    assert bad == []


def test_the_app_reaches_the_core_only_through_its_front_door(graph):
    bad = [
        (name, imp)
        for name, targets in graph.items()
        if name.startswith("selavi_app")
        for imp in targets
        if imp.startswith("selavi_core") and not imp.startswith(APP_MAY_IMPORT)
    ]
    assert bad == []


def test_every_package_on_disk_ships_in_the_wheel():
    """pyproject.toml lists the packages by hand (app/ is mapped to selavi_app); a new package must be added."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {_module_name(p.parent / "__init__.py") for root in (CORE, APP) for p in root.rglob("__init__.py")}
    assert listed == on_disk
