"""Store writing: per-user means -> sorted ``pa.Table`` chunks, one Parquet row group each.

Users are grouped by user-id quantile ranges, so each row group covers a narrow, sorted
run of ids (readers without the lookup index skip the others by their statistics). A
row group holds at most :data:`ROW_GROUP_BYTES` of embeddings: a lookup reads one whole
row group, so its size is the latency of a lookup, while each row group costs about
500-800 bytes of footer that a reader holds in memory (docs/PERFORMANCE.md, "Serving").
:func:`store_writer_options` is the one definition of how the files are encoded.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines.validate import METRICS_NAMESPACE
from schemas import TIMESTAMP_TYPE, store_schema


#: Raw embedding bytes a row group holds at most (then fewer rows than ``rows_per_row_group``):
#: 7 users at k=16, d=576 (one lookup decodes ~0.3 ms), 64 (the row cap) at k=4, d=64.
ROW_GROUP_BYTES = 256 * 1024
#: Codec of the store's files. The embedding column is written byte-stream-split (floats'
#: bytes grouped by position, so exponents compress) and without dictionary: at k=16, d=576
#: 31.9 KB per user, against 34.4 KB zstd alone, 37.0 KB uncompressed and 52.9 KB with
#: dictionary encoding, which never repeats for float vectors (docs/PERFORMANCE.md).
STORE_CODEC = "zstd"
#: The Parquet leaf path of the embedding's values.
EMBEDDING_LEAF = "embedding.list.element"
#: Columns whose values repeat (constants per version, small counts): dictionary-encoded.
_DICTIONARY_COLUMNS = ["num_embeddings", "hidden_size", "n_docs", "checkpoint_fingerprint", "computed_at"]


def store_writer_options() -> dict[str, Any]:
    """``pq.ParquetWriter`` keyword arguments of every embeddings file (the job's sink and the serving bench).

    Statistics only on ``user_id``: the other columns' statistics serve no reader and each
    costs footer bytes per row group.
    """
    return {"compression": STORE_CODEC, "use_dictionary": list(_DICTIONARY_COLUMNS),
            "use_byte_stream_split": [EMBEDDING_LEAF], "write_statistics": ["user_id"]}


def rows_per_row_group(k: int, d: int, cap: int, dtype: str = "float32") -> int:
    """Users per row group: ``cap`` or fewer, so that a row group's embeddings stay within :data:`ROW_GROUP_BYTES`."""
    return max(1, min(cap, ROW_GROUP_BYTES // (np.dtype(dtype).itemsize * k * d)))


def assign_range(element: tuple[str, Any], bounds: Sequence[str]) -> tuple[int, tuple[str, Any]]:
    """Key a user row by the quantile range its id falls in."""
    inner = list(bounds[1:-1]) if len(bounds) > 2 else []
    return bisect.bisect_right(inner, element[0]), element


class ToStoreTables(beam.DoFn):
    """One user-id range ``(range, [(user_id, (mean, n_docs)), ...])`` -> sorted ``pa.Table`` chunks.

    Each table becomes one Parquet row group covering a contiguous, sorted run of user ids,
    so its ``user_id`` min/max statistics are narrow and readers skip it unless it can hold
    the ids they look for. ``rows_per_table`` is a cap (:func:`rows_per_row_group`).
    """

    def __init__(
        self, num_embeddings: int, hidden_size: int, fingerprint: str, computed_at: datetime, rows_per_table: int,
        dtype: str = "float32",
    ):
        self._k, self._d = num_embeddings, hidden_size
        self._dtype = dtype  # the means are float64 sums / counts; the store keeps them as float32 (or float16)
        self._fingerprint = fingerprint
        self._computed_at = computed_at
        self._rows_per_table = rows_per_row_group(num_embeddings, hidden_size, rows_per_table, dtype)
        self._users_written = Metrics.counter(METRICS_NAMESPACE, "users_written")

    def process(self, element: tuple[int, Iterable[tuple[str, tuple[np.ndarray, int]]]]):
        _, rows = element
        rows = sorted(rows, key=lambda r: r[0])
        for start in range(0, len(rows), self._rows_per_table):
            yield self.to_table(rows[start : start + self._rows_per_table])

    def to_table(self, rows: Sequence[tuple[str, tuple[np.ndarray, int]]]) -> pa.Table:
        schema = store_schema(self._k, self._d, self._dtype)
        n = len(rows)
        flat = np.stack([np.asarray(mean, dtype=self._dtype).reshape(-1) for _, (mean, _) in rows]).reshape(-1)
        item = schema.field("embedding").type.value_type
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat, item), type=schema.field("embedding").type)
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
