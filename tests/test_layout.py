"""The layout: scripts on top, the shared package below, imports running one way, no circles."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGE = PROJECT / "drs"
SCRIPTS = {path.stem for path in PROJECT.glob("*.py")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top, inside functions or only for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {
            imported
            for imported in imports_of(path)
            if imported in modules and imported != name and not name.startswith(imported + ".")
        }
        for name, path in modules.items()
    }


def test_the_package_never_imports_a_script() -> None:
    upward = {
        f"{module_name(path)} imports {imported}"
        for path in PACKAGE.rglob("*.py")
        for imported in imports_of(path)
        if imported.split(".")[0] in SCRIPTS
    }
    assert not upward


def test_the_package_has_no_import_circles() -> None:
    graph = package_graph()
    circles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        for imported in sorted(graph[name]):
            if imported in path:
                circles.append([*path[path.index(imported) :], imported])
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not circles, "\n".join(" -> ".join(circle) for circle in circles)


def test_the_graph_check_sees_a_circle(tmp_path: Path) -> None:
    """The reader of imports itself: a type-checking-only import counts."""
    module = tmp_path / "a.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from drs.b import B\n"
    )
    assert "drs.b" in imports_of(module)


def test_the_top_level_holds_what_a_user_runs() -> None:
    shipped = {path.name for path in PROJECT.glob("*.py")}
    assert shipped == {
        "ingestion.py", "training.py", "scoring.py", "deployment.py", "diagnostics.py",
        "reporting.py", "app.py", "wsgi.py", "apicalls.py", "fullprocess.py",
    }  # fmt: skip


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/helpers.py; conftest.py only holds fixtures."""
    crossing = {
        f"{path.name} imports {imported}"
        for path in (PROJECT / "tests").glob("*.py")
        for imported in imports_of(path)
        if imported.split(".")[0] == "conftest" or imported.split(".")[0].startswith("test_")
    }
    assert not crossing
