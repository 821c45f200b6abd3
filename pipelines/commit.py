"""Write one run's output as a new store version, then commit it: manifest, then ``LATEST``.

Protocol (any Beam filesystem: local, gs://, s3://):

1. the pipeline writes shards under ``OUTPUT/v-<run id>/`` (Beam's sinks themselves
   write to temp files and rename on success); nothing points there yet;
2. after the pipeline has finished, :func:`staged_counts` reads the staged footers
   (row counts) and the ``n_docs`` column, which the launcher checks against the
   job's metrics (rows read = documents + dead letters);
3. :func:`commit` writes the version's ``_MANIFEST.json`` (temp name, then rename),
   then replaces ``OUTPUT/LATEST`` (temp name, then rename) with the version's name:
   that single replacement is the commit. Older versions beyond ``keep_versions``
   and abandoned (manifest-less) older ones are removed afterwards.

No step touches the previous version's files, so a run killed at any point leaves
the previous committed store readable and unchanged; its leftovers are an unreferenced
``v-*`` directory, which the next successful run removes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from commer_core.errors import CommerError
from commer_core.files import is_local_uri, local_path
from commer_core.store import (
    DEAD_LETTER_GLOB,
    DEAD_LETTER_PREFIX,
    DOCUMENTS_GLOB,
    DOCUMENTS_PREFIX,
    EMBEDDINGS_GLOB,
    EMBEDDINGS_PREFIX,
    LATEST_NAME,
    MANIFEST_NAME,
    VERSION_PREFIX,
)
from pipelines.faults import pause_point
from pipelines.options import KEEP_VERSIONS  # the default: the new version and the one before (for rollback)
from schemas import StoreManifest

log = logging.getLogger(__name__)

#: Parquet codec of every file the job writes (Beam's default is none).
PARQUET_CODEC = "zstd"


class CommitError(CommerError, RuntimeError):
    """The output could not be committed; the directory holds no (new) manifest."""


@dataclass(frozen=True)
class StagingArea:
    """The version directory one run writes; it becomes the store when :func:`commit` points LATEST at it."""

    output: str
    run_id: str
    part: str = ""  # keeps the output files of one run's user buckets apart

    @property
    def version(self) -> str:
        return VERSION_PREFIX + self.run_id

    def for_part(self, part: str) -> StagingArea:
        """The same version directory, with ``part`` in the names of the files written through it."""
        return replace(self, part=part)

    def _prefix(self, name: str) -> str:
        return FileSystems.join(self.root, f"{name}-{self.part}" if self.part else name)

    @property
    def root(self) -> str:
        return FileSystems.join(self.output, self.version)

    @property
    def embeddings_prefix(self) -> str:
        return self._prefix(EMBEDDINGS_PREFIX)

    @property
    def dead_letter_prefix(self) -> str:
        return self._prefix(DEAD_LETTER_PREFIX)

    def embedding_files(self) -> list[str]:
        return match_files(FileSystems.join(self.root, EMBEDDINGS_GLOB))

    def dead_letter_files(self) -> list[str]:
        return match_files(FileSystems.join(self.root, DEAD_LETTER_GLOB))

    @property
    def documents_prefix(self) -> str:
        return self._prefix(DOCUMENTS_PREFIX)

    def document_files(self) -> list[str]:
        return match_files(FileSystems.join(self.root, DOCUMENTS_GLOB))


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
        pause_point("write_shard")

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


def match_files(pattern: str) -> list[str]:
    """Paths matching a Beam filesystem pattern, sorted ([] when nothing matches)."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # Beam raises BeamIOError when nothing matches on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


