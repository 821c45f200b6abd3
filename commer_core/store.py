"""Read a committed embedding store: one merged ``k x d`` soft prompt per user.

A store is a directory (local, ``gs://``, ``s3://``, anything ``pyarrow.fs`` opens)
holding committed *versions*, one per run, and a pointer to the current one::

    LATEST                       the current version's name; replaced last, by the run that commits
    v-<run id>/
        embeddings-*.parquet     one row per user (``schemas.store_schema(k, d)``)
        documents-*.parquet      the documents each mean covers (``schemas.DOCUMENT_INDEX_SCHEMA``)
        dead_letter-*.parquet    rejected corpus rows with reasons (``schemas.DEAD_LETTER_SCHEMA``)
        _INDEX.parquet           the lookup index: sorted user ids -> rows (``schemas.store_index``)
        _INDEX_FILES.parquet     the lookup index: embedding files, row-group byte ranges, footers
        _MANIFEST.json           ``schemas.StoreManifest``; written last within the version, lists the index

:func:`open_store` follows ``LATEST``; it also opens a version directory directly (or
any directory with ``_MANIFEST.json`` and shards beside it). A version without
``_MANIFEST.json`` is an interrupted or foreign write, and :func:`open_store` refuses it.
Lookups go through the version's index (:mod:`commer_core.store_index`): ids are found in
memory and each row group that holds a requested user is read once, with no listing and no
footer read. Versions written before the index open with an :class:`UnindexedStoreWarning`
and are looked up with pyarrow dataset filters on the ``user_id`` statistics (time linear
in the number of row groups).

Imports pyarrow and numpy only (torch is imported lazily by ``check_compatible`` when
it is given a checkpoint directory).
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from commer_core.errors import CommerError
from schemas import StoreManifest

if TYPE_CHECKING:
    from commer_core.store_index import StoreIndex

MANIFEST_NAME = "_MANIFEST.json"
LATEST_NAME = "LATEST"
VERSION_PREFIX = "v-"
EMBEDDINGS_PREFIX = "embeddings"
DEAD_LETTER_PREFIX = "dead_letter"
DOCUMENTS_PREFIX = "documents"
EMBEDDINGS_GLOB = f"{EMBEDDINGS_PREFIX}-*.parquet"
DEAD_LETTER_GLOB = f"{DEAD_LETTER_PREFIX}-*.parquet"
DOCUMENTS_GLOB = f"{DOCUMENTS_PREFIX}-*.parquet"
_VERSION_NAME = re.compile(r"^v-[0-9A-Za-z_-]{1,100}$")


def embedding_matrix(column: pa.ChunkedArray | pa.Array, k: int, d: int) -> np.ndarray:
    """A flat ``fixed_size_list<float32>[k*d]`` column as a float32 ``(rows, k, d)`` array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, k, d)


def check_version_name(name: str, where: str) -> str:
    """A version name from ``LATEST``; never a path (no ``/``, no ``..``)."""
    if not _VERSION_NAME.match(name):
        raise StoreError(f"{where}: {LATEST_NAME} names {name[:80]!r}, which is not a store version")
    return name


class StoreError(CommerError, ValueError):
    """The location is not a committed store, or it does not fit what the caller holds."""


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The store's pyarrow filesystem: native locally, else fsspec as configured in :mod:`commer_core.storage`."""
    from commer_core.storage import StorageError, arrow_filesystem

    try:
        return arrow_filesystem(uri)
    except (StorageError, ValueError, OSError) as exc:
        raise StoreError(f"cannot open store location {uri!r}: {exc}") from exc


class UnindexedStoreWarning(UserWarning):
    """The store version has no lookup index (written before it existed): lookups scan row-group statistics."""


