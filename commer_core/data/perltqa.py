"""Readers for PerLTQA: a memory file (documents per character) and a QA file (examples).

Why: PerLTQA is the paper's *knowledge* task; each character is a user whose
documents are their events, dialogues, profile and relationships. Both the v2 layout
(memory keyed by character, QA as a list of one-key objects) and v1 (lists, possibly
of stringified dicts, parsed as JSON or Python literals, never ``eval``) are read.
Text is HTML-unescaped. Problems raise :class:`DataFormatError` naming file and item.

Document ids name their kind: ``profile``, ``relationship:<id>``, ``event:<id>``,
``dialogue:<id>`` (``<id>`` as in the file, so QA "Reference Memory" ids resolve).
"""

from __future__ import annotations

import ast
import html
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from commer_core.data.examples import DataFormatError, Document, Example, parse_timestamp, read_json
from commer_core.data.selection import stable_key

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("january", "february", "march", "april", "may", "june", "july",
         "august", "september", "october", "november", "december"),
        start=1,
    )
}
_EVENT_DATE = re.compile(r"(?:(?P<month>[A-Za-z]+)\s+(?:(?P<day>\d{1,2}),?\s+)?)?(?P<year>\d{4})")


def _parse_literal(text: str, where: str) -> Any:
    """A stringified dict/list from v1 files: JSON first, then a Python literal (safe)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataFormatError(f"{where}: string is neither JSON nor a Python literal ({exc})") from exc


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    """``value`` as an object, parsing it first when a v1 file stringified it."""
    if isinstance(value, str):
        value = _parse_literal(value, where)
    if not isinstance(value, Mapping):
        raise DataFormatError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        raise DataFormatError(f"{where}: missing")
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: expected a string, got {type(value).__name__}")
    return html.unescape(value)


def _render_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_render_value(v) for v in value)
    return html.unescape(str(value))


def render_fields(fields: Mapping[str, Any]) -> str:
    """``key: value`` lines, the text of profile and relationship documents."""
    return "\n".join(f"{html.unescape(str(k))}: {_render_value(v)}" for k, v in fields.items())


def event_date(value: Any) -> str | None:
    """ISO date for "May 12, 2022" / "October 2021" / "2012" (first day of the period); else None."""
    match = _EVENT_DATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    month = _MONTHS.get((match["month"] or "january").lower())
    if month is None:
        return None
    iso = f"{match['year']}-{month:02d}-{int(match['day'] or 1):02d}"
    return iso if parse_timestamp(iso) else None


def _dialogue(dialogue: Mapping[str, Any], where: str) -> tuple[str, str | None]:
    """Utterances joined in timestamp order (unparseable stamps last) and the first stamp."""
    contents = _mapping(dialogue.get("contents"), f"{where} 'contents'")
    stamps = list(contents)
    times = [parse_timestamp(s) for s in stamps]
    order = sorted(range(len(stamps)), key=lambda i: (times[i] is None, times[i].timestamp() if times[i] else 0.0, i))
    lines: list[str] = []
    for i in order:
        utterances = contents[stamps[i]]
        utterances = [utterances] if isinstance(utterances, str) else utterances
        if not isinstance(utterances, list):
            raise DataFormatError(f"{where} 'contents' {stamps[i]!r}: expected a list of lines")
        lines.extend(_text(u, f"{where} 'contents' {stamps[i]!r}") for u in utterances)
    first = times[order[0]] if order else None
    return "\n".join(lines), (first.isoformat() if first else None)


def _section(character: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    if name not in character:
        raise DataFormatError(f"{where}: missing section {name!r}")
    return _mapping(character[name], f"{where} {name!r}")


def character_documents(character: Mapping[str, Any], where: str) -> list[Document]:
    """A character's documents: profile, relationships, events, dialogues (file order within each)."""
    docs = [Document("profile", render_fields(_section(character, "profile", where)))]
    for key, rel in _section(character, "social_relationship", where).items():
        docs.append(Document(f"relationship:{key}", render_fields(_mapping(rel, f"{where} relationship {key!r}"))))
    for key, event in _section(character, "events", where).items():
        event = _mapping(event, f"{where} event {key!r}")
        if "content" not in event:
            raise DataFormatError(f"{where} event {key!r}: missing key 'content'")
        content = _text(event["content"], f"{where} event {key!r} 'content'")
        docs.append(Document(f"event:{key}", content, event_date(event.get("Creation Time"))))
    for key, dialogue in _section(character, "dialogues", where).items():
        text, stamp = _dialogue(_mapping(dialogue, f"{where} dialogue {key!r}"), f"{where} dialogue {key!r}")
        docs.append(Document(f"dialogue:{key}", text, stamp))
    return docs


