"""Launch-time checks: everything the graph needs, resolved and checked before a worker starts.

A bad input file, column, checkpoint, base model, ``--previous`` store or ``--output``
fails here, with one message naming what is wrong, and nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from commer_core.errors import CommerError
from commer_core.files import is_local_uri, local_path
from pipelines.commit import CommitError, match_files, read_latest
from pipelines.incremental import CACHE_FILE_PREFIX, cache_directory
from pipelines.model_handler import materialize_checkpoint
from pipelines.options import CompressParams
from pipelines.user_buckets import auto_bucket_count
from schemas import validate_corpus_schema
from schemas.store import CompressionKey

#: Runners whose workers are this machine's processes (direct_running_mode / direct_num_workers apply).
#: The one list: the CLI's log-level default (jobs/compress_cmd.py) asks :func:`is_local_runner` too.
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "FnApiRunner")
_DIRECT_ALIASES = ("SwitchingDirectRunner", "direct", "DirectRunner")


def canonical_runner(name: str) -> str:
    """A ``--runner`` value with the DirectRunner's aliases folded into ``DirectRunner``."""
    return "DirectRunner" if name in _DIRECT_ALIASES else name


def is_local_runner(name: str) -> bool:
    """Whether the runner ``name`` (a ``--runner`` value or alias) runs its workers on this machine."""
    return canonical_runner(name) in LOCAL_RUNNERS


class CompressError(CommerError, RuntimeError):
    """The job cannot start or did not commit; the message says why (no traceback needed)."""


@dataclass(frozen=True)
class JobPlan:
    """Everything the graph needs, resolved and checked before the pipeline starts."""

    params: CompressParams
    input_pattern: str
    input_row_groups: tuple[tuple[str, int], ...]  # every matched file with its row-group count
    output: str
    checkpoint: str
    checkpoint_fingerprint: str
    checkpoint_trained: bool
    base_model: str
    base_model_sha256: str | None
    num_embeddings: int
    hidden_size: int
    max_doc_tokens: int
    runner: str
    processes_per_worker: int | None
    previous: PreviousVersion | None = None
    cache_root: str | None = None
    cache_files: tuple[str, ...] = ()
    user_buckets: int = 1
    compression_key: CompressionKey | None = None  # set by prepare(); None only in hand-built plans
    expected_latest: str | None = None  # what OUTPUT/LATEST named at launch: the commit's compare-and-swap
    warnings: tuple[str, ...] = ()  # from the launch checks; announced
    input_rows: int = 0

    @property
    def key(self) -> CompressionKey:
        if self.compression_key is None:
            raise ValueError("this JobPlan has no compression key")
        return self.compression_key

    @property
    def input_files(self) -> tuple[str, ...]:
        return tuple(path for path, _ in self.input_row_groups)


@dataclass(frozen=True)
class PreviousVersion:
    """The committed store version an incremental run builds on (its files as Beam URIs)."""

    uri: str
    version: str | None
    embedding_files: tuple[str, ...]
    document_files: tuple[str, ...]
    documents: int = 0  # averaged in that version (its manifest's count)

    @property
    def label(self) -> str:
        return f"{self.uri} ({self.version})" if self.version else self.uri


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


def runner_name(options: PipelineOptions, pipeline: beam.Pipeline | None = None) -> str:
    runner = options.view_as(StandardOptions).runner
    if runner is None and pipeline is not None and getattr(pipeline, "runner", None) is not None:
        runner = type(pipeline.runner).__name__
    name = "DirectRunner" if runner is None else runner if isinstance(runner, str) else type(runner).__name__
    return canonical_runner(name)


def processes_per_worker(options: PipelineOptions, runner: str) -> int | None:
    """How many SDK processes share a worker's cores (None: one per core, as Dataflow does)."""
    if runner in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode == "multi_processing":
            return direct.direct_num_workers or os.cpu_count() or 1
        return 1
    if runner.startswith("Dataflow"):
        experiments = options.view_as(DebugOptions).experiments or []
        return 1 if "no_use_multiple_sdk_containers" in experiments else None
    parallelism = options.view_as(PortableOptions).sdk_worker_parallelism
    return int(parallelism) if parallelism else None


