"""The package's import graph, counting every import (inside functions and under TYPE_CHECKING too), has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "provision"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every provision module `path` imports, wherever the import statement stands."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", modules)


def imports_in(text: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    package = name if is_package else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "provision"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin.split(".")[0] != "provision":
                continue
            # `from . import dbops` imports the module provision.postgres.dbops; `from . import __version__`
            # (a name defined in the package's __init__) imports the package itself.
            for alias in node.names:
                found.add(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_imports_inside_functions_and_type_checking() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    modules = {"provision", "provision.builds", "provision.builds.pipeline", "provision.postgres.dbops", "provision.x"}
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..postgres import dbops\n"
        "def f():\n    from .. import x\n"
        "def g():\n    from ..version import __version__\n"
    )
    assert imports_in(text, "provision.builds.pipeline", False, modules) == {
        "provision.postgres.dbops",
        "provision.x",
    }
    assert imports_in("from .. import __version__\n", "provision.builds.pipeline", False, modules) == {"provision"}


def test_no_import_cycle_in_the_package() -> None:
    edges = graph()
    assert len(edges) > 20, "the walk found too few modules"
    assert "provision.postgres.dbops" in edges["provision.builds.pipeline"] or any(
        "dbops" in m for m in edges.get("provision.builds.pipeline", set())
    ), "the graph misses a known import"
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_imports_the_package_face() -> None:
    """`provision/__init__` may import its modules; a module importing it back would close a circle."""
    edges = graph()
    importers = sorted(name for name, deps in edges.items() if "provision" in deps and name != "provision")
    assert not importers, f"these import the package face (provision/__init__): {importers}"


# What each folder may import, as its __init__ says.
LEAVES = {
    "provision.config",
    "provision.errors",
    "provision.endpoint",
    "provision.checkpoints",
    "provision.version",
    "provision.names",
}
FORBIDDEN = {
    "provision.postgres": ("provision.builds", "provision.targets", "provision.testing", "provision.api"),
    "provision.builds": ("provision.targets", "provision.testing", "provision.api", "provision.cli"),
    "provision.targets": ("provision.testing", "provision.api", "provision.cli"),
}


def test_each_folder_imports_only_what_its_init_allows() -> None:
    edges = graph()
    wrong = []
    for name, deps in edges.items():
        for folder, forbidden in FORBIDDEN.items():
            if name == folder or name.startswith(folder + "."):
                wrong += [f"{name} -> {dep}" for dep in deps if dep.startswith(forbidden)]
        if not name.startswith("provision.testing"):
            wrong += [f"{name} -> {dep}" for dep in deps if dep.startswith("provision.testing")]
    postgres = [n for n in edges if n.startswith("provision.postgres.")]
    wrong += [
        f"{n} -> {d}" for n in postgres for d in edges[n] if not d.startswith("provision.postgres") and d not in LEAVES
    ]
    assert not wrong, "imports against the layering: " + "; ".join(sorted(wrong))
    for folder in ("builds", "postgres", "targets", "testing"):
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"{folder}/__init__ does not say what it may import"


def test_the_package_face_names_each_public_name_once_and_they_all_resolve() -> None:
    import provision

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module != "version"
        for alias in node.names
    }
    lazy = set(provision.__all__) - {"__version__"}
    assert typed == lazy, f"TYPE_CHECKING imports and the lazy table differ: {typed ^ lazy}"
    for name in provision.__all__:
        assert getattr(provision, name) is not None, name