def _read_if_exists(fs: pafs.FileSystem, path: str) -> bytes | None:
    from commer_core.store_index import read_object

    try:
        return read_object(fs, path)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def open_store(uri: str | os.PathLike[str]) -> EmbeddingStore:
    """Open the committed store at ``uri`` (its ``LATEST`` version); :class:`StoreError` if none.

    Reads ``LATEST``, the manifest and the lookup index (on an object store: four requests);
    nothing is listed and no embedding file is touched until a lookup needs it.
    """
    uri = os.fspath(uri)
    fs, base = _filesystem(uri)
    base = base.rstrip("/")
    version, root = None, base
    pointer = _read_if_exists(fs, f"{base}/{LATEST_NAME}")
    if pointer is not None:
        version = check_version_name(pointer.decode("utf-8", "replace").strip(), uri)
        root = f"{base}/{version}"
    raw = _read_if_exists(fs, f"{root}/{MANIFEST_NAME}")
    if raw is None:
        if not _is_dir(fs, base):
            raise StoreError(f"{uri} is not a directory (no store there)")
        if version is not None and not _is_dir(fs, root):
            raise StoreError(f"{uri}: {LATEST_NAME} names {version}, which is not there")
        raise StoreError(
            f"{uri} has no {MANIFEST_NAME}: not a committed store (the job that wrote it did not finish, "
            "or it is being rewritten)"
        )
    try:
        manifest = StoreManifest.from_json(raw)
    except ValueError as exc:
        raise StoreError(f"{uri}: invalid {MANIFEST_NAME}: {exc}") from exc
    if manifest.index is None:
        warnings.warn(f"{uri}: store version {version or root} has no lookup index (written before it existed): "
                      "lookups scan row-group statistics, slow at scale; the next compress run writes one",
                      UnindexedStoreWarning, stacklevel=2)
        return EmbeddingStore(uri, fs, manifest, version=version, root=root, base=base)
    from commer_core.store_index import StoreIndex

    index = StoreIndex.load(fs, root, manifest.index)
    return EmbeddingStore(uri, fs, manifest, version=version, root=root, base=base, index=index)


def _list_version(fs: pafs.FileSystem, root: str) -> dict[str, list[str]]:
    """The version's data files by glob (embeddings, dead letters, documents), sorted."""
    names = sorted(f.base_name for f in fs.get_file_info(pafs.FileSelector(root)) if f.type == pafs.FileType.File)
    return {glob: [f"{root}/{n}" for n in names if fnmatch.fnmatch(n, glob)]
            for glob in (EMBEDDINGS_GLOB, DEAD_LETTER_GLOB, DOCUMENTS_GLOB)}


