"""Incremental runs: reuse a previous store's means and a per-document compression cache.

A document is identified by its *key* ``(user_id, doc_id, text_sha256)``; an edited
document is a new key. For every user, tonight's input holds the user's complete set of
documents (users absent from it keep their previous row, unless ``--full-snapshot``).
:class:`PlanUsers` compares that set with the previous store's document index:

============================  ==============================================================
previous keys vs tonight      what happens
============================  ==============================================================
user absent tonight           carried over as is (dropped with ``full_snapshot``)
equal                         the previous (mean, n) is reused; no model work
previous is a subset          previous (mean, n) + compressions of the new documents only
new user, or a document       every document of the user is compressed again, or taken
deleted or edited             from the cache (exact without the model)
============================  ==============================================================

:class:`ResolveFromCache` then serves each document that needs a compression from the
cache when it holds that key under the same compression key (``schemas.store.CompressionKey``:
checkpoint, base weights, ``max_doc_tokens``, k, d, dtype, device class); the rest go to the
model. The result equals a full recompute up to float32 rounding of the stored means.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.metrics import Metrics

from commer_core.merge import MeanPool
from commer_core.store import embedding_matrix
from pipelines.commit import WriteParquetTables
from pipelines.model_handler import DocKey
from pipelines.user_buckets import UserBucket
from pipelines.validate import METRICS_NAMESPACE
from schemas import doc_cache_schema, text_sha256
from schemas.store import CompressionKey

PARTIAL_TAG = "partial"
INDEX_TAG = "index"
HIT_TAG = "cache_hit"
CACHE_FILE_PREFIX = "part"


def index_row(key: DocKey) -> dict[str, str]:
    """A ``schemas.DOCUMENT_INDEX_SCHEMA`` row."""
    return {"user_id": key[0], "doc_id": key[1], "text_sha256": key[2]}


#: Cache directories are named ``key-<first 32 hex of the compression key's digest>``. Entries
#: of caches written before the key existed (``fp-<fingerprint>``) are never read again.
CACHE_DIR_PREFIX = "key-"


def cache_directory(cache_root: str, key: CompressionKey) -> str:
    """Cache entries made under one compression key live together, so other settings (another
    checkpoint, ``max_doc_tokens``, dtype, device class, ...) never see them: they recompute."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(cache_root, f"{CACHE_DIR_PREFIX}{key.digest[:32]}")



def readable_cache_shards(files: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split cache shards into those whose Parquet footer reads and warnings naming the rest.

    A truncated or garbled shard (a killed writer, a bad copy) would fail every later run;
    skipped instead, its documents are simply cache misses and are recomputed."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    good: list[str] = []
    warnings: list[str] = []
    for path in files:
        try:
            with FileSystems.open(path, compression_type="uncompressed") as fh:
                pq.ParquetFile(fh).schema_arrow
        except Exception as exc:  # noqa: BLE001 - any unreadable footer means: do not read this shard
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            warnings.append(f"warning: cache shard {path} is unreadable ({reason}); its documents are recomputed")
        else:
            good.append(path)
    return good, warnings

# -- reading a previous store and the cache ---------------------------------------------------
def pools_from_table(table: pa.Table, shape: tuple[int, int]) -> Iterable[tuple[str, MeanPool]]:
    """Store rows -> ``(user_id, MeanPool)`` partials rebuilt from (mean, n_docs)."""
    means = embedding_matrix(table.column("embedding"), *shape)
    for user, mean, count in zip(table.column("user_id").to_pylist(), means, table.column("n_docs").to_pylist()):
        yield user, MeanPool.from_mean(mean, int(count))


def index_from_table(table: pa.Table) -> Iterable[tuple[str, tuple[str, str]]]:
    """Document-index rows -> ``(user_id, (doc_id, text_sha256))``."""
    columns = [table.column(name).to_pylist() for name in ("user_id", "doc_id", "text_sha256")]
    for user, doc_id, sha in zip(*columns):
        yield user, (doc_id, sha)


def cache_entries_from_table(
    table: pa.Table, shape: tuple[int, int], fingerprint: str
) -> Iterable[tuple[DocKey, np.ndarray]]:
    """Cache rows of ``fingerprint`` -> ``((user_id, doc_id, sha), float32[k, d])``."""
    vectors = embedding_matrix(table.column("embedding"), *shape)
    columns = [table.column(name).to_pylist() for name in ("user_id", "doc_id", "text_sha256", "checkpoint_fingerprint")]
    for (user, doc_id, sha, fp), vector in zip(zip(*columns), vectors):
        if fp == fingerprint:
            yield (user, doc_id, sha), vector


class ReadParquetTables(beam.PTransform):
    """A fixed list of Parquet files -> their record batches as ``pa.Table`` (none when the list is empty)."""

    def __init__(self, files: Sequence[str], columns: Sequence[str]):
        super().__init__()
        self._files, self._columns = list(files), list(columns)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Files" >> beam.Create(self._files)
            | "Read" >> ReadAllFromParquetBatched(columns=self._columns)
        )


