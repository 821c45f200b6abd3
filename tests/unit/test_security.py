"""Static guarantees over the package source: no remote code, no pickled model files.

Every ``from_pretrained`` call must pass ``trust_remote_code=False`` explicitly (so a
changed library default cannot turn it on), and nothing may unpickle: ``torch.load``,
``pickle.load(s)`` and ``joblib`` are absent from the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for package in ("commer_core", "pipelines", "jobs", "schemas") for p in (ROOT / package).rglob("*.py"))


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_remote_code_and_no_unpickling(path):
    for node, owner, name in _calls(path):
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if name == "from_pretrained":
            flags = {k.arg: k.value for k in node.keywords}
            value = flags.get("trust_remote_code")
            assert isinstance(value, ast.Constant) and value.value is False, f"{where}: trust_remote_code=False missing"
        assert not (owner == "torch" and name == "load"), f"{where}: torch.load unpickles"
        assert not (owner == "pickle" and name in ("load", "loads")), f"{where}: pickle.load"
    assert "import joblib" not in path.read_text()


def test_the_sources_were_found():
    assert len(SOURCES) > 30