def _parquet_file(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def staged_counts(area: StagingArea) -> dict[str, int]:
    """users, documents (sum of n_docs), indexed documents, dead_letters and file counts of the staged output."""
    users = documents = dead = indexed = 0
    embedding_files, dead_files, index_files = area.embedding_files(), area.dead_letter_files(), area.document_files()
    for path in embedding_files:
        with _parquet_file(path) as fh:
            table = pq.ParquetFile(fh).read(columns=["n_docs"])
        users += table.num_rows
        documents += int(sum(table.column("n_docs").to_pylist()))
    for path in dead_files:
        with _parquet_file(path) as fh:
            dead += pq.ParquetFile(fh).metadata.num_rows
    for path in index_files:
        with _parquet_file(path) as fh:
            indexed += pq.ParquetFile(fh).metadata.num_rows
    return {
        "users": users,
        "documents": documents,
        "indexed_documents": indexed,
        "dead_letters": dead,
        "embedding_files": len(embedding_files),
        "dead_letter_files": len(dead_files),
    }


def commit(area: StagingArea, manifest: StoreManifest, keep_versions: int = KEEP_VERSIONS) -> list[str]:
    """Write the version's manifest, then point ``LATEST`` at it; returns the version's files."""
    files = area.embedding_files() + area.document_files() + area.dead_letter_files()
    if not area.embedding_files():
        raise CommitError(f"nothing staged under {area.root}: the pipeline wrote no embeddings file")
    pause_point("before_manifest")
    try:
        previous = read_latest(area.output)
        _write_atomically(FileSystems.join(area.root, MANIFEST_NAME), manifest.to_json(), area.run_id)
        pause_point("before_latest")
        _write_atomically(FileSystems.join(area.output, LATEST_NAME), area.version + "\n", area.run_id)
    except Exception as exc:
        raise CommitError(f"could not commit the store in {area.output}: {exc}") from exc
    prune_versions(area.output, area.version, keep_versions, previous or None)
    return files


def _write_atomically(path: str, text: str, run_id: str) -> None:
    """Write to a temporary sibling, then rename over ``path``.

    Never deletes ``path`` first: a crash between a delete and the rename would leave no
    pointer at all. Local renames replace atomically (``os.rename``); on object stores a
    rename is a copy onto the destination, and a single object write is atomic. One code
    path for every filesystem (Beam's), local included, so the commit order is the same
    everywhere (tests watch it through ``FileSystems.rename``).
    """
    temp = f"{path}.{run_id}.tmp"
    with FileSystems.create(temp) as fh:
        fh.write(text.encode("utf-8"))
    FileSystems.rename([temp], [path])


def read_latest(output: str) -> str | None:
    """The committed version ``output/LATEST`` names, "" for a flat (version-less) store, None if none."""
    latest = FileSystems.join(output, LATEST_NAME)
    try:
        if FileSystems.exists(latest):
            with FileSystems.open(latest, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                return fh.read().decode("utf-8", "replace").strip()
        return "" if FileSystems.exists(FileSystems.join(output, MANIFEST_NAME)) else None
    except Exception as exc:  # an unreadable location is not a store we may overwrite blindly
        raise CommitError(f"cannot read {latest}: {exc}") from exc


def list_versions(output: str) -> dict[str, bool]:
    """``{version name: committed?}`` of the ``v-*`` directories under ``output``."""
    versions: dict[str, bool] = {}
    prefix = output.rstrip("/") + "/"
    for path in match_files(FileSystems.join(output, VERSION_PREFIX + "*", "*")):
        relative = path[len(prefix):] if path.startswith(prefix) else path
        name, _, rest = relative.partition("/")
        if name.startswith(VERSION_PREFIX):
            versions[name] = versions.get(name, False) or rest == MANIFEST_NAME
    return versions


def prune_versions(output: str, current: str, keep_versions: int, previous: str | None = None) -> list[str]:
    """Remove versions older than ``current`` beyond the ``keep_versions - 1`` most recent committed ones.

    ``previous`` (what LATEST named before this commit) is the first one kept; a version
    that has a manifest but was never made LATEST (a run killed just before) comes after
    it. Versions without a manifest (failed runs) are removed, and versions newer than
    ``current`` (a concurrent run's) are never touched. Best effort: leftovers only cost
    space, since readers follow LATEST.
    """
    versions = list_versions(output)
    older = sorted((v for v in versions if v < current), reverse=True)
    committed = [v for v in older if versions[v]]
    if previous in committed:
        committed.remove(previous)
        committed.insert(0, previous)
    keep = set(committed[: max(keep_versions - 1, 0)])
    removed = [v for v in older if v not in keep]
    for version in removed:
        _delete_tree(FileSystems.join(output, version))
    return removed


def abandon(area: StagingArea) -> None:
    """Best-effort removal of a failed run's version directory."""
    _delete_tree(area.root)


def _delete_tree(root: str) -> None:
    root = root.rstrip("/")
    try:
        if is_local_uri(root):  # a real directory; file:// stripped (Beam has no filesystem for that scheme)
            path = str(local_path(root))
            if FileSystems.exists(path):
                FileSystems.delete([path])
        elif match_files(root + "/**"):  # object stores: a trailing slash deletes the whole prefix
            FileSystems.delete([root + "/"])
    except Exception as exc:  # leftovers are harmless: readers follow LATEST
        log.warning("could not remove %s: %s", root, exc)