# -- planning per user ------------------------------------------------------------------------
class PlanUsers(beam.DoFn):
    """Per user: which documents need a compression, and what of the previous store is reused.

    Input ``(user_id, {"tonight": [CorpusDoc], "index": [(doc_id, sha)], "pool": [MeanPool]})``.
    Main output: CorpusDoc needing a compression. ``partial``: ``(user_id, MeanPool)`` reused
    from the previous store. ``index``: document-index rows of the documents that reuse covers.
    """

    def __init__(self, full_snapshot: bool = False):
        self._full_snapshot = full_snapshot
        counter = lambda name: Metrics.counter(METRICS_NAMESPACE, name)  # noqa: E731
        self._users = {name: counter(f"users_{name}") for name in
                       ("new", "unchanged", "updated", "recomputed", "carried", "dropped")}
        self._docs_reused = counter("documents_reused")
        self._docs_carried = counter("documents_carried")
        self._inconsistent = counter("users_index_mismatch")

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterable[Any]:
        user, groups = element
        tonight = list(groups["tonight"])
        previous_keys = set(groups["index"])
        pools = list(groups["pool"])
        previous = pools[0] if pools else None
        if previous is not None and previous.count != len(previous_keys):
            self._inconsistent.inc()  # a damaged previous store: trust tonight's input alone
            previous = None
        if not tonight:
            if previous is None:
                return
            if self._full_snapshot:
                self._users["dropped"].inc()
                return
            self._users["carried"].inc()
            self._docs_carried.inc(previous.count)
            yield from self._reuse(user, previous, previous_keys)
            return
        keys = [(doc.doc_id, text_sha256(doc.text)) for doc in tonight]
        if previous is not None and previous_keys.issubset(keys):
            self._users["unchanged" if len(previous_keys) == len(keys) else "updated"].inc()
            self._docs_reused.inc(previous.count)
            yield from self._reuse(user, previous, previous_keys)
            yield from (doc for doc, key in zip(tonight, keys) if key not in previous_keys)
            return
        self._users["new" if previous is None else "recomputed"].inc()
        yield from tonight

    @staticmethod
    def _reuse(user: str, pool: MeanPool, keys: set[tuple[str, str]]) -> Iterable[Any]:
        yield beam.pvalue.TaggedOutput(PARTIAL_TAG, (user, pool))
        for doc_id, sha in sorted(keys):
            yield beam.pvalue.TaggedOutput(INDEX_TAG, index_row((user, doc_id, sha)))


