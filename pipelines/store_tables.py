"""Store writing: per-user means -> sorted ``pa.Table`` chunks, one Parquet row group each.

Users are grouped by user-id quantile ranges, so each row group covers a narrow, sorted
run of ids and a reader looking up a few users skips the others by their statistics.
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
