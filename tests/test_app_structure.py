"""The shape of the Studio's code: no import circles inside ``selavi_core.studio``, and the app (``selavi_app``)
reaches the core only through ``selavi_core.studio``, ``labels``, ``config`` and ``errors``.

Imports are read from the source (``ast``), all of them: module level, inside functions and under
``TYPE_CHECKING``, since a function-level import is a circle that only shows at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDIO = ROOT / "selavi_core" / "studio"
APP = ROOT / "selavi_app"
#: What the app may import of the core: the Studio's functions, the label store, settings and errors.
APP_MAY_IMPORT = ("selavi_core.studio", "selavi_core.labels", "selavi_core.config", "selavi_core.errors")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, wherever the import statement stands (``from a import b`` gives a and a.b)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def studio_graph() -> dict[str, set[str]]:
    modules = {f"selavi_core.studio.{p.stem}": p for p in STUDIO.glob("*.py") if p.stem != "__init__"}
    return {name: imported_modules(path) & set(modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_studio_modules_import_no_circle():
    graph = studio_graph()
    assert "selavi_core.studio.compare" in graph and "selavi_core.studio.runview" in graph
    assert "selavi_core.studio.compare" in graph["selavi_core.studio.runview"]  # runview uses compare ...
    assert find_cycle(graph) is None  # ... and nothing leads back, not even a function-level import


def test_the_app_imports_only_the_studio_labels_config_and_errors():
    scripts = sorted(APP.rglob("*.py"))
    assert {p.name for p in scripts} >= {"Home.py", "studio_ui.py", "overview.py", "clusters.py", "similar.py"}
    seen = set()
    for path in scripts:
        for mod in imported_modules(path):
            if mod == "selavi_core" or mod.startswith("selavi_core."):
                seen.add(mod)
                assert mod.startswith(APP_MAY_IMPORT), f"{path.relative_to(ROOT)} imports {mod}"
    assert any(m.startswith("selavi_core.studio") for m in seen)


def test_the_app_does_not_edit_sys_path():
    for path in APP.rglob("*.py"):
        assert "sys.path" not in path.read_text(), path
