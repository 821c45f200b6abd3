"""The nightly job: Parquet user corpora -> one merged ComMer soft prompt per user.

Graph (every step labelled)::

    ReadCorpus            (file, row group) pairs checked at launch -> rows (invalid UTF-8 reaches Validate)
    Validate              schemas.check_row + duplicate (user_id, doc_id) resolution
    [PlanAgainstPrevious] --previous: reuse the previous version's means (pipelines.incremental)
    [ResolveFromCache]    --doc-cache: documents already compressed under this checkpoint
    Tokenize              the compressor's tokenizer, truncated at max_doc_tokens
    Compress              SortAndBatchByTokens + RunInference(CompressorModelHandler)
    [WriteCache]          --doc-cache: tonight's compressions, for later runs
    KeyByUser             ((user_id, doc_id, sha256), k x d) -> (user_id, k x d)
    MeanPoolPerUser       CombinePerKey(MeanPoolCombineFn): float64 (sum, count)
    GroupUsersByRange     user-id quantile ranges (so row groups hold nearby ids, for lookups)
    ToStoreTables         sorted pa.Tables in schemas.store_schema(k, d), one per row group
    WriteEmbeddings       Parquet (zstd, one row group per table) into the new version directory
    WriteDocumentIndex    (user_id, doc_id, text_sha256) of every document the means cover
    FlattenDeadLetters -> CountDeadLetters -> WriteDeadLetters

then, on the launcher, counts are checked (rows read = documents + dead letters, the
index covers exactly the documents averaged) and :mod:`pipelines.commit` writes the
version's ``_MANIFEST.json`` and then points ``LATEST`` at it.

Entry points: :func:`run` (argv in the Beam-example style, with ``test_pipeline``),
:func:`run_job` (already-parsed :class:`CompressParams`), :func:`build` (the graph
alone, for tests that use ``assert_that``).
"""

from __future__ import annotations

import bisect
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineState

from commer_core.errors import CommerError
from pipelines.combine import MeanPoolCombineFn, user_key
from pipelines.commit import (
    KEEP_VERSIONS,
    PARQUET_CODEC,
    CommitError,
    StagingArea,
    WriteParquetTables,
    abandon,
    commit,
    match_files,
    new_staging_area,
    read_latest,
    staged_counts,
)
from pipelines.incremental import (
    CACHE_FILE_PREFIX,
    HIT_TAG,
    INDEX_TAG,
    PARTIAL_TAG,
    PlanAgainstPrevious,
    ResolveFromCache,
    WriteCache,
    cache_directory,
    index_row,
)
from pipelines.options import DEFAULT_OUTPUT, CompressParams, argument_parser, parse_args  # noqa: F401 (re-exported)
from pipelines.model_handler import (
    CompressDocuments,
    CompressorModelHandler,
    TOKENIZE_BATCH,
    TokenizeDocs,
    materialize_checkpoint,
    quiet_transformers,
)
from pipelines.read_corpus import ReadCorpusFiles
from pipelines.user_buckets import UserBucket, auto_bucket_count
from pipelines.validate import DEAD_LETTER_TAG, METRICS_NAMESPACE, ValidateRows
from schemas import (
    DEAD_LETTER_SCHEMA,
    DOCUMENT_INDEX_SCHEMA,
    TIMESTAMP_TYPE,
    StoreManifest,
    store_schema,
    validate_corpus_schema,
)

log = logging.getLogger(__name__)

#: Runners whose workers are this machine's processes (direct_running_mode / direct_num_workers apply).
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "FnApiRunner")
_DIRECT_ALIASES = ("SwitchingDirectRunner", "direct", "DirectRunner")


class CompressError(CommerError, RuntimeError):
    """The job cannot start or did not commit; the message says why (no traceback needed)."""


# -- launch-time checks ---------------------------------------------------------------------
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


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def resolve_input(pattern: str | None) -> str:
    if pattern is None:
        from pipelines.sample_corpus import sample_corpus_path

        return str(sample_corpus_path())
    if _is_local(pattern):
        path = os.path.abspath(os.path.expanduser(pattern))
        return os.path.join(path, "*.parquet") if os.path.isdir(path) else path
    return pattern


