"""Stores for ``bench --serving``: random users, laid out and indexed by the compress job's own code.

The Beam graph would take minutes per million users, so the benchmark calls the steps
that decide the layout directly: users sorted and cut into quantile ranges (as
``GroupUsersByRange``), each range chunked into row groups by ``ToStoreTables``
(``rows_per_row_group``), written with ``store_writer_options``, indexed by
``pipelines.store_index.write_index`` and committed as a version with ``LATEST``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from commer_core.store import LATEST_NAME, MANIFEST_NAME
from pipelines.options import CompressParams
from pipelines.store_index import write_index
from pipelines.store_tables import ToStoreTables, store_writer_options
from schemas import StoreManifest, store_schema

VERSION = "v-bench"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def user_id(i: int) -> str:
    """A 16-character id (the length the index's memory target is stated for)."""
    return f"user-{i:011d}"


def _ranges(users: int, ranges: int) -> list[range]:
    """Contiguous runs of the sorted ids, as ``GroupUsersByRange`` cuts them at quantiles."""
    bounds = np.linspace(0, users, min(ranges, users) + 1).astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _write_files(version: Path, users: int, k: int, d: int, files: int, fingerprint: str, seed: int,
                 dtype: str) -> None:
    defaults = CompressParams(output="unused")
    writer = ToStoreTables(k, d, fingerprint, T0, defaults.rows_per_row_group, dtype)
    rng = np.random.default_rng(seed)
    options = store_writer_options()
    sinks = [pq.ParquetWriter(version / f"embeddings-{f:05d}-of-{files:05d}.parquet", store_schema(k, d, dtype),
                              **options)
             for f in range(files)]
    try:
        for n, ids in enumerate(_ranges(users, defaults.store_ranges)):
            means = rng.standard_normal((len(ids), k, d), dtype=np.float32)
            rows = [(user_id(i), (means[j], 1 + i % 7)) for j, i in enumerate(ids)]
            for table in writer.process((n, rows)):
                sinks[n % files].write_table(table)
    finally:
        for sink in sinks:
            sink.close()


def build_store(root: Path, users: int, k: int, d: int, *, files: int = 1, seed: int = 0,
                checkpoint: dict[str, Any] | None = None, dtype: str = "float32") -> Path:
    """A committed store of ``users`` random users under ``root`` (created); returns ``root``.

    ``checkpoint`` (``fingerprint``, ``base_model``, ``base_model_sha256``) makes the store
    belong to a real checkpoint, so ``PersonalizedLM`` accepts it.
    """
    ckpt = checkpoint or {"fingerprint": "b" * 64, "base_model": "bench", "base_model_sha256": None}
    version = root / VERSION
    version.mkdir(parents=True, exist_ok=True)
    _write_files(version, users, k, d, files, ckpt["fingerprint"], seed, dtype)
    manifest = StoreManifest(
        checkpoint_fingerprint=ckpt["fingerprint"], base_model=ckpt["base_model"],
        base_model_sha256=ckpt["base_model_sha256"], num_embeddings=k, hidden_size=d, counts={"users": users},
        input_pattern="bench://random", runner="bench", started_at=T0, finished_at=T0 + timedelta(seconds=1),
        package_version="bench")
    commit_version(version, manifest)
    return root


def commit_version(version: Path, manifest: StoreManifest) -> None:
    """Index the embeddings files written under ``version``, then write its manifest and point LATEST at it.

    The steps of the job's commit, without its lock (nothing else writes these stores).
    """
    manifest, _ = write_index(str(version), manifest)
    (version / MANIFEST_NAME).write_text(manifest.to_json())
    (version.parent / LATEST_NAME).write_text(version.name + "\n")


def store_bytes(root: Path) -> dict[str, int]:
    """Bytes on disk of the committed version: embeddings files and the index files."""
    version = root / VERSION
    embeddings = sum(p.stat().st_size for p in version.glob("embeddings-*.parquet"))
    index = sum(p.stat().st_size for p in version.glob("_INDEX*.parquet"))
    return {"embeddings": embeddings, "index": index}
