"""Rejected corpus rows, kept with the reason and the stage that rejected them.

Why: one bad row must not fail a nightly job, nor vanish silently. Dead letters keep
enough of the original row (stringified when it had the wrong type) to find and fix
it at the source, and are always writable whatever the input held.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from schemas.corpus import doc_field

#: The stages that reject rows in this project, exactly: ``validate`` (pipelines/validate.py:
#: missing ids, blank text, conflicting duplicates) and ``tokenize`` (pipelines/model_handler.py:
#: a text the tokenizer rejects or that yields no token). A test keeps this list equal to the
#: stages the pipeline emits.
DEAD_LETTER_STAGES: tuple[str, ...] = ("validate", "tokenize")

DEAD_LETTER_SCHEMA: pa.Schema = pa.schema(
    [
        doc_field("user_id", pa.string(), "Original user_id, stringified if it was not a string."),
        doc_field("doc_id", pa.string(), "Original doc_id, stringified if it was not a string."),
        doc_field("text", pa.string(), "Original text, stringified if it was not a string."),
        doc_field("reason", pa.string(), "Why the row was rejected, e.g. 'text is empty or whitespace'.", nullable=False),
        doc_field("stage", pa.string(), "Step that rejected it: validate or tokenize.", nullable=False),
        doc_field("source", pa.string(), "Input file the row came from, when known."),
    ],
    metadata={"doc": "ComMer dead letters: corpus rows rejected by the pipeline."},
)


def _stringify(value: object) -> str | None:
    """``str(value)`` made writable: None stays None, lone surrogates are escaped."""
    if value is None:
        return None
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # a hostile __str__ must not lose the dead letter
        text = f"<unprintable {type(value).__name__}>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def dead_letter_row(
    row: Mapping[str, Any] | Any,
    reason: str,
    stage: str,
    source: str | None = None,
    *,
    user_column: str = "user_id",
    doc_id_column: str = "doc_id",
    text_column: str = "text",
) -> dict[str, str | None]:
    """A ``DEAD_LETTER_SCHEMA`` dict for ``row``; never raises on odd row contents."""
    if not reason or not stage:
        raise ValueError("a dead letter needs a non-empty reason and stage")
    get = row.get if isinstance(row, Mapping) else (lambda _key: None)
    return {
        "user_id": _stringify(get(user_column)),
        "doc_id": _stringify(get(doc_id_column)),
        "text": _stringify(get(text_column)) if isinstance(row, Mapping) else _stringify(row),
        "reason": _stringify(reason),
        "stage": _stringify(stage),
        "source": _stringify(source),
    }
