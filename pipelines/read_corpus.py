"""Reading corpus Parquet files into row dicts, one row group per element.

The launcher has already read every file's footer (schemas, row-group counts), so the
job reads exactly the files it checked: ``(file, row group)`` pairs are reshuffled
across workers and each is read on its own, and an unreadable one fails the job with
an error naming the file and the row group.

Beam's ``ReadAllFromParquet`` converts each record batch with ``Table.to_pydict``, which
raises ``UnicodeDecodeError`` for the whole file when a single string value holds
invalid UTF-8 (Parquet writers do not all validate it). Here such a batch is decoded
value by value, and a value that is not valid UTF-8 stays ``bytes``: it reaches the
row validator, which dead-letters that row with a reason and keeps every other row.

With user buckets (:mod:`pipelines.user_buckets`) each bucket's pipeline keeps only
its users' rows, dropped on the Arrow table before any row becomes a Python dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from commer_core.errors import CommerError
from pipelines.user_buckets import UserBucket
from schemas import is_stringlike


def _lenient_column(column: pa.ChunkedArray) -> list[Any]:
    if not is_stringlike(column.type):
        return column.to_pylist()
    values: list[Any] = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        raw = chunk.view(pa.large_binary() if pa.types.is_large_string(chunk.type) else pa.binary())
        values.extend(_decode(v) for v in raw.to_pylist())
    return values


def _decode(value: bytes | None) -> str | bytes | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as dicts; a string value that is not valid UTF-8 comes back as ``bytes``."""
    try:
        return table.to_pylist()
    except UnicodeDecodeError:
        columns = {name: _lenient_column(table.column(name)) for name in table.column_names}
        return [dict(zip(columns, values)) for values in zip(*columns.values())]


class CorpusReadError(CommerError, IOError):
    """A corpus file's data could not be read (its footer could)."""


def read_row_group(
    element: tuple[str, int], columns: Sequence[str], user_column: str = "", bucket: UserBucket = UserBucket()
) -> Iterable[tuple[str, dict[str, Any]]]:
    """``(file, row group)`` -> ``(file, row)`` for each of its rows whose user is in ``bucket``."""
    path, index = element
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            table = pq.ParquetFile(fh).read_row_group(index, columns=list(columns))
    except Exception as exc:
        raise CorpusReadError(f"--input file {path}, row group {index}: {type(exc).__name__}: {exc}") from exc
    if bucket.count > 1:
        users = _lenient_column(table.column(user_column))
        table = table.filter(pa.array([bucket.contains(user) for user in users], pa.bool_()))
    for row in table_rows(table):
        yield path, row


class ReadCorpusFiles(beam.PTransform):
    """``[(file, row groups), ...]`` -> ``(source_file, row_dict)`` for the given columns.

    ``columns`` starts with the user column, which ``bucket`` selects rows by.
    """

    def __init__(self, files: Sequence[tuple[str, int]], columns: Sequence[str], bucket: UserBucket = UserBucket()):
        super().__init__()
        self._parts = [(path, index) for path, row_groups in files for index in range(row_groups)]
        self._columns = list(columns)
        self._bucket = bucket

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "RowGroups" >> beam.Create(self._parts)
            | "SpreadRowGroups" >> beam.Reshuffle()
            | "ReadRowGroups" >> beam.FlatMap(read_row_group, self._columns, self._columns[0], self._bucket)
        )
