"""Module boundaries: no import cycles inside u2s_hf, and no submodule importing from the package root.

Imports are read from the source with `ast`, so imports inside functions count; those under `if TYPE_CHECKING:`
do not (they never run). An edge goes to the module an import names: `from .x import y` is an edge to `x`, or to
`x.y` when `y` is itself a submodule; `from . import y` in a subpackage's root is an edge to that submodule. Importing
`a.b.c` also runs the package `a.b` first, so that is an edge too, unless the importer lies inside `a.b` itself
(its own packages are already running); the package root is every module's own package, so it is an edge only when
named.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "u2s_hf"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (packages by their __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node that can run: inside functions too, not under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        yield from _imports(node)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module `name` (its source at `path`) imports."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in _imports(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            here = name.split(".") if is_package else name.split(".")[:-1]
            base = here[: len(here) - (node.level - 1)]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in known else base)
    named = {target for target in targets if target in known}
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1 + is_package)}
    parents = {".".join(target.split(".")[:i]) for target in named for i in range(1, target.count(".") + 1)}
    return named | {parent for parent in parents if parent in known and parent not in own}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str):  # Tarjan's algorithm; the graph is small enough for recursion
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
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
        "def load():\n    from .sub import c\n"
    )
    (package / "b.py").write_text("from . import a\n")
    (package / "sub" / "__init__.py").write_text('"""A subpackage."""\n')
    (package / "sub" / "c.py").write_text("from .. import b\nfrom pkg import sub\n")
    found = modules(package, "pkg")
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub", "pkg.sub.c"},  # inside a function: counted (and its package); TYPE_CHECKING: not
        "pkg.b": {"pkg.a"},
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.b", "pkg.sub"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert found == [], "\n".join(f"{name} -> {sorted(graph[name] & set(c))}" for c in found for name in c)


def test_no_module_imports_from_the_package_root():
    upward = sorted(name for name, targets in import_graph().items() if PACKAGE in targets and name != PACKAGE)
    assert upward == []
