"""schemas/dead_letter.py: DEAD_LETTER_STAGES names exactly the stages the pipeline dead-letters at."""

from __future__ import annotations

import ast
from pathlib import Path

import pipelines
from schemas import DEAD_LETTER_STAGES


def _emitted_stages() -> dict[str, list[str]]:
    """``{stage: [file:line, ...]}`` of every ``dead_letter_row(row, reason, stage, ...)`` call in pipelines/."""
    found: dict[str, list[str]] = {}
    for path in sorted(Path(pipelines.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dead_letter_row"):
                continue
            stage = node.args[2] if len(node.args) > 2 else next(k.value for k in node.keywords if k.arg == "stage")
            assert isinstance(stage, ast.Constant), f"{path.name}:{node.lineno}: the stage must be a literal"
            found.setdefault(stage.value, []).append(f"{path.name}:{node.lineno}")
    return found


def test_every_emitted_stage_is_listed_and_every_listed_stage_is_emitted():
    emitted = _emitted_stages()
    assert emitted, "no dead_letter_row call found in pipelines/"
    assert sorted(emitted) == sorted(DEAD_LETTER_STAGES), emitted
