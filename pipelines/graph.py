"""The job's graph: every step labelled, for the users of one bucket (see :mod:`pipelines.compress`).

:func:`build` adds the steps to a pipeline and returns its main PCollections by name, so
tests can ``assert_that`` on them. Each optional part (``--previous``, ``--doc-cache``)
is a function of its own; the labels are the ones docs and tests name.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.metrics import Metrics

from pipelines.combine import MeanPoolCombineFn, user_key
from pipelines.commit import PARQUET_CODEC, StagingArea, WriteParquetTables
from pipelines.incremental import HIT_TAG, INDEX_TAG, PARTIAL_TAG, PlanAgainstPrevious, ResolveFromCache, WriteCache, index_row
from pipelines.model_handler import TOKENIZE_BATCH, CompressDocuments, CompressorModelHandler, TokenizeDocs
from pipelines.plan import JobPlan
from pipelines.read_corpus import ReadCorpusFiles
from pipelines.store_tables import GroupUsersByRange, ToStoreTables, store_writer_options
from pipelines.user_buckets import UserBucket
from pipelines.validate import DEAD_LETTER_TAG, METRICS_NAMESPACE, ValidateRows
from schemas import DEAD_LETTER_SCHEMA, DOCUMENT_INDEX_SCHEMA, store_schema


# -- DoFns ----------------------------------------------------------------------------------
class _ProcessProgress:
    """Documents compressed in this worker process, per job: every KeyByUser instance of a
    job in the process adds to one count, so the progress line speaks for the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, list[float]] = {}  # job id -> [documents, start time]

    def start(self, job_id: str) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, [0, time.monotonic()])

    def add_one(self, job_id: str) -> tuple[int, float]:
        """The new count and the documents per second since the job started here."""
        with self._lock:
            state = self._jobs[job_id]
            state[0] += 1
            count, start = int(state[0]), state[1]
        return count, count / max(time.monotonic() - start, 1e-9)


_PROGRESS = _ProcessProgress()


class KeyByUser(beam.DoFn):
    """``((user_id, doc_id, sha256), k x d)`` -> ``(user_id, k x d)``; counts, and logs progress per process."""

    def __init__(self, progress_every: int = 0, job_id: str = ""):
        self._progress_every = progress_every
        self._job_id = job_id
        self._compressed = Metrics.counter(METRICS_NAMESPACE, "compressed")

    def setup(self) -> None:
        _PROGRESS.start(self._job_id)

    def process(self, element: tuple[tuple[str, str, str], np.ndarray]):
        (user_id, _doc_id, _sha), compression = element
        self._compressed.inc()
        if self._progress_every:
            count, rate = _PROGRESS.add_one(self._job_id)
            if count % self._progress_every == 0:
                print(
                    f"commer: {count} documents compressed in this worker ({rate:.1f} docs/s, pid {os.getpid()})",
                    file=sys.stderr,
                    flush=True,
                )
        yield user_key(user_id), compression


class CountDeadLetters(beam.DoFn):
    """Passes dead letters through, counting them (the launcher checks rows are conserved)."""

    def __init__(self) -> None:
        self._dead = Metrics.counter(METRICS_NAMESPACE, "dead_lettered")

    def process(self, row: dict[str, Any]):
        self._dead.inc()
        yield row


# -- the graph ------------------------------------------------------------------------------
@dataclass
class _Documents:
    """What flows between the graph's parts: documents still to compress, and what is reused."""

    docs: beam.PCollection
    reused: list[beam.PCollection] = field(default_factory=list)  # (user_id, partial mean) inputs to the pool
    indexed: list[beam.PCollection] = field(default_factory=list)  # document-index rows already known
    cache_hits: beam.PCollection | None = None


def model_handler(plan: JobPlan) -> CompressorModelHandler:
    """The RunInference handler for the plan's checkpoint and the job's batching flags."""
    p = plan.params
    return CompressorModelHandler(
        plan.checkpoint,
        num_embeddings=plan.num_embeddings,
        fingerprint=plan.checkpoint_fingerprint,
        base_model=plan.base_model,
        device=p.device,
        batch_tokens=p.batch_tokens,
        max_batch_size=p.max_batch_size,
        processes_per_worker=plan.processes_per_worker,
        large_model=p.large_model,
        compile_model=p.compile_model,
        device_class=plan.compression_key.device_class if plan.compression_key else None,
    )


def _reuse_previous(flow: _Documents, plan: JobPlan, bucket: UserBucket) -> None:
    """--previous: documents the previous version covers are not compressed again."""
    shape = (plan.num_embeddings, plan.hidden_size)
    planned = flow.docs | "PlanAgainstPrevious" >> PlanAgainstPrevious(
        plan.previous.embedding_files, plan.previous.document_files, shape, plan.params.full_snapshot, bucket
    )
    flow.docs = planned.needed
    flow.reused.append(planned[PARTIAL_TAG])
    flow.indexed.append(planned[INDEX_TAG])


