"""commer_core.parquet_footer: a footer cut per row group splices back into footers pyarrow reads exactly."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from commer_core.parquet_footer import FooterError, row_group_footer, split_footer


def _file(groups: int = 20, rows: int = 3) -> bytes:
    """A Parquet file with a nested column, strings, statistics and key-value metadata (the ARROW schema)."""
    buffer = io.BytesIO()
    schema = pa.schema([("id", pa.string()), ("v", pa.list_(pa.float32(), 4)), ("n", pa.int64())],
                       metadata={"note": "x" * 300})
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(buffer, schema, use_byte_stream_split=["v.list.element"]) as writer:
        for g in range(groups):
            writer.write_table(pa.table({
                "id": [f"u{g:03d}{i}" for i in range(rows)],
                "v": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=4 * rows).astype(np.float32)), 4),
                "n": list(range(rows))}, schema=schema))
    return buffer.getvalue()


def _footer(data: bytes) -> bytes:
    return data[-8 - int.from_bytes(data[-8:-4], "little"):-8]


@pytest.mark.parametrize("picked", [[0], [19], [3, 7, 11], list(range(16)), []])
def test_spliced_footers_read_the_same_rows_as_the_whole_file(picked):
    data = _file()
    whole = pq.ParquetFile(pa.BufferReader(data))
    parts = split_footer(_footer(data))
    assert len(parts.row_groups) == 20
    rows = sum(whole.metadata.row_group(g).num_rows for g in picked)
    alone = pq.read_metadata(pa.BufferReader(row_group_footer(
        parts.head, parts.middle, parts.tail, [parts.row_groups[g] for g in picked], rows)))
    assert (alone.num_row_groups, alone.num_rows) == (len(picked), rows)
    assert alone.metadata[b"note"] == b"x" * 300  # key-value metadata (and the Arrow schema) kept
    reader = pq.ParquetFile(pa.BufferReader(data), metadata=alone)
    for i, g in enumerate(picked):
        assert reader.read_row_group(i).equals(whole.read_row_group(g))
    assert reader.schema_arrow.field("v").type == pa.list_(pa.float32(), 4)


def test_what_is_not_a_footer_is_refused():
    with pytest.raises(FooterError):
        split_footer(b"\x15\x04\x19")  # truncated
    with pytest.raises(FooterError, match="num_rows / row_groups"):
        split_footer(b"\x15\x04\x00")  # a struct with only field 1
