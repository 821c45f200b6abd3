"""Write small LaMP-format fixture files (NOTES.md section 2) into a temporary directory.

No real LaMP files are available offline, so tests build them from the documented
schema with the exact official input prefixes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LAMP4_PREFIX = "Generate a headline for the following article: "
LAMP7_PREFIX = "Paraphrase the following tweet without any explanation before or after it: "
PREFIXES = {"lamp4": LAMP4_PREFIX, "lamp7": LAMP7_PREFIX}
OUTPUT_TASKS = {"lamp4": "LaMP_4", "lamp7": "LaMP_7"}


def profile_item(task: str, user: int, j: int, *, date: bool = True) -> dict[str, Any]:
    """A profile item of the task's documented shape."""
    item: dict[str, Any] = {"id": f"{user}{j:02d}", "text": f"user {user} wrote item {j} about topic{j}"}
    if task == "lamp4":
        item["title"] = f"Title {j}"
    if date:
        item["date"] = f"2020-01-{j + 1:02d}"
    return item


def questions(task: str, split: str, n: int = 3, profile_size: int = 4) -> list[dict[str, Any]]:
    """``{split}_questions.json`` content: n users, each with a profile."""
    return [
        {
            "id": f"{split}{i}",
            "input": PREFIXES[task] + f"{split} input {i}",
            "profile": [profile_item(task, i, j, date=j % 2 == 0) for j in range(profile_size)],
        }
        for i in range(n)
    ]


def outputs(task: str, split: str, n: int = 3) -> dict[str, Any]:
    """``{split}_outputs.json`` content matching :func:`questions`."""
    return {"task": OUTPUT_TASKS[task], "golds": [{"id": f"{split}{i}", "output": f"{split} output {i}"} for i in range(n)]}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_lamp(
    root: Path,
    task: str,
    *,
    layout: str = "nested",
    splits: tuple[str, ...] = ("train", "dev", "test"),
    n: int = 3,
) -> Path:
    """Write a LaMP dataset under ``root``: ``root/{split}/...`` (nested) or ``root/...`` (flat).

    The test split gets questions only, as in the official release.
    """
    for split in splits:
        directory = root / split if layout == "nested" else root
        write_json(directory / f"{split}_questions.json", questions(task, split, n))
        if split != "test":
            write_json(directory / f"{split}_outputs.json", outputs(task, split, n))
    return root
