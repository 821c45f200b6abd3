"""Write one run's output as a new store version, then commit it: manifest, then ``LATEST``.

Protocol (any Beam filesystem: local, gs://, s3://):

1. the pipeline writes shards under ``OUTPUT/v-<run id>/`` (Beam's sinks themselves
   write to temp files and rename on success); nothing points there yet;
2. after the pipeline has finished, :func:`staged_counts` reads the staged footers
   (row counts) and the ``n_docs`` column, which the launcher checks against the
   job's metrics (rows read = documents + dead letters);
3. :func:`commit` is a compare-and-swap on ``OUTPUT/LATEST`` (:func:`swap_latest`): under
   the store's commit lock it checks that ``LATEST`` still names the version the run read
   at launch (``expected_latest``), writes the version's ``_MANIFEST.json`` (temp name,
   then rename), then replaces ``LATEST`` (temp name, then rename) with the version's
   name: that single replacement is the commit. If another run committed in between, the
   run fails with :class:`LatestMovedError` and writes nothing (its launcher removes the
   staged version). Still under the lock, older committed versions beyond
   ``keep_versions`` are removed, and uncommitted (manifest-less) versions only once
   nothing has been written into them for :data:`STALE_UNCOMMITTED_SECONDS`: a fresh one
   may be a concurrent run's, still being written.

No step touches the previous version's files, so a run killed at any point leaves
the previous committed store readable and unchanged; its leftovers are an unreferenced
``v-*`` directory, which a successful run removes once it is a day old.

The lock (:func:`commit_lock`) is an ``flock`` on ``OUTPUT/LATEST.lock`` on local (and
NFS/POSIX) filesystems: the kernel releases it when its holder dies, so a killed run never
leaves a stale lock. Object stores (s3://, gs://) have no lock: ``LATEST`` is replaced by
one conditional write on the version token read with it (S3 ``If-Match`` ETag /
``If-None-Match: *``, GCS ``ifGenerationMatch``), so of two runs that read the same
``LATEST`` the store itself lets exactly one write it (:func:`swap_latest`). Other remote
filesystems (no conditional write here) write ``LATEST`` unconditionally, with a warning.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from commer_core.errors import CommerError
from commer_core.files import is_local_uri
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
from pipelines.commit_lock import LOCK_NAME, LOCK_WAIT_SECONDS, commit_lock  # noqa: F401  (re-exported)
from pipelines.faults import pause_point
from pipelines.versions import (  # noqa: F401  (re-exported: callers import them from here)
    STALE_UNCOMMITTED_SECONDS,
    TEMP_DIR_PREFIX,
    VersionInfo,
    _delete_tree,
    list_versions,
    match_files,
    prune_versions,
    remove_stale_temp_dirs,
    scan_versions,
    version_started,
)
from pipelines.options import KEEP_VERSIONS  # the default: the new version and the one before (for rollback)
from schemas import StoreManifest

log = logging.getLogger(__name__)

#: Parquet codec of every file the job writes (Beam's default is none).
PARQUET_CODEC = "zstd"


class CommitError(CommerError, RuntimeError):
    """The output could not be committed; the directory holds no (new) manifest."""


class LatestMovedError(CommitError):
    """Another run committed into the same store after this run read ``LATEST`` at launch."""


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

    def __init__(self, file_path_prefix: str, schema: pa.Schema, codec: str = PARQUET_CODEC, file_name_suffix: str = ".parquet",
                 options: dict | None = None):
        super().__init__(
            file_path_prefix,
            coder=None,
            file_name_suffix=file_name_suffix,
            mime_type="application/x-parquet",
            compression_type=CompressionTypes.UNCOMPRESSED,  # Parquet compresses its pages itself
        )
        self._schema_ipc = schema.serialize().to_pybytes()
        self._codec = codec
        self._options = dict(options or {})  # more pq.ParquetWriter arguments (the store's: store_tables.store_writer_options)

    @property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(self._schema_ipc))

    def open(self, temp_path: str) -> _TableWriter:
        handle = super().open(temp_path)
        return _TableWriter(handle, pq.ParquetWriter(handle, self.schema, **{"compression": self._codec, **self._options}))

    def write_record(self, file_handle: _TableWriter, value: pa.Table) -> None:
        file_handle.writer.write_table(value)
        pause_point("write_shard")

    def close(self, file_handle: _TableWriter) -> None:
        file_handle.writer.close()
        file_handle.handle.close()


class WriteParquetTables(beam.PTransform):
    """``pa.Table`` elements -> Parquet shards ``PREFIX-SSSSS-of-NNNNN.parquet`` (see :class:`ParquetTableSink`)."""

    def __init__(self, file_path_prefix: str, schema: pa.Schema, codec: str = PARQUET_CODEC, options: dict | None = None):
        super().__init__()
        self._sink = ParquetTableSink(file_path_prefix, schema, codec, options=options)

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


def commit(area: StagingArea, manifest: StoreManifest, keep_versions: int = KEEP_VERSIONS, *,
           expected_latest: str | None) -> list[str]:
    """Compare-and-swap ``LATEST`` from ``expected_latest`` (what it named at launch: None for no
    store, "" for a flat one) to this version, writing the manifest first; returns the version's files.

    Raises :class:`LatestMovedError` (nothing written) when another run committed meanwhile.
    """
    files = area.embedding_files() + area.document_files() + area.dead_letter_files()
    if not area.embedding_files():
        raise CommitError(f"nothing staged under {area.root}: the pipeline wrote no embeddings file")
    from pipelines.store_index import write_index  # the lookup index; the manifest returned lists it

    manifest, index_files = write_index(area.root, manifest)
    pause_point("before_manifest")
    swap_latest(area, manifest, expected_latest, keep_versions)
    return files + index_files


def swap_latest(area: StagingArea, manifest: StoreManifest, expected_latest: str | None, keep_versions: int) -> None:
    """The commit itself, the one place that moves ``LATEST``: under :func:`commit_lock`, check
    that ``LATEST`` still names ``expected_latest``, write the manifest, replace ``LATEST``,
    then prune old versions (locally still under the lock, so no prune sees a half-made commit).

    On s3:// and gs:// there is no lock: ``LATEST`` is replaced by a conditional write on the
    version token read with it (:func:`commer_core.storage.write_if`), so of two runs that
    read the same ``LATEST`` exactly one can replace it; the other fails here.
    """
    try:
        with commit_lock(area.output):
            current, token = _read_latest_for_swap(area.output)
            if current != expected_latest:
                raise LatestMovedError(_moved(expected_latest, current))
            _write_atomically(FileSystems.join(area.root, MANIFEST_NAME), manifest.to_json(), area.run_id)
            pause_point("before_latest")
            _replace_latest(area, expected_latest, token)
            removed = prune_versions(area.output, area.version, keep_versions, current or None)
            remove_stale_temp_dirs(
                [FileSystems.join(area.output, v) for v in sorted(set(list_versions(area.output)) - set(removed))],
                area.run_id,
            )
            pause_point("after_latest")
    except CommitError:
        raise
    except Exception as exc:
        raise CommitError(f"could not commit the store in {area.output}: {exc}") from exc


def _moved(expected: str | None, current: str | None) -> str:
    return (f"LATEST moved from {_describe(expected)} to {_describe(current)} while this run was computing; "
            "nothing committed (rerun to include the other run's users)")


def _conditional(output: str) -> bool:
    """Whether ``output``'s ``LATEST`` is swapped by a conditional write (object stores that have one)."""
    from commer_core.storage import CONDITIONAL_PROTOCOLS, protocol

    return protocol(output) in CONDITIONAL_PROTOCOLS