def match_input(pattern: str) -> list[str]:
    try:
        metadata = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # BeamIOError when the pattern matches nothing on some filesystems
        raise CompressError(f"--input {pattern}: cannot list files ({exc})") from exc
    files = sorted(m.path for m in metadata if not m.path.endswith("/"))
    if not files:
        raise CompressError(f"--input {pattern}: no file matches")
    return files


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
    files: Sequence[str], params: CompressParams, threads: int = 16
) -> tuple[list[tuple[str, int]], int]:
    """Every input file's footer, checked before any worker starts; returns ``([(file, row groups)], rows)``.

    One error names each bad file and column.
    """
    from concurrent.futures import ThreadPoolExecutor

    from schemas import SchemaError

    row_groups: dict[str, int] = {}
    rows: dict[str, int] = {}

    def problem(path: str) -> str | None:
        try:
            schema, row_groups[path], rows[path] = read_footer(path)
            validate_corpus_schema(
                schema,
                source=path,
                user_column=params.user_column,
                doc_id_column=params.doc_id_column,
                text_column=params.text_column,
            )
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
    return [(path, row_groups[path]) for path in files], sum(rows.values())


def runner_name(options: PipelineOptions, pipeline: beam.Pipeline | None = None) -> str:
    runner = options.view_as(StandardOptions).runner
    if runner is None and pipeline is not None and getattr(pipeline, "runner", None) is not None:
        runner = type(pipeline.runner).__name__
    name = "DirectRunner" if runner is None else runner if isinstance(runner, str) else type(runner).__name__
    return "DirectRunner" if name in _DIRECT_ALIASES else name


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
    from commer_core.backbone import BackboneError, resolve_model_folder, weights_sha256
    from commer_core.checkpoint import CheckpointError, fingerprint, read_config
    from commer_core.defaults import default_checkpoint_path

    pattern = resolve_input(params.input)
    files = match_input(pattern)
    row_groups, input_rows = check_input_schemas(files, params)

    checkpoint = params.checkpoint or str(default_checkpoint_path())
    try:
        local_ckpt = materialize_checkpoint(checkpoint)
        if not local_ckpt.is_dir():
            raise CheckpointError("no such directory")
        config = read_config(local_ckpt)  # verifies every file's checksum
        fp = fingerprint(local_ckpt)
    except (CheckpointError, OSError, ValueError) as exc:
        raise CompressError(f"checkpoint {checkpoint} is not usable: {exc}") from exc
    compressor_cfg = config["compressor"]
    base = config["base_model"]
    base_model = params.base_model or base["name"]
    if params.base_model and params.base_model != base["name"]:
        try:
            sha = weights_sha256(resolve_model_folder(params.base_model))
        except BackboneError as exc:
            raise CompressError(str(exc)) from exc
        if sha != base["weights_sha256"]:
            raise CompressError(
                f"--base-model {params.base_model} has different weights from the checkpoint's base model "
                f"{base['name']!r} (sha256 {sha[:12]}... vs {base['weights_sha256'][:12]}...)"
            )
    runner = runner_name(options, pipeline)
    output = normalize_location(params.output)
    if _is_local(output) and os.path.exists(output) and not os.path.isdir(output):
        raise CompressError(f"--output {output} exists and is not a directory")
    k, d = int(compressor_cfg["num_embeddings"]), int(compressor_cfg["hidden_size"])
    previous = open_previous(params.previous, fp, k, d) if params.previous else None
    check_overwrite(output, params, previous)
    cache_root = normalize_location(params.doc_cache) if params.doc_cache else None
    # the previous version's documents are read (and shuffled) with tonight's rows
    buckets = params.user_buckets or auto_bucket_count(input_rows + (previous.documents if previous else 0), runner)
    return JobPlan(
        params=params,
        input_pattern=pattern,
        input_row_groups=tuple(row_groups),
        output=output,
        checkpoint=checkpoint if not _is_local(checkpoint) else str(local_ckpt.resolve()),
        checkpoint_fingerprint=fp,
        checkpoint_trained=bool(config.get("trained")),
        base_model=base_model,
        base_model_sha256=base.get("weights_sha256"),
        num_embeddings=int(compressor_cfg["num_embeddings"]),
        hidden_size=int(compressor_cfg["hidden_size"]),
        max_doc_tokens=params.max_doc_tokens or int(compressor_cfg["max_doc_tokens"]),
        runner=runner,
        processes_per_worker=processes_per_worker(options, runner),
        previous=previous,
        cache_root=cache_root,
        cache_files=tuple(cache_files(cache_root, fp)) if cache_root else (),
        user_buckets=buckets,
    )