def prepare(params: CompressParams, options: PipelineOptions, pipeline: beam.Pipeline | None = None) -> JobPlan:
    """Resolve defaults and fail fast on bad input, checkpoint or base model."""
    pattern = resolve_input(params.input)
    notes: list[str] = []
    row_groups, input_rows = check_input_schemas(match_input(pattern), params, notes=notes)
    checkpoint = load_checkpoint_config(params.checkpoint)
    base_model = check_base_model(params.base_model, checkpoint.config["base_model"])
    runner = runner_name(options, pipeline)
    output = normalize_location(params.output)
    check_output_writable(output)
    compressor_cfg = checkpoint.config["compressor"]
    k, d = int(compressor_cfg["num_embeddings"]), int(compressor_cfg["hidden_size"])
    fp = checkpoint.fingerprint
    device = resolve_device_class(params.device, runner, options)
    key = CompressionKey(
        checkpoint_fingerprint=fp,
        base_model_sha256=str(checkpoint.config["base_model"].get("weights_sha256") or ""),
        max_doc_tokens=params.max_doc_tokens or int(compressor_cfg["max_doc_tokens"]),
        num_embeddings=k,
        hidden_size=d,
        dtype=COMPUTE_DTYPES[device],
        device_class=device,
    )
    previous = open_previous(params.previous, key) if params.previous else None
    if previous is not None and params.full_snapshot and input_rows == 0 and not params.allow_empty:
        raise CompressError(empty_snapshot_refusal(pattern, previous))
    latest = check_overwrite(output, params, previous)
    cache_root = normalize_location(params.doc_cache) if params.doc_cache else None
    # the previous version's documents are read (and shuffled) with tonight's rows
    buckets = params.user_buckets or auto_bucket_count(input_rows + (previous.documents if previous else 0), runner)
    return JobPlan(
        params=params,
        input_pattern=pattern,
        input_row_groups=tuple(row_groups),
        output=output,
        checkpoint=checkpoint.uri,
        checkpoint_fingerprint=fp,
        checkpoint_trained=bool(checkpoint.config.get("trained")),
        base_model=base_model,
        base_model_sha256=checkpoint.config["base_model"].get("weights_sha256"),
        num_embeddings=k,
        hidden_size=d,
        max_doc_tokens=key.max_doc_tokens,
        runner=runner,
        processes_per_worker=processes_per_worker(options, runner),
        previous=previous,
        cache_root=cache_root,
        cache_files=tuple(cache_files(cache_root, key)) if cache_root else (),
        user_buckets=buckets,
        compression_key=key,
        expected_latest=latest,
        warnings=tuple(notes),
        input_rows=input_rows,
    )


#: The backbone's compute dtype per device class (``commer_core.backbone.default_dtype``).
COMPUTE_DTYPES = {"cpu": "float32", "cuda": "bfloat16"}


def resolve_device_class(device: str, runner: str, options: PipelineOptions) -> str:
    """``cpu`` or ``cuda``: where the workers will compute, decided at launch (part of the compression key).

    ``--device auto`` on a local runner is this machine's answer; on a remote runner it is
    ``cuda`` when the Beam options ask for an accelerator (Dataflow's ``worker_accelerator``),
    else ``cpu``. Workers check it (:class:`~pipelines.model_handler.CompressorModelHandler`)
    and fail rather than compute under another key.
    """
    if device.startswith("cuda"):
        return "cuda"
    if device == "cpu":
        return "cpu"
    if is_local_runner(runner):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if "accelerator" in str(options.get_all_options(drop_default=True)) else "cpu"


@dataclass(frozen=True)
class CheckedCheckpoint:
    """The checkpoint's location as workers will see it, its verified config and fingerprint."""

    uri: str
    config: dict[str, Any]
    fingerprint: str


def load_checkpoint_config(checkpoint: str | None) -> CheckedCheckpoint:
    """Copy (if remote) and verify the checkpoint once, at launch; None is the bundled one."""
    from commer_core.checkpoint import CheckpointError, fingerprint, read_config
    from commer_core.defaults import default_checkpoint_path

    uri = checkpoint or str(default_checkpoint_path())
    try:
        local = materialize_checkpoint(uri)
        if not local.is_dir():
            raise CheckpointError("no such directory")
        config = read_config(local)  # verifies every file's checksum
        fp = fingerprint(local)
    except (CheckpointError, OSError, ValueError) as exc:
        raise CompressError(f"checkpoint {uri} is not usable: {exc}") from exc
    return CheckedCheckpoint(str(local.resolve()) if is_local_uri(uri) else uri, config, fp)


