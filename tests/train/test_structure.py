"""Structure rules of train/ and techniques/ (issue 11), checked on the source with ``ast``: no function longer
than 60 lines in train/, and imports at the top of the file in both (optional extras, imported where used with
a message naming the extra, and what `import tricklab` must not load, are listed in OPTIONAL_IMPORTS)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tricklab"
MAX_LINES = 60
#: (file relative to src/tricklab, imported module) pairs allowed inside a function: optional extras, and the
#: display library, which `import tricklab` must not load (tests/test_import.py)
OPTIONAL_IMPORTS: set[tuple[str, str]] = {("techniques/progress.py", "rich.console"),
                                          ("techniques/progress.py", "rich.progress"),
                                          # the tune / mlflow / tensorboard extras, named in their messages
                                          ("techniques/optuna_pruning.py", "optuna"),
                                          ("techniques/mlflow_log.py", "mlflow.tracking"),
                                          ("techniques/mlflow_log.py", "mlflow.entities"),
                                          ("techniques/tensorboard_log.py", "torch.utils.tensorboard"),
                                          ("techniques/tensorboard_log.py", "torch.utils.tensorboard.summary")}


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("path", sorted((SRC / "train").glob("*.py")), ids=lambda p: p.name)
def test_no_function_in_train_is_longer_than_60_lines(path: Path) -> None:
    long = [(f.name, f.end_lineno - f.lineno + 1) for f in _functions(path) if f.end_lineno - f.lineno + 1 > MAX_LINES]
    assert not long, f"{path.name}: {long}"


@pytest.mark.parametrize("path", sorted([*(SRC / "train").glob("*.py"), *(SRC / "techniques").glob("*.py")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports_are_at_the_top(path: Path) -> None:
    inside = []
    for f in _functions(path):
        for node in ast.walk(f):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if (f"{path.parent.name}/{path.name}", module) not in OPTIONAL_IMPORTS:
                    inside.append(f"{f.name}: {ast.unparse(node)}")
    assert not inside, f"{path.name} imports inside functions: {inside}"


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    src = tmp_path / "x.py"
    src.write_text("def f():\n" + "    x = 1\n" * MAX_LINES + "\n\ndef g():\n    import os\n", encoding="utf-8")
    lengths = {f.name: f.end_lineno - f.lineno + 1 for f in _functions(src)}
    assert lengths["f"] == MAX_LINES + 1 and lengths["g"] == 2
