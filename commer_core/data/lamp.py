"""Readers for the official LaMP-4 (news headlines) and LaMP-7 (tweet paraphrasing) files.

Why strict: a silently mismatched question/output pair or a wrong task's file would
train on garbage without any error. Every structural problem raises
:class:`DataFormatError` naming the file and the item index and id. Inputs keep the
official prefixes, which are checked: they tell the two tasks apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from commer_core.data.examples import DataFormatError, Document, Example, read_json

LampTask = Literal["lamp4", "lamp7"]

#: The official instruction prefix that starts every input of each task.
LAMP_PREFIXES: dict[str, str] = {
    "lamp4": "Generate a headline for the following article: ",
    "lamp7": "Paraphrase the following tweet without any explanation before or after it: ",
}
#: The ``task`` value of each task's outputs file.
LAMP_OUTPUT_TASKS: dict[str, str] = {"lamp4": "LaMP_4", "lamp7": "LaMP_7"}
LAMP_SPLITS: tuple[str, ...] = ("train", "dev", "test")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def normalize_task(task: str) -> LampTask:
    """``"LaMP-4"``, ``"lamp_4"``, ``"lamp4"`` -> ``"lamp4"``; ValueError for other tasks."""
    key = re.sub(r"[\s_-]", "", task).lower()
    if key not in LAMP_PREFIXES:
        raise ValueError(f"unknown LaMP task {task!r}; expected one of {sorted(LAMP_PREFIXES)}")
    return key  # type: ignore[return-value]


def _split_dir(source_dir: Path, split: str) -> Path | None:
    """The directory holding ``{split}_questions.json``: ``source/{split}/`` or ``source/`` itself."""
    for directory in (source_dir / split, source_dir):
        if (directory / f"{split}_questions.json").is_file():
            return directory
    return None


def lamp_splits(source_dir: str | Path) -> list[str]:
    """The official splits whose questions file is present, in train/dev/test order."""
    return [s for s in LAMP_SPLITS if _split_dir(Path(source_dir), s) is not None]


def lamp_files(source_dir: str | Path, split: str) -> tuple[Path, Path | None]:
    """Paths of a split's questions and outputs files (outputs None when absent)."""
    if split not in LAMP_SPLITS:
        raise ValueError(f"unknown LaMP split {split!r}; expected one of {LAMP_SPLITS}")
    source_dir = Path(source_dir)
    directory = _split_dir(source_dir, split)
    if directory is None:
        tried = [source_dir / split / f"{split}_questions.json", source_dir / f"{split}_questions.json"]
        raise FileNotFoundError(f"no LaMP {split} questions file; looked for {', '.join(map(str, tried))}")
    outputs = directory / f"{split}_outputs.json"
    return directory / f"{split}_questions.json", outputs if outputs.is_file() else None


def _field(item: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in item:
        raise DataFormatError(f"{where}: missing key {key!r}")
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise DataFormatError(f"{where}: {key!r} has type {type(value).__name__}")
    return value


def _identifier(item: Mapping[str, Any], where: str) -> str:
    return str(_field(item, "id", (str, int), where))


def _profile_document(task: LampTask, item: Any, where: str) -> Document:
    if not isinstance(item, Mapping):
        raise DataFormatError(f"{where}: expected an object, got {type(item).__name__}")
    doc_id = _identifier(item, where)
    text = _field(item, "text", str, where)
    if task == "lamp4":  # as the official code: title + " " + text
        text = f"{_field(item, 'title', str, where)} {text}".strip()
    date = item.get("date")
    if date is not None and (not isinstance(date, str) or not _DATE.fullmatch(date)):
        raise DataFormatError(f"{where}: 'date' must be 'YYYY-MM-DD' (got {date!r})")
    return Document(doc_id=doc_id, text=text, timestamp=date)


def _read_questions(task: LampTask, path: Path) -> list[tuple[str, str, list[Document]]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
    prefix = LAMP_PREFIXES[task]
    questions, seen = [], set()
    for index, item in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(item, Mapping):
            raise DataFormatError(f"{where}: expected an object, got {type(item).__name__}")
        qid = _identifier(item, where)
        where = f"{path}: item {index} (id {qid!r})"
        if qid in seen:
            raise DataFormatError(f"{where}: duplicate id")
        seen.add(qid)
        text = _field(item, "input", str, where)
        if not text.startswith(prefix):
            raise DataFormatError(f"{where}: input does not start with the {task} prefix {prefix!r}")
        profile = _field(item, "profile", list, where)
        documents = [_profile_document(task, doc, f"{where} profile item {j}") for j, doc in enumerate(profile)]
        questions.append((qid, text, documents))
    return questions


def _read_outputs(task: LampTask, path: Path) -> dict[str, str]:
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise DataFormatError(f"{path}: expected a JSON object with 'golds', got {type(data).__name__}")
    declared = data.get("task")
    if declared is not None and declared != LAMP_OUTPUT_TASKS[task]:
        raise DataFormatError(f"{path}: task is {declared!r}, expected {LAMP_OUTPUT_TASKS[task]!r}")
    golds = _field(data, "golds", list, str(path))
    outputs: dict[str, str] = {}
    for index, gold in enumerate(golds):
        where = f"{path}: gold {index}"
        if not isinstance(gold, Mapping):
            raise DataFormatError(f"{where}: expected an object, got {type(gold).__name__}")
        gid = _identifier(gold, where)
        where = f"{path}: gold {index} (id {gid!r})"
        if gid in outputs:
            raise DataFormatError(f"{where}: duplicate id")
        outputs[gid] = _field(gold, "output", str, where)
    return outputs


def load_lamp(task: str, source_dir: str | Path, split: str) -> list[Example]:
    """Examples of one official split; a question's id is its example id and, normally, its user id.

    Official LaMP gives each question a profile of its own (one question per user). Questions
    that carry the very same profile (same item ids, in order) are one user's and share the
    first such question's id as user id, so a personalization swap never pairs a user with
    themself. Targets are None when the split has no outputs file, which only the test split may lack.
    """
    task = normalize_task(task)
    questions_path, outputs_path = lamp_files(source_dir, split)
    questions = _read_questions(task, questions_path)
    owner: dict[tuple[str, ...], str] = {}
    users = [owner.setdefault(tuple(d.doc_id for d in docs), qid) if docs else qid for qid, _, docs in questions]
    if outputs_path is None:
        if split != "test":
            raise FileNotFoundError(f"{questions_path.parent / f'{split}_outputs.json'} is missing")
        return [Example(qid, user, text, None, docs) for (qid, text, docs), user in zip(questions, users)]
    outputs = _read_outputs(task, outputs_path)
    for index, (qid, _, _) in enumerate(questions):
        if qid not in outputs:
            raise DataFormatError(f"{questions_path}: item {index} (id {qid!r}) has no output in {outputs_path}")
    extra = sorted(set(outputs) - {qid for qid, _, _ in questions})
    if extra:
        raise DataFormatError(f"{outputs_path}: golds with ids {extra[:5]} have no question in {questions_path}")
    return [Example(qid, user, text, outputs[qid], docs) for (qid, text, docs), user in zip(questions, users)]
