"""Check corpus files and rows before any model work.

Why: a wrong column name or type should fail in the first second with the file and
column named, and a bad row should become a dead letter with a readable reason rather
than an exception deep inside tokenization. ``check_row`` never raises, whatever the
mapping holds, so a pipeline can call it on untrusted input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa

from schemas.errors import CommerError

#: Unicode's C0 and C1 controls (category Cc, fixed by Unicode's stability policy) except
#: tab, newline and carriage return, and the surrogates, which cannot be written as UTF-8.
#: One regex scan instead of a Python loop per character: 20k tweets took 2.4 s of a
#: 26 s in-process job that way, and an article costs 20x a tweet.
_INVALID_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class SchemaError(CommerError, ValueError):
    """A corpus file's schema does not fit the corpus contract."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"corpus file {source!r}: " + "; ".join(self.problems))


def is_stringlike(type_: pa.DataType) -> bool:
    """True for the Arrow types that read back as Python ``str`` (incl. dictionary-encoded)."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_)


def validate_corpus_schema(
    schema: pa.Schema,
    *,
    source: str,
    user_column: str = "user_id",
    doc_id_column: str = "doc_id",
    text_column: str = "text",
    timestamp_column: str | None = "timestamp",
) -> None:
    """Raise :class:`SchemaError` naming ``source`` and every missing or mistyped column.

    Accepted: string-like user and text columns, string-like or integer doc ids, and an
    optional timestamp/date column (``timestamp_column=None``: not checked, for readers that
    never read it, such as the compress job).
    """
    problems: list[str] = []
    expectations = (
        (user_column, "string", is_stringlike),
        (doc_id_column, "string or integer", lambda t: is_stringlike(t) or pa.types.is_integer(t)),
        (text_column, "string", is_stringlike),
    )
    for column, expected, accepts in expectations:
        index = schema.get_field_index(column)
        if index < 0:
            problems.append(f"missing column {column!r}")
        elif not accepts(schema.field(index).type):
            problems.append(f"column {column!r} has type {schema.field(index).type}, expected {expected}")
    index = schema.get_field_index(timestamp_column) if timestamp_column is not None else -1
    if index >= 0:
        type_ = schema.field(index).type
        if not (pa.types.is_timestamp(type_) or pa.types.is_date(type_)):
            problems.append(f"column {timestamp_column!r} has type {type_}, expected timestamp or date")
    if problems:
        raise SchemaError(source, problems)


def _string_problem(name: str, value: object, *, blank_reason: str) -> str | None:
    if value is None:
        return f"{name} is null" if name == "text" else f"{name} is null or empty"
    if isinstance(value, bytes):  # how readers hand over string values that are not valid UTF-8
        return f"{name} contains invalid UTF-8 / control characters"
    if not isinstance(value, str):
        return f"{name} is not a string (got {type(value).__name__})"
    if not value.strip():
        return blank_reason
    if _has_invalid_characters(value):
        return f"{name} contains invalid UTF-8 / control characters"
    return None


def _has_invalid_characters(text: str) -> bool:
    """Lone surrogates cannot be written as UTF-8; C0/C1 controls break tokenizers and logs."""
    return _INVALID_CHARACTERS.search(text) is not None


def _doc_id_problem(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if value is not None and not isinstance(value, str):
        return f"doc_id is not a string or integer (got {type(value).__name__})"
    return _string_problem("doc_id", value, blank_reason="doc_id is null or empty")


def _to_utc(value: object) -> datetime | None:
    """The corpus timestamp for a row value; raises ValueError/TypeError when it has none."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise TypeError(type(value).__name__)


def _timestamp_problem(value: object) -> str | None:
    try:
        _to_utc(value)
    except OverflowError:
        return "timestamp is out of range"
    except Exception:  # any failure means "not a usable timestamp"; check_row must not raise
        return f"timestamp is not a datetime or ISO 8601 string (got {type(value).__name__})"
    return None


def check_row(
    row: Mapping[str, Any],
    *,
    user_column: str = "user_id",
    doc_id_column: str = "doc_id",
    text_column: str = "text",
    timestamp_column: str = "timestamp",
) -> str | None:
    """Why ``row`` cannot enter the corpus, or None when it can. Never raises."""
    try:
        if not isinstance(row, Mapping):
            return f"row is not a mapping (got {type(row).__name__})"
        return (
            _string_problem("user_id", row.get(user_column), blank_reason="user_id is null or empty")
            or _doc_id_problem(row.get(doc_id_column))
            or _string_problem("text", row.get(text_column), blank_reason="text is empty or whitespace")
            or _timestamp_problem(row.get(timestamp_column))
        )
    except Exception as exc:  # e.g. a Mapping whose .get raises
        return f"row could not be read ({type(exc).__name__})"


def normalize_row(
    row: Mapping[str, Any],
    *,
    user_column: str = "user_id",
    doc_id_column: str = "doc_id",
    text_column: str = "text",
    timestamp_column: str = "timestamp",
) -> dict[str, Any]:
    """A ``CORPUS_SCHEMA`` dict for a valid row (doc_id stringified, timestamp in UTC).

    Raises ValueError with :func:`check_row`'s reason when the row is not valid.
    """
    columns = dict(
        user_column=user_column,
        doc_id_column=doc_id_column,
        text_column=text_column,
        timestamp_column=timestamp_column,
    )
    reason = check_row(row, **columns)
    if reason is not None:
        raise ValueError(reason)
    return {
        "user_id": row[user_column],
        "doc_id": str(row[doc_id_column]),
        "text": row[text_column],
        "timestamp": _to_utc(row.get(timestamp_column)),
    }