def normalize_location(uri: str) -> str:
    """Absolute local paths (``file://`` stripped); other URIs without a trailing slash."""
    if _is_local(uri):
        return os.path.abspath(os.path.expanduser(uri[len("file://"):] if uri.startswith("file://") else uri))
    return uri.rstrip("/")


def open_previous(uri: str, fingerprint: str, k: int, d: int) -> PreviousVersion:
    """The ``--previous`` store, checked: same checkpoint, and a document index to compare against."""
    from commer_core.store import StoreError, open_store

    location = normalize_location(uri)
    try:
        store = open_store(location)
    except StoreError as exc:
        raise CompressError(f"--previous {uri}: {exc}") from exc
    if store.checkpoint_fingerprint != fingerprint:
        raise CompressError(
            f"--previous {uri} was built with checkpoint {store.checkpoint_fingerprint[:12]}..., not "
            f"{fingerprint[:12]}...: a new checkpoint needs a full recompute (run without --previous, "
            "with --overwrite; see docs/OPERATIONS.md)"
        )
    if (store.num_embeddings, store.hidden_size) != (k, d):
        raise CompressError(f"--previous {uri} holds k={store.num_embeddings} x d={store.hidden_size}, not {k} x {d}")
    if store.manifest.counts.get("documents", 0) and not store.document_files:
        raise CompressError(f"--previous {uri} has no document index (documents-*.parquet): run once without --previous")
    as_uri = (lambda path: path) if _is_local(location) else (lambda path: f"{location.split('://')[0]}://{path}")
    return PreviousVersion(
        uri=location,
        version=store.version,
        embedding_files=tuple(as_uri(f) for f in store.embedding_files),
        document_files=tuple(as_uri(f) for f in store.document_files),
        documents=int(store.manifest.counts.get("documents", 0)),
    )


def check_overwrite(output: str, params: CompressParams, previous: PreviousVersion | None) -> None:
    """Refuse to replace a committed store unless told to (``--overwrite``) or updating it (``--previous``)."""
    try:
        latest = read_latest(output)
    except CommitError as exc:
        raise CompressError(str(exc)) from exc
    if latest is None or params.overwrite or (previous is not None and previous.uri == output):
        return
    raise CompressError(
        f"--output {output} already holds a committed store{f' (version {latest})' if latest else ''}; "
        f"pass --overwrite to replace it, or --previous {output} to update it incrementally"
    )


def cache_files(cache_root: str, fingerprint: str) -> list[str]:
    """Existing cache shards for this checkpoint (none yet is fine: the run starts the cache)."""
    return match_files(FileSystems.join(cache_directory(cache_root, fingerprint), f"{CACHE_FILE_PREFIX}-*.parquet"))


# -- DoFns ----------------------------------------------------------------------------------
_PROGRESS_LOCK = threading.Lock()
_PROGRESS: dict[str, list[float]] = {}  # job id -> [documents seen in this process, start time]


class KeyByUser(beam.DoFn):
    """``((user_id, doc_id, sha256), k x d)`` -> ``(user_id, k x d)``; counts, and logs progress per process."""

    def __init__(self, progress_every: int = 0, job_id: str = ""):
        self._progress_every = progress_every
        self._job_id = job_id
        self._compressed = Metrics.counter(METRICS_NAMESPACE, "compressed")

    def setup(self) -> None:
        with _PROGRESS_LOCK:
            _PROGRESS.setdefault(self._job_id, [0, time.monotonic()])

    def process(self, element: tuple[tuple[str, str, str], np.ndarray]):
        (user_id, _doc_id, _sha), compression = element
        self._compressed.inc()
        if self._progress_every:
            with _PROGRESS_LOCK:
                state = _PROGRESS[self._job_id]
                state[0] += 1
                count, start = int(state[0]), state[1]
            if count % self._progress_every == 0:
                rate = count / max(time.monotonic() - start, 1e-9)
                print(
                    f"commer: {count} documents compressed in this worker ({rate:.1f} docs/s, pid {os.getpid()})",
                    file=sys.stderr,
                    flush=True,
                )
        yield user_key(user_id), compression