class PlanAgainstPrevious(beam.PTransform):
    """Tonight's documents + a previous store version -> needed docs, reused partials, index rows."""

    def __init__(self, embedding_files: Sequence[str], document_files: Sequence[str], shape: tuple[int, int],
                 full_snapshot: bool, bucket: UserBucket = UserBucket()):
        super().__init__()
        self._embedding_files, self._document_files = list(embedding_files), list(document_files)
        self._shape, self._full_snapshot, self._bucket = shape, full_snapshot, bucket

    def expand(self, docs: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        pipeline, shape = docs.pipeline, self._shape
        pools = (
            pipeline
            | "ReadPreviousEmbeddings" >> ReadParquetTables(self._embedding_files, ["user_id", "embedding", "n_docs"])
            | "ToPools" >> beam.FlatMap(pools_from_table, shape)
            | "KeepBucketPools" >> beam.Filter(self._bucket.contains_key)
        )
        index = (
            pipeline
            | "ReadPreviousIndex" >> ReadParquetTables(self._document_files, ["user_id", "doc_id", "text_sha256"])
            | "ToIndexKeys" >> beam.FlatMap(index_from_table)
            | "KeepBucketIndex" >> beam.Filter(self._bucket.contains_key)
        )
        tonight = docs | "KeyTonightByUser" >> beam.Map(lambda d: (d.user_id, d))
        return (
            {"tonight": tonight, "index": index, "pool": pools}
            | "JoinPreviousByUser" >> beam.CoGroupByKey()
            | "PlanUsers" >> beam.ParDo(PlanUsers(self._full_snapshot)).with_outputs(
                PARTIAL_TAG, INDEX_TAG, main="needed"
            )
        )


# -- the compression cache ----------------------------------------------------------------------
class PickCached(beam.DoFn):
    """``(key, {"doc": [CorpusDoc], "cached": [vector]})``: a cache hit, the document itself, or nothing."""

    def __init__(self) -> None:
        self._hits = Metrics.counter(METRICS_NAMESPACE, "documents_from_cache")

    def process(self, element: tuple[DocKey, dict[str, Iterable[Any]]]) -> Iterable[Any]:
        key, groups = element
        docs = list(groups["doc"])  # empty: a cache entry nobody needs tonight
        cached = list(groups["cached"]) if docs else []
        if cached:
            self._hits.inc()
            # the same key may have been cached by two runs; pick one independently of order
            yield beam.pvalue.TaggedOutput(HIT_TAG, (key, min(cached, key=lambda v: v.tobytes())))
        elif docs:
            yield docs[0]


class ResolveFromCache(beam.PTransform):
    """Needed documents -> main: documents for the model; ``cache_hit``: ``(key, float32[k, d])``."""

    def __init__(self, cache_files: Sequence[str], shape: tuple[int, int], fingerprint: str,
                 bucket: UserBucket = UserBucket()):
        super().__init__()
        self._files, self._shape, self._fingerprint = list(cache_files), shape, fingerprint
        self._bucket = bucket

    def expand(self, docs: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        cached = (
            docs.pipeline
            | "ReadCache" >> ReadParquetTables(self._files, ["user_id", "doc_id", "text_sha256",
                                                             "checkpoint_fingerprint", "embedding"])
            | "ToCacheEntries" >> beam.FlatMap(cache_entries_from_table, self._shape, self._fingerprint)
            | "KeepBucketEntries" >> beam.Filter(self._bucket.contains_key)
        )
        keyed = docs | "KeyByDocument" >> beam.Map(lambda d: (d.key(), d))
        return (
            {"doc": keyed, "cached": cached}
            | "JoinCacheByDocument" >> beam.CoGroupByKey()
            | "PickCached" >> beam.ParDo(PickCached()).with_outputs(HIT_TAG, main="miss")
        )


class ToCacheTable(beam.DoFn):
    """A batch of ``(key, float32[k, d])`` -> one ``doc_cache_schema`` table."""

    def __init__(self, shape: tuple[int, int], fingerprint: str):
        self._shape, self._fingerprint = shape, fingerprint

    def process(self, batch: Sequence[tuple[DocKey, np.ndarray]]) -> Iterable[pa.Table]:
        schema = doc_cache_schema(*self._shape)
        flat = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for _, v in batch]).reshape(-1)
        columns = [pa.array([key[i] for key, _ in batch], pa.string()) for i in range(3)]
        columns.append(pa.array([self._fingerprint] * len(batch), pa.string()))
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()),
                                                         type=schema.field("embedding").type))
        yield pa.Table.from_arrays(columns, schema=schema)


class WriteCache(beam.PTransform):
    """Model outputs ``(key, float32[k, d])`` -> new cache shards ``DIR/key-<digest>/part-<run>-*.parquet``.

    Entries are content-addressed (document key, under the directory of the compression key),
    so a shard from a run that later fails is still correct; Beam's sink only renames
    complete files into place.
    """

    def __init__(self, cache_root: str, run_id: str, key: CompressionKey):
        super().__init__()
        from apache_beam.io.filesystems import FileSystems

        self._prefix = FileSystems.join(cache_directory(cache_root, key), f"{CACHE_FILE_PREFIX}-{run_id}")
        self._shape, self._fingerprint = (key.num_embeddings, key.hidden_size), key.checkpoint_fingerprint

    def expand(self, compressions: beam.PCollection) -> beam.pvalue.PDone:
        return (
            compressions
            | "BatchForCache" >> beam.BatchElements(min_batch_size=1, max_batch_size=256)
            | "ToCacheTables" >> beam.ParDo(ToCacheTable(self._shape, self._fingerprint))
            | "WriteCacheShards" >> WriteParquetTables(self._prefix, doc_cache_schema(*self._shape))
        )
