"""The user-corpus table: one row per (user, document), the input of the nightly job.

Why a fixed schema: the Beam job, the trainer's ``prepare`` step and users' own
exports must agree on names and types before a single document is tokenized.
``schemas.validation`` checks files and rows against it.

Also home of :func:`doc_field`, which the other schema modules use so that every
field carries its meaning as ``{"doc": ...}`` metadata into the Parquet footer.
"""

from __future__ import annotations

import pyarrow as pa


def doc_field(name: str, type_: pa.DataType, doc: str, *, nullable: bool = True) -> pa.Field:
    """A field whose meaning travels with the data: ``{"doc": ...}`` lands in Parquet metadata."""
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


def field_doc(field: pa.Field) -> str:
    """The ``doc`` metadata of a field ("" when absent), for messages and generated docs."""
    return (field.metadata or {}).get(b"doc", b"").decode("utf-8")


#: Unit and zone of every timestamp we write (microseconds, UTC).
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

#: The corpus schema as written by this project.
CORPUS_SCHEMA: pa.Schema = pa.schema(
    [
        doc_field(
            "user_id",
            pa.string(),
            "Stable identifier of the user the document belongs to; documents are mean-pooled per user_id.",
            nullable=False,
        ),
        doc_field(
            "doc_id",
            pa.string(),
            "Identifier of the document, unique within its user (integer ids in inputs are stringified).",
            nullable=False,
        ),
        doc_field(
            "text",
            pa.string(),
            "The document's raw text (valid UTF-8, not blank); it is compressed into k vectors.",
            nullable=False,
        ),
        doc_field(
            "timestamp",
            TIMESTAMP_TYPE,
            "When the document was written, if known (UTC). Optional column; used by 'recent' selection.",
            nullable=True,
        ),
    ],
    metadata={"doc": "ComMer user corpus: one row per (user_id, doc_id) document."},
)