def assign_range(element: tuple[str, Any], bounds: Sequence[str]) -> tuple[int, tuple[str, Any]]:
    """Key a user row by the quantile range its id falls in."""
    inner = list(bounds[1:-1]) if len(bounds) > 2 else []
    return bisect.bisect_right(inner, element[0]), element


class ToStoreTables(beam.DoFn):
    """One user-id range ``(range, [(user_id, (mean, n_docs)), ...])`` -> sorted ``pa.Table`` chunks.

    Each table becomes one Parquet row group covering a contiguous, sorted run of user ids,
    so its ``user_id`` min/max statistics are narrow and readers skip it unless it can hold
    the ids they look for.
    """

    def __init__(
        self, num_embeddings: int, hidden_size: int, fingerprint: str, computed_at: datetime, rows_per_table: int
    ):
        self._k, self._d = num_embeddings, hidden_size
        self._fingerprint = fingerprint
        self._computed_at = computed_at
        self._rows_per_table = rows_per_table
        self._users_written = Metrics.counter(METRICS_NAMESPACE, "users_written")

    def process(self, element: tuple[int, Iterable[tuple[str, tuple[np.ndarray, int]]]]):
        _, rows = element
        rows = sorted(rows, key=lambda r: r[0])
        for start in range(0, len(rows), self._rows_per_table):
            yield self.to_table(rows[start : start + self._rows_per_table])

    def to_table(self, rows: Sequence[tuple[str, tuple[np.ndarray, int]]]) -> pa.Table:
        schema = store_schema(self._k, self._d)
        n = len(rows)
        flat = np.stack([np.asarray(mean, dtype=np.float32).reshape(-1) for _, (mean, _) in rows]).reshape(-1)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), type=schema.field("embedding").type)
        table = pa.Table.from_arrays(
            [
                pa.array([user for user, _ in rows], pa.string()),
                embedding,
                pa.array([self._k] * n, pa.int32()),
                pa.array([self._d] * n, pa.int32()),
                pa.array([int(count) for _, (_, count) in rows], pa.int64()),
                pa.array([self._fingerprint] * n, pa.string()),
                pa.array([self._computed_at] * n, TIMESTAMP_TYPE),
            ],
            schema=schema,
        )
        self._users_written.inc(n)
        return table


class GroupUsersByRange(beam.PTransform):
    """``(user_id, value)`` -> ``(range, [(user_id, value), ...])``, ranges cut at user-id quantiles.

    ``ranges`` bounds the memory one group needs (about users / ranges rows).
    """

    def __init__(self, ranges: int):
        super().__init__()
        self._ranges = ranges

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        bounds = (
            rows
            | "UserIds" >> beam.Keys()
            | "UserIdQuantiles" >> beam.ApproximateQuantiles.Globally(self._ranges + 1)
        )
        return (
            rows
            | "AssignUserRange" >> beam.Map(assign_range, bounds=beam.pvalue.AsSingleton(bounds)).with_output_types(
                tuple[int, Any]
            )
            | "GroupByUserRange" >> beam.GroupByKey()
        )


class CountDeadLetters(beam.DoFn):
    def __init__(self) -> None:
        self._dead = Metrics.counter(METRICS_NAMESPACE, "dead_lettered")

    def process(self, row: dict[str, Any]):
        self._dead.inc()
        yield row


