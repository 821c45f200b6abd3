"""Per-document tables beside the store: the document index and the compression cache.

Why: an incremental run must know which documents a stored mean already covers (the
index: one row per ``(user_id, doc_id, text_sha256)`` averaged into the user's row),
and, to take an edited or deleted document out of a mean exactly without re-running
the model, what each document compressed to (the optional cache, keyed by the same
document key plus the checkpoint fingerprint that produced it).
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from schemas.corpus import doc_field


def text_sha256(text: str) -> str:
    """Hex SHA-256 of a document's UTF-8 text: its identity across nightly runs."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_KEY_FIELDS = [
    doc_field("user_id", pa.string(), "The user the document belongs to.", nullable=False),
    doc_field("doc_id", pa.string(), "The document's id within its user.", nullable=False),
    doc_field("text_sha256", pa.string(), "Hex SHA-256 of the document's UTF-8 text.", nullable=False),
]

#: One row per document averaged into a store's user rows.
DOCUMENT_INDEX_SCHEMA: pa.Schema = pa.schema(
    _KEY_FIELDS,
    metadata={"doc": "ComMer document index: the documents each user's stored mean covers."},
)


def doc_cache_schema(k: int, d: int) -> pa.Schema:
    """One cached ``k x d`` compression per (document key, checkpoint fingerprint)."""
    from schemas.store import store_schema

    embedding = store_schema(k, d).field("embedding")
    return pa.schema(
        _KEY_FIELDS
        + [
            doc_field("checkpoint_fingerprint", pa.string(), "The compressor that produced it.", nullable=False),
            embedding.with_metadata({"doc": "The document's compression, row-major k x d, float32."}),
        ],
        metadata={"doc": "ComMer compression cache", "num_embeddings": str(k), "hidden_size": str(d)},
    )
