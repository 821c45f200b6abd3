"""The training-data model (Example, Document) and its Parquet files.

Why one model for every dataset: the trainer, the evaluator and the Beam job should
not care whether an example came from LaMP or PerLTQA. Examples are written as
Parquet (loadable with ``datasets.load_dataset("parquet", ...)``) and users'
documents in the corpus schema, so the very same users can be compressed by the
nightly job. The readers (``lamp``, ``perltqa``) build on this module and the
conversion of official files (``prepare``) on them; this module imports neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from commer_core.errors import CommerError
from commer_core.files import atomic_output
from schemas import CORPUS_SCHEMA, check_row, normalize_row


class DataFormatError(CommerError, ValueError):
    """A source data file does not have the documented format (message names file and item)."""


@dataclass(frozen=True)
class Document:
    """One piece of a user's history; ``timestamp`` is ISO 8601 when known."""

    doc_id: str
    text: str
    timestamp: str | None = None


@dataclass(frozen=True)
class Example:
    """A task input for one user, its target (None when unlabelled) and the user's documents."""

    example_id: str
    user_id: str
    input: str
    target: str | None
    documents: list[Document] = field(default_factory=list)


_DOCUMENT_TYPE = pa.struct(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("timestamp", pa.string()),
    ]
)

#: Schema of the examples Parquet files written by :func:`write_examples_parquet`.
EXAMPLE_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("target", pa.string()),
        pa.field("documents", pa.list_(pa.field("item", _DOCUMENT_TYPE, nullable=False)), nullable=False),
    ]
)

_ROWS_PER_GROUP = 512


def parse_timestamp(value: str | None) -> datetime | None:
    """An aware UTC datetime for an ISO 8601 string (naive means UTC); None if absent or unparseable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except (ValueError, TypeError, OverflowError):
        return None


def read_json(path: Path) -> Any:
    """Parse a source JSON file, turning syntax errors into :class:`DataFormatError` naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc


@contextmanager
def _atomic_writer(path: str | Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter on a temporary name, renamed into place only when writing succeeded."""
    with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        yield writer


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _example_row(example: Example) -> dict[str, Any]:
    return {
        "example_id": example.example_id,
        "user_id": example.user_id,
        "input": example.input,
        "target": example.target,
        "documents": [vars(d) for d in example.documents],
    }


def write_examples_parquet(examples: Iterable[Example], path: str | Path) -> int:
    """Write examples (documents nested as list<struct>) in row groups; returns the count."""
    count = 0
    with _atomic_writer(path, EXAMPLE_SCHEMA) as writer:
        for batch in _batched(examples, _ROWS_PER_GROUP):
            writer.write_table(pa.Table.from_pylist([_example_row(e) for e in batch], schema=EXAMPLE_SCHEMA))
            count += len(batch)
    return count


def iter_examples_parquet(path: str | Path) -> Iterator[Example]:
    """Stream examples back from :func:`write_examples_parquet` output, one row group at a time."""
    for batch in pq.ParquetFile(path).iter_batches(columns=EXAMPLE_SCHEMA.names):
        for row in batch.to_pylist():
            documents = [Document(**d) for d in row.pop("documents")]
            yield Example(**row, documents=documents)


def read_examples_parquet(path: str | Path) -> list[Example]:
    """All examples of a file written by :func:`write_examples_parquet`."""
    return list(iter_examples_parquet(path))


def _user_documents(items: Iterable[Example | tuple[str, Document]]) -> Iterator[tuple[str, Document]]:
    for item in items:
        if isinstance(item, Example):
            yield from ((item.user_id, d) for d in item.documents)
        else:
            yield item


def write_corpus_parquet(items: Iterable[Example | tuple[str, Document]], path: str | Path) -> dict[str, int]:
    """Write each user's distinct documents in ``CORPUS_SCHEMA`` (first (user_id, doc_id) wins).

    Accepts examples or ``(user_id, document)`` pairs. Rows that the corpus validation
    rejects (e.g. blank text) are skipped and counted, not written.
    Returns ``{"rows", "duplicates", "skipped"}``.
    """
    seen: set[tuple[str, str]] = set()
    counts = {"rows": 0, "duplicates": 0, "skipped": 0}

    def rows() -> Iterator[dict[str, Any]]:
        for user_id, doc in _user_documents(items):
            if (user_id, doc.doc_id) in seen:
                counts["duplicates"] += 1
                continue
            seen.add((user_id, doc.doc_id))
            row = {"user_id": user_id, "doc_id": doc.doc_id, "text": doc.text, "timestamp": parse_timestamp(doc.timestamp)}
            if check_row(row) is not None:
                counts["skipped"] += 1
                continue
            yield normalize_row(row)

    with _atomic_writer(path, CORPUS_SCHEMA) as writer:
        for batch in _batched(rows(), 8 * _ROWS_PER_GROUP):
            writer.write_table(pa.Table.from_pylist(batch, schema=CORPUS_SCHEMA))
            counts["rows"] += len(batch)
    return counts