# -- the graph ------------------------------------------------------------------------------
def build(
    pipeline: beam.Pipeline, plan: JobPlan, staging: StagingArea, computed_at: datetime, bucket: UserBucket = UserBucket()
) -> dict[str, Any]:
    """Add the job's steps for the users of ``bucket`` to ``pipeline``; returns the main PCollections by name."""
    p = plan.params
    k, d = plan.num_embeddings, plan.hidden_size
    handler = CompressorModelHandler(
        plan.checkpoint,
        num_embeddings=k,
        fingerprint=plan.checkpoint_fingerprint,
        base_model=plan.base_model,
        device=p.device,
        batch_tokens=p.batch_tokens,
        max_batch_size=p.max_batch_size,
        processes_per_worker=plan.processes_per_worker,
        large_model=p.large_model,
        compile_model=p.compile_model,
    )
    rows = pipeline | "ReadCorpus" >> ReadCorpusFiles(
        plan.input_row_groups, [p.user_column, p.doc_id_column, p.text_column], bucket
    )
    validated = rows | "Validate" >> ValidateRows(p.user_column, p.doc_id_column, p.text_column)
    docs, reused, indexed = validated["docs"], [], []
    if plan.previous is not None:
        planned = docs | "PlanAgainstPrevious" >> PlanAgainstPrevious(
            plan.previous.embedding_files, plan.previous.document_files, (k, d), p.full_snapshot, bucket
        )
        docs = planned.needed
        reused.append(planned[PARTIAL_TAG])
        indexed.append(planned[INDEX_TAG])
    if plan.cache_root is not None:
        resolved = docs | "ResolveFromCache" >> ResolveFromCache(
            plan.cache_files, (k, d), plan.checkpoint_fingerprint, bucket
        )
        docs = resolved.miss
    tokenized = (
        docs
        | "BatchForTokenizer" >> beam.BatchElements(min_batch_size=TOKENIZE_BATCH, max_batch_size=TOKENIZE_BATCH)
        | "Tokenize" >> beam.ParDo(TokenizeDocs(plan.base_model, plan.max_doc_tokens)).with_outputs(
            DEAD_LETTER_TAG, main="tokens"
        )
    )
    compressed = tokenized.tokens | "Compress" >> CompressDocuments(handler)
    per_doc = compressed | "KeyByUser" >> beam.ParDo(KeyByUser(p.progress_every, staging.run_id))
    keyed = [compressed]
    if plan.cache_root is not None:
        _ = compressed | "WriteCache" >> WriteCache(
            plan.cache_root, "-".join(filter(None, (staging.run_id, bucket.tag))), (k, d), plan.checkpoint_fingerprint
        )
        hits = resolved[HIT_TAG]
        keyed.append(hits)
        reused.append(hits | "KeyCacheHitsByUser" >> beam.Map(lambda kv: (user_key(kv[0][0]), kv[1])))
    pool_inputs = (per_doc, *reused) | "FlattenPoolInputs" >> beam.Flatten() if reused else per_doc
    per_user = pool_inputs | "MeanPoolPerUser" >> beam.CombinePerKey(MeanPoolCombineFn(k, d))
    new_rows = tuple(keyed) | "FlattenCompressedKeys" >> beam.Flatten() | "ToIndexRows" >> beam.Map(
        lambda kv: index_row(kv[0])
    )
    index = (new_rows, *indexed) | "FlattenDocumentIndex" >> beam.Flatten()
    _ = index | "WriteDocumentIndex" >> WriteToParquet(
        staging.documents_prefix, schema=DOCUMENT_INDEX_SCHEMA, codec=PARQUET_CODEC, file_name_suffix=".parquet"
    )
    tables = (
        per_user
        | "GroupUsersByRange" >> GroupUsersByRange(p.store_ranges)
        | "ToStoreTables" >> beam.ParDo(
            ToStoreTables(k, d, plan.checkpoint_fingerprint, computed_at, p.rows_per_row_group)
        )
    )
    _ = tables | "WriteEmbeddings" >> WriteParquetTables(staging.embeddings_prefix, store_schema(k, d))
    dead_letters = (
        (validated[DEAD_LETTER_TAG], tokenized[DEAD_LETTER_TAG])
        | "FlattenDeadLetters" >> beam.Flatten()
        | "CountDeadLetters" >> beam.ParDo(CountDeadLetters())
    )
    _ = dead_letters | "WriteDeadLetters" >> WriteToParquet(
        staging.dead_letter_prefix,
        schema=DEAD_LETTER_SCHEMA,
        codec=PARQUET_CODEC,
        file_name_suffix=".parquet",
    )
    return {"per_document": per_doc, "per_user": per_user, "dead_letters": dead_letters, "tables": tables,
            "document_index": index}


