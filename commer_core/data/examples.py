"""The training-data model (Example, Document) and its Parquet files.

Why one model for every dataset: the trainer, the evaluator and the Beam job should
not care whether an example came from LaMP or PerLTQA. Examples are written as
Parquet (loadable with ``datasets.load_dataset("parquet", ...)``) and users'
documents in the corpus schema, so the very same users can be compressed by the
nightly job. The readers (``lamp``, ``perltqa``) build on this module and the
conversion of official files (``prepare``) on them; this module imports neither.
Examples are read from any Arrow batches with the columns of :data:`EXAMPLE_SCHEMA`
(checked by :func:`check_example_columns`), so a Hugging Face ``datasets`` table reads
the same way as this module's own files (``sources``).
"""

from __future__ import annotations

import json
import random
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


class ExampleColumnsError(DataFormatError):
    """An examples table (Parquet file, ``datasets`` folder) lacks the columns train and evaluate read."""


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


#: What an examples table must hold; ``target`` (None: unlabelled) and a document's ``timestamp`` may be absent.
REQUIRED_COLUMNS = ("example_id", "user_id", "input", "documents")
REQUIRED_DOCUMENT_FIELDS = ("doc_id", "text")
_EXPECTED = ("expected columns example_id, user_id, input, target (optional), documents (a list of "
             "{doc_id, text, timestamp (optional)}), as `commer-pipeline prepare` writes them")


def _document_fields(kind: pa.DataType) -> list[str] | None:
    """Field names of a documents column: a list of structs, or the struct of lists that
    ``datasets``' ``Sequence({...})`` feature stores; None for anything else."""
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_struct(kind.value_type):
        return [f.name for f in kind.value_type]
    if pa.types.is_struct(kind) and all(pa.types.is_list(f.type) or pa.types.is_large_list(f.type) for f in kind):
        return [f.name for f in kind]
    return None


def check_example_columns(schema: pa.Schema, source: str) -> list[str]:
    """The columns to read from ``schema``; :class:`ExampleColumnsError` naming ``source`` if some are missing."""
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        problem = "missing column(s) " + ", ".join(repr(c) for c in missing)
    elif (fields := _document_fields(schema.field("documents").type)) is None:
        problem = f"column 'documents' is {schema.field('documents').type}, not a list of documents"
    else:
        lacking = [f for f in REQUIRED_DOCUMENT_FIELDS if f not in fields]
        problem = "documents lack field(s) " + ", ".join(repr(f) for f in lacking) if lacking else ""
    if problem:
        raise ExampleColumnsError(f"{source}: not an examples table: {problem} (it has {', '.join(schema.names)}); "
                                  f"{_EXPECTED}")
    return [c for c in EXAMPLE_SCHEMA.names if c in schema.names]


def _timestamp(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None if value is None else str(value)


def _example(row: dict[str, Any]) -> Example:
    documents = row.get("documents") or []
    if isinstance(documents, dict):  # datasets' Sequence({...}): a struct of lists
        documents = [dict(zip(documents, values)) for values in zip(*documents.values())]
    return Example(
        example_id=str(row["example_id"]),
        user_id=str(row["user_id"]),
        input=row["input"],
        target=row.get("target"),
        documents=[Document(str(d["doc_id"]), d["text"], _timestamp(d.get("timestamp"))) for d in documents],
    )


def examples_from_batches(batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[Example]:
    """Examples from Arrow batches whose columns passed :func:`check_example_columns`."""
    for batch in batches:
        yield from map(_example, batch.to_pylist())


def iter_examples_parquet(path: str | Path) -> Iterator[Example]:
    """Stream examples from an examples Parquet file (ours or any with the columns), one batch at a time."""
    parquet = pq.ParquetFile(path)
    columns = check_example_columns(parquet.schema_arrow, str(path))
    yield from examples_from_batches(parquet.iter_batches(columns=columns))


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


def sample_corpus_texts(path: str | Path, n: int, seed: int) -> list[str]:
    """``n`` document texts of a user corpus drawn without replacement (all when it holds fewer).

    For statistics of a checkpoint's prompts over a population (its centre, the mean of its
    user part) that should not depend on one user's documents or on the corpus's row order.
    """
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return random.Random(seed).sample(texts, min(n, len(texts)))