class EmbeddingStore:
    """A committed store. Build it with :func:`open_store`.

    File lists not given are listed from the version directory when first needed; with an
    ``index`` the embedding files are the index's and nothing is listed for lookups.
    """

    def __init__(
        self,
        uri: str,
        filesystem: pafs.FileSystem,
        manifest: StoreManifest,
        embedding_files: list[str] | None = None,
        dead_letter_files: list[str] | None = None,
        document_files: list[str] | None = None,
        *,
        version: str | None = None,
        root: str | None = None,
        base: str | None = None,
        index: StoreIndex | None = None,
    ) -> None:
        self.uri = uri
        self.manifest = manifest
        self.version = version  # the LATEST version opened; None for a directory opened directly
        self.root = root or uri  # where this version's files are
        self.index = index
        self._base = base  # the store directory holding LATEST (None: not known)
        self._fs = filesystem
        self._given = {EMBEDDINGS_GLOB: embedding_files, DEAD_LETTER_GLOB: dead_letter_files,
                       DOCUMENTS_GLOB: document_files}
        if index is not None:
            self._given[EMBEDDINGS_GLOB] = [f"{self.root}/{name}" for name in index.file_names]
        if not self.embedding_files:
            raise StoreError(f"{uri}: the manifest is there but no {EMBEDDINGS_GLOB} files are")
        schema = index.arrow_schema() if index is not None else self.dataset().schema
        self._check_embedding_field(schema.field("embedding") if "embedding" in schema.names else None)

    def _check_embedding_field(self, field: pa.Field | None) -> None:
        expected = self.num_embeddings * self.hidden_size
        if field is None or not pa.types.is_fixed_size_list(field.type) or field.type.list_size != expected:
            raise StoreError(
                f"{self.uri}: embedding column is {field.type if field else 'missing'}, but the manifest says "
                f"k={self.num_embeddings} x d={self.hidden_size} = {expected} values per user"
            )

    def _files(self, glob: str) -> list[str]:
        given = self._given[glob]
        return list(given) if given is not None else self._listing[glob]

    @cached_property
    def _listing(self) -> dict[str, list[str]]:
        return _list_version(self._fs, self.root)

    @property
    def embedding_files(self) -> list[str]:
        return self._files(EMBEDDINGS_GLOB)

    @property
    def dead_letter_files(self) -> list[str]:
        return self._files(DEAD_LETTER_GLOB)

    @property
    def document_files(self) -> list[str]:
        return self._files(DOCUMENTS_GLOB)

    def latest_version(self) -> str | None:
        """The version ``LATEST`` names now (one small read); None for a store opened as a directory."""
        if self.version is None or self._base is None:
            return None
        pointer = _read_if_exists(self._fs, f"{self._base}/{LATEST_NAME}")
        return None if pointer is None else pointer.decode("utf-8", "replace").strip()

    # -- what the store is ----------------------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return self.manifest.num_embeddings

    @property
    def hidden_size(self) -> int:
        return self.manifest.hidden_size

    @property
    def checkpoint_fingerprint(self) -> str:
        return self.manifest.checkpoint_fingerprint

    @cached_property
    def _dataset(self) -> ds.Dataset:
        return ds.dataset(self.embedding_files, format="parquet", filesystem=self._fs)

    def dataset(self) -> ds.Dataset:
        """The embeddings as a ``pyarrow.dataset.Dataset`` (for custom scans; reads the files' footers)."""
        return self._dataset

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else self._dataset.count_rows()

    def __repr__(self) -> str:
        return (
            f"EmbeddingStore({self.uri!r}, version={self.version}, k={self.num_embeddings}, d={self.hidden_size}, "
            f"checkpoint={self.checkpoint_fingerprint[:12]}, files={len(self.embedding_files)})"
        )

    # -- compatibility ----------------------------------------------------------------------
    def check_compatible(self, checkpoint: str | os.PathLike[str] | Mapping[str, Any]) -> None:
        """Raise :class:`StoreError` unless the store's soft prompts belong with ``checkpoint``.

        ``checkpoint`` is a checkpoint directory (its fingerprint must equal the manifest's:
        the exact compressor that produced the store) or a checkpoint config mapping as
        ``commer_core.checkpoint.read_config`` returns it (then k, d and the base model's
        weights are compared, since a config alone carries no fingerprint).
        """
        if isinstance(checkpoint, Mapping):
            config = checkpoint
            actual_fp = None
        else:
            from commer_core.checkpoint import CheckpointError, fingerprint, read_config

            try:
                config = read_config(checkpoint)
            except (CheckpointError, OSError) as exc:
                raise StoreError(f"cannot check {self.uri} against {checkpoint}: {exc}") from exc
            actual_fp = fingerprint(checkpoint)
        try:
            k = int(config["compressor"]["num_embeddings"])
            d = config["compressor"].get("hidden_size")
            base_sha = config.get("base_model", {}).get("weights_sha256")
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"not a checkpoint config: missing {exc}") from exc
        problems = []
        if actual_fp is not None and actual_fp != self.checkpoint_fingerprint:
            problems.append(
                f"checkpoint fingerprint {actual_fp[:12]}... != store's {self.checkpoint_fingerprint[:12]}..."
            )
        if k != self.num_embeddings:
            problems.append(f"k={k} != store's k={self.num_embeddings}")
        if d is not None and int(d) != self.hidden_size:
            problems.append(f"d={d} != store's d={self.hidden_size}")
        if base_sha and self.manifest.base_model_sha256 and base_sha != self.manifest.base_model_sha256:
            problems.append("the base model weights differ from the store's")
        if problems:
            raise StoreError(f"store {self.uri} does not match the checkpoint: " + "; ".join(problems))

    # -- lookups ---------------------------------------------------------------------------
    def get(self, user_ids: Iterable[str]) -> dict[str, tuple[np.ndarray, int]]:
        """``{user_id: (float32[k, d] soft prompt, n_docs)}`` for the ids present in the store.

        Ids absent from the store are absent from the result (with an index, at no I/O). With
        an index one byte range is read per row group holding a requested id; without one,
        the row groups whose ``user_id`` statistics can hold an id.
        """
        wanted = sorted({u for u in user_ids})
        bad = [u for u in wanted if not isinstance(u, str)]
        if bad:
            raise TypeError(f"user ids must be str, got {type(bad[0]).__name__}")
        if not wanted:
            return {}
        if self.index is not None:
            shape = (self.num_embeddings, self.hidden_size)
            return {u: (np.array(v, dtype=np.float32).reshape(shape), n)
                    for u, (v, n) in self.index.read(self._fs, wanted).items()}
        table = self._dataset.to_table(
            columns=["user_id", "embedding", "n_docs"], filter=pc.field("user_id").isin(wanted)
        )
        return self._rows_to_dict(table)

    def _rows_to_dict(self, table: pa.Table) -> dict[str, tuple[np.ndarray, int]]:
        users = table.column("user_id").to_pylist()
        if len(set(users)) != len(users):
            raise StoreError(f"{self.uri}: a user appears in more than one row")
        emb = embedding_matrix(table.column("embedding"), self.num_embeddings, self.hidden_size)
        n_docs = table.column("n_docs").to_pylist()
        return {u: (emb[i].copy(), int(n_docs[i])) for i, u in enumerate(users)}

    def users(self) -> list[str]:
        """Every user id in the store, sorted (from the index; else reads the ``user_id`` column)."""
        if self.index is not None:
            return self.index.users().to_pylist()
        return sorted(self._dataset.to_table(columns=["user_id"]).column("user_id").to_pylist())

    # Over fsspec (s3://, gs://) the readers below fetch in the calling thread: Arrow's scanner would call the
    # Python filesystem from its own I/O threads, and one still reading ahead when the interpreter exits aborts
    # the process ("terminate called without an active exception", apache/arrow#39162, #34314).
    def head(self, n: int = 5) -> pa.Table:
        """The first ``n`` rows of the store (in file order)."""
        from commer_core.store_index import fsspec_of

        if fsspec_of(self._fs) is None:
            return self._dataset.head(n)
        batches: list[pa.RecordBatch] = []
        rows = 0
        for path in self.embedding_files:
            with self._fs.open_input_file(path) as fh:
                reader = pq.ParquetFile(fh, pre_buffer=False)
                for batch in reader.iter_batches(batch_size=max(n, 1), use_threads=False):
                    batches.append(batch.slice(0, n - rows))
                    rows += batches[-1].num_rows
                    if rows >= n:
                        return pa.Table.from_batches(batches)
        return pa.Table.from_batches(batches, schema=reader.schema_arrow)

    def _whole(self, paths: list[str], empty: pa.Schema) -> pa.Table:
        from commer_core.store_index import fsspec_of, read_object

        if not paths:
            return empty.empty_table()
        if fsspec_of(self._fs) is None:
            return ds.dataset(paths, format="parquet", filesystem=self._fs).to_table()
        return pa.concat_tables([pq.read_table(pa.BufferReader(read_object(self._fs, p))) for p in paths])

    def dead_letters(self) -> pa.Table:
        """Every dead-lettered row (empty table when there were none)."""
        from schemas import DEAD_LETTER_SCHEMA

        return self._whole(self.dead_letter_files, DEAD_LETTER_SCHEMA)

    def documents(self) -> pa.Table:
        """The document index: ``(user_id, doc_id, text_sha256)`` of every document the means cover."""
        from schemas import DOCUMENT_INDEX_SCHEMA

        return self._whole(self.document_files, DOCUMENT_INDEX_SCHEMA)
