"""Stage the job's Parquet output, then commit it with ``_MANIFEST.json`` written last.

Protocol (any Beam filesystem: local, gs://, s3://):

1. the pipeline writes shards under ``OUTPUT/_staging-<run id>/`` (Beam's sinks
   themselves write to temp files and rename on success);
2. after the pipeline has finished, :func:`staged_counts` reads the staged footers
   (row counts) and the ``n_docs`` column, which the launcher checks against the
   job's metrics (rows read = documents + dead letters);
3. :func:`commit` removes the previous manifest first (from then on the directory is
   *not* a committed store), removes the previous shards, moves the staged shards
   into ``OUTPUT/``, and finally writes ``_MANIFEST.json`` (to a temporary name,
   then renamed), which is what makes the directory a store for readers.

A crash at any step leaves either the old committed store, or a directory without a
manifest that readers refuse; never a manifest describing files that are not there.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from commer_core.store import DEAD_LETTER_GLOB, DEAD_LETTER_PREFIX, EMBEDDINGS_GLOB, EMBEDDINGS_PREFIX, MANIFEST_NAME
from schemas import StoreManifest

log = logging.getLogger(__name__)

#: Parquet codec of every file the job writes (Beam's default is none).
PARQUET_CODEC = "zstd"
STAGING_PREFIX = "_staging-"


class CommitError(RuntimeError):
    """The output could not be committed; the directory holds no (new) manifest."""


@dataclass(frozen=True)
class StagingArea:
    """Where one run writes before it commits."""

    output: str
    run_id: str

    @property
    def root(self) -> str:
        return FileSystems.join(self.output, STAGING_PREFIX + self.run_id)

    @property
    def embeddings_prefix(self) -> str:
        return FileSystems.join(self.root, EMBEDDINGS_PREFIX)

    @property
    def dead_letter_prefix(self) -> str:
        return FileSystems.join(self.root, DEAD_LETTER_PREFIX)

    def embedding_files(self) -> list[str]:
        return _match(FileSystems.join(self.root, EMBEDDINGS_GLOB))

    def dead_letter_files(self) -> list[str]:
        return _match(FileSystems.join(self.root, DEAD_LETTER_GLOB))


class _TableWriter:
    def __init__(self, handle, writer: pq.ParquetWriter):
        self.handle, self.writer = handle, writer


class ParquetTableSink(FileBasedSink):
    """Writes ``pa.Table`` elements as Parquet, one row group per table, with an exact schema.

    Beam's ``WriteToParquetBatched`` pickles its ``pa.Schema``, and pickling a pyarrow
    ``fixed_size_list`` type drops its item field's nullability (pyarrow 25), after which
    every table of ``schemas.store_schema`` is refused as a schema mismatch. This sink
    carries the schema as Arrow IPC bytes instead, which round-trip exactly.
    """

    def __init__(self, file_path_prefix: str, schema: pa.Schema, codec: str = PARQUET_CODEC, file_name_suffix: str = ".parquet"):
        super().__init__(
            file_path_prefix,
            coder=None,
            file_name_suffix=file_name_suffix,
            mime_type="application/x-parquet",
            compression_type=CompressionTypes.UNCOMPRESSED,  # Parquet compresses its pages itself
        )
        self._schema_ipc = schema.serialize().to_pybytes()
        self._codec = codec

    @property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(self._schema_ipc))

    def open(self, temp_path: str) -> _TableWriter:
        handle = super().open(temp_path)
        return _TableWriter(handle, pq.ParquetWriter(handle, self.schema, compression=self._codec))

    def write_record(self, file_handle: _TableWriter, value: pa.Table) -> None:
        file_handle.writer.write_table(value)

    def close(self, file_handle: _TableWriter) -> None:
        file_handle.writer.close()
        file_handle.handle.close()


class WriteParquetTables(beam.PTransform):
    """``pa.Table`` elements -> Parquet shards ``PREFIX-SSSSS-of-NNNNN.parquet`` (see :class:`ParquetTableSink`)."""

    def __init__(self, file_path_prefix: str, schema: pa.Schema, codec: str = PARQUET_CODEC):
        super().__init__()
        self._sink = ParquetTableSink(file_path_prefix, schema, codec)

    def expand(self, tables: beam.PCollection) -> beam.pvalue.PDone:
        return tables | beam.io.Write(self._sink)


def new_staging_area(output: str) -> StagingArea:
    """A fresh staging area under ``output`` (created on filesystems that have directories)."""
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    area = StagingArea(output.rstrip("/") or output, run_id)
    try:
        FileSystems.mkdirs(area.root)
    except OSError:
        pass  # object stores have no directories; an existing one is fine too
    return area


def _match(pattern: str) -> list[str]:
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # Beam raises BeamIOError when nothing matches on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


def _parquet_file(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def staged_counts(area: StagingArea) -> dict[str, int]:
    """users, documents (sum of n_docs), dead_letters and file counts of the staged output."""
    users = documents = dead = 0
    embedding_files, dead_files = area.embedding_files(), area.dead_letter_files()
    for path in embedding_files:
        with _parquet_file(path) as fh:
            table = pq.ParquetFile(fh).read(columns=["n_docs"])
        users += table.num_rows
        documents += int(sum(table.column("n_docs").to_pylist()))
    for path in dead_files:
        with _parquet_file(path) as fh:
            dead += pq.ParquetFile(fh).metadata.num_rows
    return {
        "users": users,
        "documents": documents,
        "dead_letters": dead,
        "embedding_files": len(embedding_files),
        "dead_letter_files": len(dead_files),
    }


def commit(area: StagingArea, manifest: StoreManifest) -> list[str]:
    """Move the staged shards into ``area.output`` and write the manifest last; returns the final files."""
    staged = area.embedding_files() + area.dead_letter_files()
    if not area.embedding_files():
        raise CommitError(f"nothing staged under {area.root}: the pipeline wrote no embeddings file")
    output = area.output
    manifest_path = FileSystems.join(output, MANIFEST_NAME)
    try:
        if FileSystems.exists(manifest_path):
            FileSystems.delete([manifest_path])  # the old store is uncommitted from here on
        old = _match(FileSystems.join(output, EMBEDDINGS_GLOB)) + _match(FileSystems.join(output, DEAD_LETTER_GLOB))
        if old:
            FileSystems.delete(old)
        final = [FileSystems.join(output, path.rsplit("/", 1)[-1]) for path in staged]
        FileSystems.rename(staged, final)
        temp = FileSystems.join(output, f"{MANIFEST_NAME}.{area.run_id}.tmp")
        with FileSystems.create(temp) as fh:
            fh.write(manifest.to_json().encode("utf-8"))
        FileSystems.rename([temp], [manifest_path])
    except Exception as exc:
        raise CommitError(f"could not commit the store in {output}: {exc}") from exc
    abandon(area)
    return final


def abandon(area: StagingArea) -> None:
    """Best-effort removal of a staging area (after commit, or after a failed run)."""
    root = area.root.rstrip("/")
    try:
        if "://" not in root:  # local: a real directory
            if FileSystems.exists(root):
                FileSystems.delete([root])
        elif _match(root + "/**"):  # object stores: a trailing slash deletes the whole prefix
            FileSystems.delete([root + "/"])
    except Exception as exc:  # leftovers are harmless: readers ignore _staging-* entries
        log.warning("could not remove staging area %s: %s", area.root, exc)