# -- running and committing -------------------------------------------------------------------
@dataclass
class CompressResult:
    """What a committed run produced."""

    output: str
    manifest: StoreManifest
    counts: dict[str, int]
    pipeline_seconds: float
    files: list[str] = field(default_factory=list)
    version: str = ""

    @property
    def docs_per_second(self) -> float:
        return self.counts.get("documents", 0) / max(self.pipeline_seconds, 1e-9)


def metric_counts(result: Any) -> tuple[dict[str, int], bool] | None:
    """The job's ``commer`` counters and whether all were *committed* values, or None.

    Attempted values (runners without committed metrics) may count retried bundles twice,
    so the launcher only enforces the conservation check on committed ones.
    """
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except Exception as exc:  # some runners do not report metrics to the launcher
        log.warning("metrics unavailable from the runner: %s", exc)
        return None
    counts: dict[str, int] = {}
    committed = bool(query.get("counters"))  # no counters at all: the runner did not report them
    for item in query.get("counters", []):
        value = _committed(item)
        if value is None:
            committed = False
            value = item.attempted
        if value is not None:
            counts[item.key.metric.name] = counts.get(item.key.metric.name, 0) + int(value)
    for item in query.get("distributions", []):
        value = _committed(item)
        value = item.attempted if value is None else value
        if value is None or not value.count:
            continue
        name = item.key.metric.name
        if name == "doc_tokens":
            counts["doc_tokens_total"] = counts.get("doc_tokens_total", 0) + int(value.sum)
            counts["doc_tokens_max"] = max(counts.get("doc_tokens_max", 0), int(value.max or 0))
        elif name.endswith("inference_batch_latency_micro_secs"):  # RunInference's own timing
            counts["inference_ms"] = counts.get("inference_ms", 0) + int(value.sum) // 1000
        elif name.endswith("load_model_latency_milli_secs"):
            counts["model_load_ms"] = counts.get("model_load_ms", 0) + int(value.sum)
    return counts, committed


def summed_metric_counts(buckets: Sequence[tuple[dict[str, int], bool] | None]) -> tuple[dict[str, int], bool]:
    """The user buckets' :func:`metric_counts` added up (``*_max``: the largest); committed if all were."""
    total: dict[str, int] = {}
    committed = bool(buckets)
    for bucket in buckets:
        counts, ok = bucket or ({}, False)
        committed = committed and ok
        for name, value in counts.items():
            total[name] = max(total.get(name, 0), value) if name.endswith("_max") else total.get(name, 0) + value
    return total, committed


def _committed(item: Any) -> Any:
    try:
        return item.committed
    except Exception:  # runners without committed metrics raise here
        return None


