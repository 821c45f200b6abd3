"""Launch-time checks: everything the graph needs, resolved and checked before a worker starts.

A bad input file, column, checkpoint, base model, ``--previous`` store or ``--output``
fails here, with one message naming what is wrong, and nothing is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from commer_core.files import is_local_uri, local_path
from pipelines.commit import CommitError, match_files, read_latest
from pipelines.errors import CompressError
from pipelines.incremental import CACHE_FILE_PREFIX, cache_directory, readable_cache_shards
from pipelines.inputs import (  # noqa: F401  (re-exported: callers import them from here)
    check_input_schemas,
    check_output_writable,
    match_input,
    read_footer,
    resolve_input,
    unread_timestamp_warning,
)
from pipelines.model_handler import materialize_checkpoint
from pipelines.options import CompressParams
from pipelines.user_buckets import auto_bucket_count
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
    compression_key: CompressionKey | None = None  # set by plan_job(); None only in hand-built plans
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


def configure_storage(options: PipelineOptions) -> None:
    """Give the launcher's storage the settings the workers get, before any launch check touches a file.

    Beam hands pipeline options to its filesystems only when a ``beam.Pipeline`` is built,
    which is after the launch checks: without this, s3:// fails at the first listing
    ("Must provide one of client or options") and the endpoint options would be ignored.
    Outside Beam (the store reader for ``--previous``, the commit's compare-and-swap on
    ``LATEST``) :mod:`commer_core.storage` gets the same options, mapped to fsspec.
    """
    from commer_core.storage import beam_storage_options, configure

    FileSystems.set_options(options)
    configure(beam_storage_options(options.get_all_options(drop_default=True)))


def plan_job(params: CompressParams, options: PipelineOptions, pipeline: beam.Pipeline | None = None) -> JobPlan:
    """Resolve defaults and fail fast on bad input, checkpoint or base model."""
    configure_storage(options)
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
        cache_files=tuple(cache_files(cache_root, key, notes)) if cache_root else (),
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


def cache_files(cache_root: str, key: CompressionKey, notes: list[str] | None = None) -> list[str]:
    """Existing cache shards under this compression key (none yet is fine: the run starts the cache).
    A shard whose footer cannot be read is left out and named in ``notes`` (its documents recompute)."""
    found = match_files(FileSystems.join(cache_directory(cache_root, key), f"{CACHE_FILE_PREFIX}-*.parquet"))
    good, warnings = readable_cache_shards(found)
    if notes is not None:
        notes.extend(warnings)
    return good
