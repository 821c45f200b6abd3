"""Launch checks of the job's input and output locations: files that match, Parquet footers and
schemas, and an output that can be written. Each failure is one :class:`CompressError` naming the path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from commer_core.files import is_local_uri, local_path
from pipelines.errors import CompressError
from pipelines.options import CompressParams
from schemas import validate_corpus_schema


def resolve_input(pattern: str | None) -> str:
    if pattern is None:
        from pipelines.sample_corpus import sample_corpus_path

        return str(sample_corpus_path())
    if is_local_uri(pattern):
        path = os.path.abspath(local_path(pattern))
        return os.path.join(path, "*.parquet") if os.path.isdir(path) else path
    return pattern


def match_input(pattern: str) -> list[str]:
    try:
        metadata = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # BeamIOError when the pattern matches nothing on some filesystems
        raise CompressError(f"--input {pattern}: cannot list files ({exc})") from exc
    files = sorted(m.path for m in metadata if not m.path.endswith("/"))
    if not files:
        raise CompressError(f"--input {pattern}: no file matches" + _partitioned_hint(pattern))
    irregular = [path for path in files if is_local_uri(path) and not _is_regular_file(path)]
    if irregular:  # a FIFO would block the footer read forever; a device file is no export either
        more = f" (and {len(irregular) - 3} more)" if len(irregular) > 3 else ""
        raise CompressError(
            f"--input {pattern}: not a regular file: {', '.join(irregular[:3])}{more} (a FIFO, device or "
            "socket); remove it or narrow the pattern"
        )
    return files


def _is_regular_file(path: str) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.stat(local_path(path)).st_mode)
    except OSError:
        return False


def _partitioned_hint(pattern: str) -> str:
    """For ``DIR/*.parquet`` matching nothing while DIR's subfolders hold Parquet files (a
    Hive-partitioned export, ``DIR/date=.../part-0.parquet``): the pattern that reads them."""
    if not is_local_uri(pattern):
        return ""
    folder = os.path.dirname(local_path(pattern))
    if "*" in folder or not os.path.isdir(folder):
        return ""
    for root, _, names in os.walk(folder):
        if root != folder and any(name.endswith(".parquet") for name in names):
            return (f"; {folder} has subfolders with Parquet files (a partitioned export?): "
                    f"pass --input '{folder}/**/*.parquet'")
    return ""


def check_output_writable(output: str) -> None:
    """Refuse, at launch, a local ``--output`` that cannot be created or written, with one line naming it.

    Probes with a temporary file in the output directory, or (not there yet) in its nearest
    existing ancestor, which is removed again; nothing else is created. Root ignores file
    modes, so only an actual write tells (a read-only mount, a full or foreign filesystem).
    Remote outputs are not probed (a write there costs a request and needs the job's credentials).
    """
    import uuid

    if not is_local_uri(output):
        return
    if os.path.exists(output) and not os.path.isdir(output):
        raise CompressError(f"--output {output} exists and is not a directory")
    folder = output
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not os.path.isdir(folder):
        raise CompressError(f"--output {output} cannot be created: {folder} is not a directory")
    probe = os.path.join(folder, f".commer-write-probe-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = "is not writable" if folder == output else f"cannot be created in {folder}"
        raise CompressError(f"--output {output} {what}: {exc.strerror or exc}") from exc


def read_footer(path: str) -> tuple[pa.Schema, int, int]:
    """The Arrow schema, row-group count and row count in a Parquet file's footer (reads the footer only)."""
    import pyarrow.parquet as pq

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            parquet = pq.ParquetFile(fh)
            return parquet.schema_arrow, parquet.metadata.num_row_groups, parquet.metadata.num_rows
    except Exception as exc:
        raise CompressError(f"--input file {path} is not a readable Parquet file: {exc}") from exc


def check_input_schemas(
    files: Sequence[str], params: CompressParams, threads: int = 16, notes: list[str] | None = None
) -> tuple[list[tuple[str, int]], int]:
    """Every input file's footer, checked before any worker starts; returns ``([(file, row groups)], rows)``.

    One error names each bad file and column; warnings (a ``timestamp`` column of another
    type) are appended to ``notes``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from schemas import SchemaError

    row_groups: dict[str, int] = {}
    rows: dict[str, int] = {}
    warnings: list[str] = []

    def problem(path: str) -> str | None:
        try:
            schema, row_groups[path], rows[path] = read_footer(path)
            validate_corpus_schema(
                schema,
                source=path,
                user_column=params.user_column,
                doc_id_column=params.doc_id_column,
                text_column=params.text_column,
                timestamp_column=None,  # compress never reads it: see unread_timestamp_warning
            )
            warning = unread_timestamp_warning(schema, path)
            if warning:
                warnings.append(warning)
        except (SchemaError, CompressError) as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        problems = [p for p in pool.map(problem, files) if p]
    if problems:
        more = f" (and {len(problems) - 3} more files)" if len(problems) > 3 else ""
        raise CompressError(
            "; ".join(problems[:3]) + more + f". Expected columns {params.user_column!r}, {params.doc_id_column!r}, "
            f"{params.text_column!r} (rename them with --user-column / --doc-id-column / --text-column)"
        )
    if warnings:
        more = f" (and {len(warnings) - 1} more files)" if len(warnings) > 1 else ""
        if notes is not None:
            notes.append(sorted(warnings)[0] + more)
    return [(path, row_groups[path]) for path in files], sum(rows.values())


def unread_timestamp_warning(schema: pa.Schema, source: str, column: str = "timestamp") -> str | None:
    """A ``timestamp`` column that is neither timestamp nor date: other readers would refuse it;
    compress never reads it, so it only warns."""
    index = schema.get_field_index(column)
    if index < 0:
        return None
    type_ = schema.field(index).type
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return None
    return (f"warning: {source}: column {column!r} has type {type_}, not timestamp or date; "
            "compress does not read it (ignored)")
