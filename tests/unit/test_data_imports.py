"""commer_core.data has no import cycle: each module imports on its own, first, in a fresh interpreter.

A cycle hidden by an import inside a function only shows when a module is imported
first; so each module is the first one a fresh process imports, and no module of the
package may import another inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DATA_DIR = REPO_ROOT / "commer_core" / "data"
MODULES = sorted(f"commer_core.data.{p.stem}" for p in DATA_DIR.glob("*.py") if p.stem != "__init__")


def test_the_package_has_the_modules_this_test_expects() -> None:
    assert {"commer_core.data.examples", "commer_core.data.lamp", "commer_core.data.perltqa",
            "commer_core.data.prepare", "commer_core.data.selection"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_first_in_a_fresh_process(module: str) -> None:
    # the module itself first (not the package's names), then everything it exports
    code = f"import importlib; m = importlib.import_module({module!r}); [getattr(m, n) for n in dir(m)]"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_module_imports_another_of_the_package_inside_a_function(path: Path) -> None:
    # a third-party import inside a function (datasets, read only for the layouts that need it) hides no cycle
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = [f"{path.name}:{node.lineno}" for fn in ast.walk(tree)
              if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if _imports_the_package(node)]
    assert not hidden, f"package imports inside functions (put them at the top of the module): {hidden}"


def _imports_the_package(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "commer_core"
    return isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "commer_core" for alias in node.names)


def test_the_import_check_sees_package_imports_and_only_them() -> None:
    tree = ast.parse("def f():\n    from commer_core.data import lamp\n    from . import x\n    import commer_core.files\n"
                     "    import datasets\n    from datasets.data_files import get_data_patterns\n")
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert [_imports_the_package(node) for node in imports] == [True, True, True, False, False]


def test_examples_imports_no_reader() -> None:
    """examples is the bottom layer: the readers and prepare build on it, never the reverse."""
    tree = ast.parse((DATA_DIR / "examples.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m for m in imported if m.startswith("commer_core.data")}, imported
