"""Storage format of the embedding column, on real soft prompts: bytes per user and decode time per codec.

Random normal floats compress less than real prompts do (their mantissas are noise, but
real rows share exponents), so this table compresses documents with the bundled model and
writes their prompts with each candidate encoding, the job's writer options changed in
one place at a time.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.store_tables import ToStoreTables, rows_per_row_group, store_writer_options

#: label -> changes to the job's writer options (``{}`` is the job's own).
VARIANTS: dict[str, dict[str, Any]] = {
    "dictionary on, zstd (before issue 21)": {"use_dictionary": True, "use_byte_stream_split": False,
                                              "write_statistics": True},
    "dictionary off, no compression": {"compression": "none", "use_byte_stream_split": False},
    "dictionary off, zstd": {"use_byte_stream_split": False},
    "dictionary off, byte-stream-split, no compression": {"compression": "none"},
    "dictionary off, byte-stream-split, lz4": {"compression": "lz4"},
    "dictionary off, byte-stream-split, zstd (the job's)": {},
}


def real_prompts(n_docs: int, say: Callable[[str], None]) -> np.ndarray:
    """``(n_docs, k, d)`` compressions of synthetic tweets by the bundled checkpoint (CPU)."""
    from commer_core.checkpoint import load_checkpoint
    from commer_core.defaults import default_checkpoint_path
    from jobs.bench import perf

    say(f"bench: serving: compressing {n_docs} documents with the bundled model for the format table ...")
    compressor = load_checkpoint(default_checkpoint_path())
    ids = perf.make_documents("tweet", n_docs, len(compressor.tokenizer), seed=3)
    texts = [compressor.tokenizer.decode(x) for x in ids]
    return np.stack([np.asarray(c, dtype=np.float32) for c in compressor.compress_texts(texts)])


def _decode_ms(data: bytes) -> float:
    source = pa.BufferReader(data)
    metadata = pq.read_metadata(source)
    best = []
    for _ in range(3):
        began = time.thread_time()
        for g in range(metadata.num_row_groups):
            pq.ParquetFile(source, metadata=metadata, pre_buffer=False).read_row_group(
                g, columns=["embedding", "n_docs"], use_threads=False)
        best.append((time.thread_time() - began) / metadata.num_row_groups)
    return min(best) * 1e3


def format_table(prompts: np.ndarray) -> dict[str, Any]:
    """Bytes per user (whole file and embedding column) and CPU ms to decode one row group, per variant."""
    users, k, d = prompts.shape
    writer = ToStoreTables(k, d, "f" * 64, datetime(2026, 1, 1, tzinfo=timezone.utc), 64)
    per_group = rows_per_row_group(k, d, 64)
    tables = [writer.to_table([(f"user-{i:011d}", (prompts[i], 1)) for i in range(s, min(s + per_group, users))])
              for s in range(0, users, per_group)]
    rows = {}
    for label, change in VARIANTS.items():
        buffer = io.BytesIO()
        with pq.ParquetWriter(buffer, tables[0].schema, **{**store_writer_options(), **change}) as sink:
            for table in tables:
                sink.write_table(table)
        data = buffer.getvalue()
        metadata = pq.read_metadata(pa.BufferReader(data))
        column = sum(metadata.row_group(g).column(1).total_compressed_size for g in range(metadata.num_row_groups))
        rows[label] = {"bytes_per_user": len(data) / users, "embedding_bytes_per_user": column / users,
                       "decode_ms": _decode_ms(data)}
    return {"users": users, "k": k, "d": d, "rows_per_row_group": per_group, "raw_bytes_per_user": 4 * k * d,
            "variants": rows}
