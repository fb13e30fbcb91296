"""The package's structure, read from the source with ``ast``: the import graph has no cycle, nothing below the
lab imports from it, and no function in the lab, the trainer or the CLI is longer than 60 lines.

Import edges: every ``import`` / ``from ... import`` of a ``tricklab`` module, at module level or inside a
function (a function-local import is a cycle postponed, not removed), except those under ``if TYPE_CHECKING:``
(never executed) and those from a module to a package that contains it (a package's ``__init__`` runs before
its submodules anyway: ``from tricklab.models import MODELS`` inside ``tricklab/models/cnn1d.py`` is how a
submodule registers itself, not a cycle). ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg``. Each checker is first shown to fail on a small package written for the purpose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 60
SHORT_FUNCTIONS = ("tricklab/lab", "tricklab/train", "tricklab/cli.py")


def modules(src: Path, package: str = "tricklab") -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` under ``src``."""
    out = {}
    for f in sorted((src / package).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``body``, nested blocks and function bodies included, except under
    ``if TYPE_CHECKING:``."""
    for node in body:
        if _is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _imports(getattr(node, field, None) or [])


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph(src: Path, package: str = "tricklab") -> dict[str, set[str]]:
    """module -> the package modules it imports (see the module docstring for the rules)."""
    mods = modules(src, package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in _imports(ast.parse(f.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets = {a.name for a in node.names}
            else:
                base = _base(m, f.name == "__init__.py", node)
                targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
            graph[m] |= {t for t in targets if t in mods and t != m and not m.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    component.append(x)
                    if x == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def long_functions(paths: list[Path], limit: int = MAX_LINES) -> list[str]:
    """``file:line name (N lines)`` for every function or method longer than ``limit`` lines (decorators and
    docstring included: the whole ``def``)."""
    out = []
    for f in paths:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > limit:
                    out.append(f"{f}:{node.lineno} {node.name} ({n} lines)")
    return out


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "src" / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "src"


# ------------------------------------------------------------------------------------------- the checkers
def test_cycle_check_finds_a_function_local_cycle_and_ignores_what_it_should(tmp_path: Path) -> None:
    src = _write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import f\n",
        "b.py": "def f():\n    from pkg import a\n",  # function-local: still a cycle
        "reg/__init__.py": "REG = {}\nfrom pkg.reg import item\n",
        "reg/item.py": "from pkg.reg import REG\n",  # a submodule registering itself in its package
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import X\n",
        "d.py": "from . import c\n",  # relative import
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.d"] == {"pkg.c"} and graph["pkg.c"] == set() and graph["pkg.reg.item"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_length_check_finds_a_long_function(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 60 + "    return x\n")
    assert long_functions([f]) == [f"{f}:5 long (62 lines)"]


# ------------------------------------------------------------------------------------------- the package
def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph(SRC)
    assert len(graph) > 100  # the whole package was read
    assert cycles(graph) == []


def test_nothing_below_the_lab_imports_from_it() -> None:
    graph = import_graph(SRC)
    outside = {m: sorted(t for t in targets if t == "tricklab.lab" or t.startswith("tricklab.lab."))
               for m, targets in graph.items()
               if not (m == "tricklab.cli" or m == "tricklab.lab" or m.startswith("tricklab.lab."))}
    assert {m: t for m, t in outside.items() if t} == {}


@pytest.mark.parametrize("where", SHORT_FUNCTIONS)
def test_no_function_is_longer_than_60_lines(where: str) -> None:
    path = SRC / where
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    assert files
    assert long_functions(files) == []