def check_base_model(requested: str | None, base: dict[str, Any]) -> str:
    """The backbone to load: the checkpoint's, or ``requested`` if its weights are the same."""
    from commer_core.backbone import BackboneError, resolve_model_folder, weights_sha256

    if not requested or requested == base["name"]:
        return requested or base["name"]
    try:
        sha = weights_sha256(resolve_model_folder(requested))
    except BackboneError as exc:
        raise CompressError(str(exc)) from exc
    if sha != base["weights_sha256"]:
        raise CompressError(
            f"--base-model {requested} has different weights from the checkpoint's base model "
            f"{base['name']!r} (sha256 {sha[:12]}... vs {base['weights_sha256'][:12]}...)"
        )
    return requested


def normalize_location(uri: str) -> str:
    """Absolute local paths (``file://`` stripped); other URIs without a trailing slash."""
    if is_local_uri(uri):
        return os.path.abspath(local_path(uri))
    return uri.rstrip("/")


def open_previous(uri: str, key: CompressionKey) -> PreviousVersion:
    """The ``--previous`` store, checked: the same compression key, and a document index to compare against."""
    from commer_core.store import StoreError, open_store

    location = normalize_location(uri)
    try:
        store = open_store(location)
    except StoreError as exc:
        raise CompressError(f"--previous {uri}: {exc}") from exc
    fingerprint, k, d = key.checkpoint_fingerprint, key.num_embeddings, key.hidden_size
    if store.checkpoint_fingerprint != fingerprint:
        raise CompressError(
            f"--previous {uri} was built with checkpoint {store.checkpoint_fingerprint[:12]}..., not "
            f"{fingerprint[:12]}...: a new checkpoint needs a full recompute (run without --previous, "
            "with --overwrite; see docs/OPERATIONS.md)"
        )
    if (store.num_embeddings, store.hidden_size) != (k, d):
        raise CompressError(f"--previous {uri} holds k={store.num_embeddings} x d={store.hidden_size}, not {k} x {d}")
    recorded = store.manifest.compression_key
    if recorded is None:
        raise CompressError(
            f"--previous {uri} records no compression key (written before keys were recorded), so its settings "
            "(max_doc_tokens, dtype, device) are unknown and its compressions cannot be reused: run once without "
            "--previous (with --overwrite) to rebuild it; see docs/OPERATIONS.md"
        )
    if recorded != key:
        raise CompressError(
            f"--previous {uri} was compressed under other settings ({'; '.join(recorded.differences(key))}; "
            "stored vs this run): its compressions cannot be reused. Run without --previous (with --overwrite) "
            "for a full recompute, or with the store's settings; see docs/OPERATIONS.md"
        )
    if store.manifest.counts.get("documents", 0) and not store.document_files:
        raise CompressError(f"--previous {uri} has no document index (documents-*.parquet): run once without --previous")
    as_uri = (lambda path: path) if is_local_uri(location) else (lambda path: f"{location.split('://')[0]}://{path}")
    return PreviousVersion(
        uri=location,
        version=store.version,
        embedding_files=tuple(as_uri(f) for f in store.embedding_files),
        document_files=tuple(as_uri(f) for f in store.document_files),
        documents=int(store.manifest.counts.get("documents", 0)),
    )


def empty_snapshot_refusal(pattern: str, previous: PreviousVersion) -> str:
    return (f"--full-snapshot with --input {pattern} holding no document would drop every user of {previous.label} "
            f"({previous.documents} documents); nothing was written. Pass --allow-empty if the store is meant to "
            "be emptied")


def check_overwrite(output: str, params: CompressParams, previous: PreviousVersion | None) -> str | None:
    """Refuse to replace a committed store unless told to (``--overwrite``) or updating it (``--previous``).

    Returns what ``LATEST`` names now (None: no store yet; "": a flat store): the commit
    only goes ahead if it still names that (:func:`pipelines.commit.swap_latest`).
    """
    try:
        latest = read_latest(output)
    except CommitError as exc:
        raise CompressError(str(exc)) from exc
    if previous is not None and previous.uri == output and (previous.version or "") != (latest or ""):
        raise CompressError(
            f"--output {output}: LATEST moved from {previous.version} to {latest} while this run was starting "
            "(another run committed); nothing was written, rerun"
        )
    if latest is None or params.overwrite or (previous is not None and previous.uri == output):
        return latest
    raise CompressError(
        f"--output {output} already holds a committed store{f' (version {latest})' if latest else ''}; "
        f"pass --overwrite to replace it, or --previous {output} to update it incrementally"
    )


def cache_files(cache_root: str, key: CompressionKey) -> list[str]:
    """Existing cache shards under this compression key (none yet is fine: the run starts the cache)."""
    return match_files(FileSystems.join(cache_directory(cache_root, key), f"{CACHE_FILE_PREFIX}-*.parquet"))