def _memory_characters(data: Any, path: Path) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(name, memory, location) from v2 (object keyed by name) or v1 (list named by profile.Protagonist)."""
    if isinstance(data, Mapping):
        for name, memory in data.items():
            where = f"{path}: character {name!r}"
            yield name, _mapping(memory, where), where
    elif isinstance(data, list):
        for index, memory in enumerate(data):
            where = f"{path}: item {index}"
            memory = _mapping(memory, where)
            name = _mapping(memory.get("profile"), f"{where} 'profile'").get("Protagonist")
            if not isinstance(name, str) or not name:
                raise DataFormatError(f"{where}: profile has no 'Protagonist' name")
            yield name, memory, f"{where} ({name!r})"
    else:
        raise DataFormatError(f"{path}: expected an object or a list of characters, got {type(data).__name__}")


def load_perltqa_memory(path: str | Path) -> dict[str, list[Document]]:
    """Documents per character from a PerLTQA memory file (v1 or v2)."""
    path = Path(path)
    memory: dict[str, list[Document]] = {}
    for name, character, where in _memory_characters(read_json(path), path):
        if name in memory:
            raise DataFormatError(f"{where}: duplicate character")
        memory[name] = character_documents(character, where)
    return memory


def _qa_items(group: Any, where: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    """QA objects of a group: either the objects themselves or ``{memory_id: [qa, ...]}`` wrappers."""
    if isinstance(group, str):
        group = _parse_literal(group, where)
    entries = list(group.items()) if isinstance(group, Mapping) else None
    if entries is None:
        if not isinstance(group, list):
            raise DataFormatError(f"{where}: expected a list of QA items, got {type(group).__name__}")
        entries = []
        for index, item in enumerate(group):
            item = _mapping(item, f"{where} item {index}")
            entries.extend([(None, item)] if "Question" in item else item.items())
    for memory_id, value in entries:
        if memory_id is None:
            yield value, where
            continue
        inner = value if isinstance(value, list) else [value]
        for index, qa in enumerate(inner):
            yield _mapping(qa, f"{where} {memory_id!r} item {index}"), f"{where} {memory_id!r} item {index}"


def _qa_characters(data: Any, path: Path) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(name, groups, location) from a QA file: a list of one-key objects (or one object)."""
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a list of characters, got {type(data).__name__}")
    for index, entry in enumerate(data):
        for name, groups in _mapping(entry, f"{path}: item {index}").items():
            where = f"{path}: item {index} ({name!r})"
            yield name, _mapping(groups, where), where


def load_perltqa_qa(path: str | Path) -> dict[str, list[tuple[str, str, str]]]:
    """``{character: [(example_id, question, answer), ...]}`` in file order."""
    path = Path(path)
    qa: dict[str, list[tuple[str, str, str]]] = {}
    for name, groups, where in _qa_characters(read_json(path), path):
        items = qa.setdefault(name, [])
        for group_name, group in groups.items():
            for number, (item, item_where) in enumerate(_qa_items(group, f"{where} {group_name!r}")):
                question = _text(item.get("Question"), f"{item_where} 'Question'")
                answer = _text(item.get("Answer"), f"{item_where} 'Answer'")
                items.append((f"{name}/{group_name}/{number}", question, answer))
    return qa


def load_perltqa(memory_path: str | Path, qa_path: str | Path) -> list[Example]:
    """One example per QA item: input = Question, target = Answer, user = character.

    Each example carries all of its character's documents; select from them with
    :func:`commer_core.data.selection.select_documents`.
    """
    memory = load_perltqa_memory(memory_path)
    examples: list[Example] = []
    for name, items in load_perltqa_qa(qa_path).items():
        if name not in memory:
            raise DataFormatError(f"{qa_path}: character {name!r} is not in the memory file {memory_path}")
        examples.extend(Example(eid, name, q, a, memory[name]) for eid, q, a in items)
    return examples


def find_perltqa_files(source_dir: str | Path) -> tuple[Path, Path]:
    """The one ``perltmem*.json`` and one ``perltqa*.json`` in ``source_dir``."""
    source_dir = Path(source_dir)
    found = []
    for pattern in ("perltmem*.json", "perltqa*.json"):
        matches = sorted(source_dir.glob(pattern))
        if len(matches) != 1:
            raise FileNotFoundError(f"expected exactly one {pattern} in {source_dir}, found {[m.name for m in matches]}")
        found.append(matches[0])
    return found[0], found[1]


def split_characters(names: Sequence[str], n_test: int = 5, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, test) characters: the ``n_test`` names ranking first by a seeded hash go to test.

    Independent of input order and stable across processes; both lists come back sorted.
    """
    unique = sorted(set(names))
    if len(unique) != len(names):
        raise ValueError("character names must be unique")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 0 <= n_test < len(unique):
        raise ValueError(f"n_test must be an int in [0, {len(unique) - 1}] for {len(unique)} characters (got {n_test!r})")
    ranked = sorted(unique, key=lambda name: (stable_key("split", seed, name), name))
    return sorted(ranked[n_test:]), sorted(ranked[:n_test])


def split_perltqa(
    source_dir: str | Path, *, n_test: int = 5, seed: int = 0, dev_fraction: float = 0.1
) -> tuple[dict[str, list[Example]], dict[str, list[str]]]:
    """``({train, dev, test}: examples, {train, test}: characters)`` for ``prepare``.

    Test holds whole characters; dev is a seeded ``dev_fraction`` of the train examples.
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1) (got {dev_fraction!r})")
    examples = load_perltqa(*find_perltqa_files(source_dir))
    train_names, test_names = split_characters(list(dict.fromkeys(e.user_id for e in examples)), n_test, seed)
    test_set = set(test_names)
    train = [e for e in examples if e.user_id not in test_set]
    n_dev = round(len(train) * dev_fraction)
    dev_ids = set(sorted((e.example_id for e in train), key=lambda i: (stable_key("dev", seed, i), i))[:n_dev])
    splits = {
        "train": [e for e in train if e.example_id not in dev_ids],
        "dev": [e for e in train if e.example_id in dev_ids],
        "test": [e for e in examples if e.user_id in test_set],
    }
    return splits, {"train": train_names, "test": test_names}