def _resolve_from_cache(flow: _Documents, plan: JobPlan, bucket: UserBucket) -> None:
    """--doc-cache: documents compressed before under this compression key are read, not compressed."""
    resolved = flow.docs | "ResolveFromCache" >> ResolveFromCache(
        plan.cache_files, (plan.num_embeddings, plan.hidden_size), plan.checkpoint_fingerprint, bucket
    )
    flow.docs = resolved.miss
    flow.cache_hits = resolved[HIT_TAG]


def _tokenize(docs: beam.PCollection, plan: JobPlan) -> Any:
    return (
        docs
        | "BatchForTokenizer" >> beam.BatchElements(min_batch_size=TOKENIZE_BATCH, max_batch_size=TOKENIZE_BATCH)
        | "Tokenize" >> beam.ParDo(TokenizeDocs(plan.base_model, plan.max_doc_tokens)).with_outputs(
            DEAD_LETTER_TAG, main="tokens"
        )
    )


def _pool_per_user(flow: _Documents, per_doc: beam.PCollection, plan: JobPlan) -> beam.PCollection:
    """(user_id, k x d) from tonight and partial means reused -> (user_id, (mean, n_docs))."""
    pool_inputs = (per_doc, *flow.reused) | "FlattenPoolInputs" >> beam.Flatten() if flow.reused else per_doc
    return pool_inputs | "MeanPoolPerUser" >> beam.CombinePerKey(
        MeanPoolCombineFn(plan.num_embeddings, plan.hidden_size)
    )


def _write_document_index(keyed: list[beam.PCollection], flow: _Documents, staging: StagingArea) -> beam.PCollection:
    new_rows = tuple(keyed) | "FlattenCompressedKeys" >> beam.Flatten() | "ToIndexRows" >> beam.Map(
        lambda kv: index_row(kv[0])
    )
    index = (new_rows, *flow.indexed) | "FlattenDocumentIndex" >> beam.Flatten()
    _ = index | "WriteDocumentIndex" >> WriteToParquet(
        staging.documents_prefix, schema=DOCUMENT_INDEX_SCHEMA, codec=PARQUET_CODEC, file_name_suffix=".parquet"
    )
    return index


def _write_store(per_user: beam.PCollection, plan: JobPlan, staging: StagingArea, computed_at: datetime) -> Any:
    k, d, p = plan.num_embeddings, plan.hidden_size, plan.params
    tables = (
        per_user
        | "GroupUsersByRange" >> GroupUsersByRange(p.store_ranges)
        | "ToStoreTables" >> beam.ParDo(
            ToStoreTables(k, d, plan.checkpoint_fingerprint, computed_at, p.rows_per_row_group, p.store_dtype)
        )
    )
    _ = tables | "WriteEmbeddings" >> WriteParquetTables(
        staging.embeddings_prefix, store_schema(k, d, p.store_dtype), options=store_writer_options())
    return tables


def _write_dead_letters(outputs: tuple[beam.PCollection, ...], staging: StagingArea) -> beam.PCollection:
    dead_letters = (
        outputs | "FlattenDeadLetters" >> beam.Flatten() | "CountDeadLetters" >> beam.ParDo(CountDeadLetters())
    )
    _ = dead_letters | "WriteDeadLetters" >> WriteToParquet(
        staging.dead_letter_prefix, schema=DEAD_LETTER_SCHEMA, codec=PARQUET_CODEC, file_name_suffix=".parquet"
    )
    return dead_letters


def build(
    pipeline: beam.Pipeline, plan: JobPlan, staging: StagingArea, computed_at: datetime, bucket: UserBucket = UserBucket()
) -> dict[str, Any]:
    """Add the job's steps for the users of ``bucket`` to ``pipeline``; returns the main PCollections by name."""
    p = plan.params
    columns = (p.user_column, p.doc_id_column, p.text_column)
    rows = pipeline | "ReadCorpus" >> ReadCorpusFiles(plan.input_row_groups, list(columns), bucket)
    validated = rows | "Validate" >> ValidateRows(*columns)
    flow = _Documents(validated["docs"])
    if plan.previous is not None:
        _reuse_previous(flow, plan, bucket)
    if plan.cache_root is not None:
        _resolve_from_cache(flow, plan, bucket)
    tokenized = _tokenize(flow.docs, plan)
    compressed = tokenized.tokens | "Compress" >> CompressDocuments(model_handler(plan))
    per_doc = compressed | "KeyByUser" >> beam.ParDo(KeyByUser(p.progress_every, staging.run_id))
    keyed = [compressed]
    if flow.cache_hits is not None:
        run_tag = "-".join(filter(None, (staging.run_id, bucket.tag)))
        _ = compressed | "WriteCache" >> WriteCache(plan.cache_root, run_tag, plan.key)
        keyed.append(flow.cache_hits)
        flow.reused.append(flow.cache_hits | "KeyCacheHitsByUser" >> beam.Map(lambda kv: (user_key(kv[0][0]), kv[1])))
    per_user = _pool_per_user(flow, per_doc, plan)
    index = _write_document_index(keyed, flow, staging)
    tables = _write_store(per_user, plan, staging, computed_at)
    dead_letters = _write_dead_letters((validated[DEAD_LETTER_TAG], tokenized[DEAD_LETTER_TAG]), staging)
    return {"per_document": per_doc, "per_user": per_user, "dead_letters": dead_letters, "tables": tables,
            "document_index": index}