def _read_latest_for_swap(output: str) -> tuple[str | None, str | None]:
    """What ``LATEST`` names now (as :func:`read_latest`) and, on object stores, its version token."""
    if not _conditional(output):
        return read_latest(output), None
    from commer_core.storage import read_versioned

    data, token = read_versioned(FileSystems.join(output, LATEST_NAME))
    if data is not None:
        return data.decode("utf-8", "replace").strip(), token
    return ("" if FileSystems.exists(FileSystems.join(output, MANIFEST_NAME)) else None), None


def _replace_latest(area: StagingArea, expected: str | None, token: str | None) -> None:
    """Point ``LATEST`` at ``area``'s version: a rename locally (under the lock), a conditional write
    on object stores (:class:`LatestMovedError` when another run's write came first)."""
    latest = FileSystems.join(area.output, LATEST_NAME)
    if not _conditional(area.output):
        if not is_local_uri(area.output):
            log.warning("%s: no conditional write on this filesystem; two runs committing at once can both "
                        "succeed (see docs/OPERATIONS.md)", area.output)
        _write_atomically(latest, area.version + "\n", area.run_id)
        return
    from commer_core.storage import PreconditionFailed, write_if

    try:
        write_if(latest, (area.version + "\n").encode("utf-8"), token)
    except PreconditionFailed:
        raise LatestMovedError(_moved(expected, read_latest(area.output))) from None


def _describe(latest: str | None) -> str:
    return "(no store)" if latest is None else (latest or "(a flat store)")


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


def abandon(area: StagingArea) -> None:
    """Best-effort removal of a failed run's version directory."""
    _delete_tree(area.root)


