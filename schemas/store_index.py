"""The lookup index of a store version: user -> row, and what a reader needs to read that row.

Why: a service looks up a few users per request in a store of millions. Without an index
the reader evaluates the ``user_id`` statistics of every row group (linear in the number of
users, a 14 MB footer at 1M users). The job writes two small Parquet files into every
version it commits, before the manifest, which lists them (:class:`StoreIndexInfo`):

- ``_INDEX.parquet`` (:data:`INDEX_USERS_SCHEMA`): every user id, sorted (byte order), and
  its row number in the version (rows counted across the embedding files in the order of
  the files table);
- ``_INDEX_FILES.parquet`` (:data:`INDEX_FILES_SCHEMA`): one row per embedding file: its
  name, size, row groups (rows and the byte range holding the ``embedding`` .. ``n_docs``
  column chunks of each) and the file's Parquet footer cut per row group
  (``commer_core.parquet_footer``), so that a reader needs no request to the embedding
  files before reading the one byte range that holds a user, and parses and holds only the
  footer entries of the row groups it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from schemas.corpus import doc_field

#: File names inside a version directory.
INDEX_USERS_NAME = "_INDEX.parquet"
INDEX_FILES_NAME = "_INDEX_FILES.parquet"
#: Highest index format this code reads and the one it writes.
INDEX_FORMAT_VERSION = 1

INDEX_USERS_SCHEMA = pa.schema(
    [
        doc_field("user_id", pa.string(), "Every user of the version once, sorted by UTF-8 bytes.", nullable=False),
        doc_field("row", pa.uint32(), "The user's row in the version: embedding files in the files table's "
                  "order, rows counted from 0.", nullable=False),
    ],
    metadata={"doc": "ComMer store lookup index: user -> row."},
)

INDEX_FILES_SCHEMA = pa.schema(
    [
        doc_field("name", pa.string(), "Embedding file name, relative to the version directory.", nullable=False),
        doc_field("size", pa.int64(), "The file's size in bytes.", nullable=False),
        doc_field("footer_head", pa.binary(), "The file's Parquet footer up to its num_rows value.", nullable=False),
        doc_field("footer_middle", pa.binary(), "The footer between num_rows and the row_groups list.",
                  nullable=False),
        doc_field("footer_tail", pa.binary(), "The footer after the row_groups list.", nullable=False),
        doc_field("row_group_footers", pa.list_(pa.field("item", pa.binary(), nullable=False)),
                  "Each row group's own footer entry (commer_core.parquet_footer splices them back).",
                  nullable=False),
        doc_field("row_group_rows", pa.list_(pa.field("item", pa.int32(), nullable=False)),
                  "Rows of each row group, in file order.", nullable=False),
        doc_field("read_offset", pa.list_(pa.field("item", pa.int64(), nullable=False)),
                  "Per row group: where its embedding .. n_docs column chunks start.", nullable=False),
        doc_field("read_length", pa.list_(pa.field("item", pa.int64(), nullable=False)),
                  "Per row group: the bytes those column chunks span.", nullable=False),
    ],
    metadata={"doc": "ComMer store lookup index: the embedding files and their row groups."},
)


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class StoreIndexInfo:
    """The manifest's record of the version's lookup index (``StoreManifest.index``)."""

    users_file: str = field(metadata=_doc("The user -> row file (_INDEX.parquet)."))
    files_file: str = field(metadata=_doc("The embedding files table (_INDEX_FILES.parquet)."))
    users: int = field(metadata=_doc("Users in the index; equals the store's users."))
    files: int = field(metadata=_doc("Embedding files the index covers."))
    format_version: int = field(default=INDEX_FORMAT_VERSION, metadata=_doc("Index format version (currently 1)."))

    def __post_init__(self) -> None:
        for name in ("users_file", "files_file"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
                raise ValueError(f"manifest field 'index.{name}' must be a file name in the version (got {value!r})")
        for name in ("users", "files", "format_version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"manifest field 'index.{name}' must be an int >= 0 (got {value!r})")
        if self.format_version > INDEX_FORMAT_VERSION:
            raise ValueError(f"manifest field 'index.format_version' is {self.format_version}; "
                             f"this code reads up to {INDEX_FORMAT_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        return {"users_file": self.users_file, "files_file": self.files_file, "users": self.users,
                "files": self.files, "format_version": self.format_version}

    @classmethod
    def from_dict(cls, data: Any) -> StoreIndexInfo:
        """Parse a manifest's ``index`` object; ``ValueError`` names a missing or bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"manifest field 'index' must be an object (got {type(data).__name__})")
        for name in ("users_file", "files_file", "users", "files"):
            if name not in data:
                raise ValueError(f"manifest field 'index.{name}' is missing")
        return cls(**{k: data[k] for k in ("users_file", "files_file", "users", "files", "format_version") if k in data})