def _echo_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_job(
    params: CompressParams,
    beam_args: Sequence[str] = (),
    *,
    test_pipeline: beam.Pipeline | None = None,
    echo: Callable[[str], None] = _echo_stderr,
) -> CompressResult:
    """Check, run, verify and commit; raises :class:`CompressError` (or CommitError) on failure."""
    quiet_transformers()
    options = test_pipeline.options if test_pipeline is not None else PipelineOptions(list(beam_args))
    plan = prepare(params, options, test_pipeline)
    echo(
        f"commer: input {plan.input_pattern} ({len(plan.input_files)} file(s)); "
        f"checkpoint {plan.checkpoint_fingerprint[:12]} (k={plan.num_embeddings}, d={plan.hidden_size}, "
        f"base {plan.base_model}); runner {plan.runner}"
        + (f"; {plan.user_buckets} user buckets, one pipeline each" if plan.user_buckets > 1 else "")
    )
    if not plan.checkpoint_trained:
        echo("commer: note: this checkpoint is UNTRAINED (a placeholder); its soft prompts are not meaningful yet")
    try:
        pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    except ValueError as exc:  # e.g. an unknown --runner
        raise CompressError(f"cannot create the pipeline: {exc}") from exc
    staging = new_staging_area(plan.output)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    bucket_metrics = []
    try:
        for index in range(plan.user_buckets):
            bucket = UserBucket(index, plan.user_buckets)
            if index > 0:
                pipeline = beam.Pipeline(options=options)
            build(pipeline, plan, staging.for_part(bucket.tag), started, bucket)
            result = pipeline.run()
            state = result.wait_until_finish()
            if state not in (PipelineState.DONE, None):
                raise CompressError(f"pipeline of {bucket} ended in state {state}")
            bucket_metrics.append(metric_counts(result))
            del pipeline, result  # a finished bucket's runner state must not outlive it
            if plan.user_buckets > 1:
                gc.collect()
                echo(f"commer: {bucket} done ({time.monotonic() - t0:.1f} s)")
    except CompressError:
        abandon(staging)
        raise
    except Exception as exc:
        abandon(staging)
        raise CompressError(f"pipeline failed: {summarize_exception(exc)}") from exc
    seconds = time.monotonic() - t0
    finished = datetime.now(timezone.utc)
    try:
        counts = staged_counts(staging)
        metrics, committed = summed_metric_counts(bucket_metrics)
        counts.update({name: value for name, value in metrics.items() if name not in counts})
        check_counts(counts, committed, echo)
        if counts["users"] == 0:
            echo("commer: warning: no valid document: the store has no user (see the dead letters)")
        manifest = StoreManifest(
            checkpoint_fingerprint=plan.checkpoint_fingerprint,
            base_model=plan.base_model,
            base_model_sha256=plan.base_model_sha256,
            num_embeddings=plan.num_embeddings,
            hidden_size=plan.hidden_size,
            counts=counts,
            input_pattern=plan.input_pattern,
            runner=plan.runner,
            started_at=started,
            finished_at=finished,
            package_version=package_version(),
            previous_store=plan.previous.label if plan.previous else None,
        )
        files = commit(staging, manifest, plan.params.keep_versions)
    except Exception:
        abandon(staging)
        raise
    return CompressResult(plan.output, manifest, counts, seconds, files, staging.version)


def check_counts(counts: dict[str, int], committed: bool, echo: Callable[[str], None]) -> None:
    """Nothing lost: rows read = tonight's documents + dead letters; the index covers every averaged document.

    Tonight's documents are the store's documents minus those carried over unchanged
    from a previous version for users absent from tonight's input.
    """
    if counts.get("indexed_documents", counts["documents"]) != counts["documents"]:
        raise CommitError(
            f"the document index lists {counts['indexed_documents']} documents but the means average "
            f"{counts['documents']}"
        )
    carried = counts.get("documents_carried", 0)
    written = counts["documents"] - carried + counts["dead_letters"]
    conserved = counts.get("rows_read", 0) == written
    if not committed and not conserved:
        echo("commer: warning: the runner reported no committed metrics; rows read could not be checked")
    elif not conserved:
        raise CommitError(
            f"counts do not add up: rows read {counts.get('rows_read', 0)} != documents {counts['documents']} "
            f"- carried over {carried} + dead letters {counts['dead_letters']}"
        )


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("commer-pipeline")
    except PackageNotFoundError:
        return "0+unknown"


def summarize_exception(exc: BaseException) -> str:
    """One line for a user: the innermost ``SomeError: message`` line of a (worker) failure."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head and ":" in line:
            return line[:500]
    return f"{type(exc).__name__}: {lines[0][:500] if lines else ''}"


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> CompressResult:
    """Parse ``argv`` (job flags + Beam options) and run the job."""
    params, beam_args = parse_args(argv)
    return run_job(params, beam_args, test_pipeline=test_pipeline)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    summary = run()
    _echo_stderr(
        f"commer: committed {summary.output}: {summary.counts['users']} users, "
        f"{summary.counts['documents']} documents, {summary.counts['dead_letters']} dead letters"
    )
