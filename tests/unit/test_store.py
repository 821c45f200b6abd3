"""commer_core.store: committed stores only, manifest checks, lookups that skip row groups."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from commer_core.store import MANIFEST_NAME, EmbeddingStore, StoreError, open_store
from schemas import StoreManifest, store_schema

K, D = 2, 8
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _manifest(fingerprint: str = "f" * 64, k: int = K, d: int = D, **counts: int) -> StoreManifest:
    return StoreManifest(
        checkpoint_fingerprint=fingerprint,
        base_model="tiny-random",
        base_model_sha256=None,
        num_embeddings=k,
        hidden_size=d,
        counts={"users": 0, **counts},
        input_pattern="mem://test",
        runner="DirectRunner",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
        package_version="test",
    )


def _table(users: list[str], rng: np.random.Generator) -> tuple[pa.Table, dict[str, np.ndarray]]:
    from pipelines.compress import ToStoreTables

    means = {u: rng.normal(size=(K, D)).astype(np.float32) for u in users}
    rows = [(u, (means[u], i + 1)) for i, u in enumerate(users)]
    return ToStoreTables(K, D, "f" * 64, T0, rows_per_table=len(users)).to_table(rows), means


def write_store(root, n_groups: int = 1, per_group: int = 3, manifest: StoreManifest | None = None, seed: int = 0):
    """A store with ``n_groups`` row groups of sorted, consecutive user ids; returns {user: mean}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(root / "embeddings-00000-of-00001.parquet", store_schema(K, D), compression="zstd")
    means: dict[str, np.ndarray] = {}
    for g in range(n_groups):
        table, group_means = _table([f"user-{g:03d}-{i:02d}" for i in range(per_group)], rng)
        writer.write_table(table)
        means.update(group_means)
    writer.close()
    if manifest is not False:
        (root / MANIFEST_NAME).write_text((manifest or _manifest(users=len(means))).to_json())
    return means


def test_open_store_reads_a_committed_store(tmp_path):
    means = write_store(tmp_path / "s", n_groups=2)
    store = open_store(tmp_path / "s")
    assert isinstance(store, EmbeddingStore)
    assert (store.num_embeddings, store.hidden_size, len(store)) == (K, D, 6)
    assert store.users() == sorted(means)
    got = store.get(["user-001-02", "user-000-00", "nobody"])
    assert set(got) == {"user-001-02", "user-000-00"}
    emb, n_docs = got["user-001-02"]
    assert emb.shape == (K, D) and emb.dtype == np.float32 and n_docs == 3
    np.testing.assert_array_equal(emb, means["user-001-02"])
    assert store.get([]) == {}
    assert store.head(2).num_rows == 2
    assert store.dead_letters().num_rows == 0
    with pytest.raises(TypeError):
        store.get([1])


def test_a_directory_without_manifest_is_refused(tmp_path):
    write_store(tmp_path / "s", manifest=False)
    with pytest.raises(StoreError, match="no _MANIFEST.json: not a committed store"):
        open_store(tmp_path / "s")
    with pytest.raises(StoreError, match="not a directory"):
        open_store(tmp_path / "missing")


def test_invalid_or_mismatched_manifests_are_refused(tmp_path):
    write_store(tmp_path / "bad", manifest=False)
    (tmp_path / "bad" / MANIFEST_NAME).write_text(json.dumps({"num_embeddings": 2}))
    with pytest.raises(StoreError, match="invalid _MANIFEST.json"):
        open_store(tmp_path / "bad")
    write_store(tmp_path / "shape", manifest=_manifest(k=4))
    with pytest.raises(StoreError, match="k=4 x d=8"):
        open_store(tmp_path / "shape")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / MANIFEST_NAME).write_text(_manifest().to_json())
    with pytest.raises(StoreError, match="no embeddings"):
        open_store(tmp_path / "empty")


class _CountingLocalFS(LocalFileSystem):
    """A local filesystem that counts the bytes pyarrow reads through it."""

    bytes_read = 0

    def _open(self, path, mode="rb", **kwargs):
        handle = super()._open(path, mode, **kwargs)
        read = handle.read

        def counting_read(*args):
            data = read(*args)
            _CountingLocalFS.bytes_read += len(data)
            return data

        handle.read = counting_read
        return handle


def test_get_reads_only_the_row_groups_that_can_hold_the_users(tmp_path):
    write_store(tmp_path / "s", n_groups=40, per_group=10)
    committed = open_store(tmp_path / "s")
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(_CountingLocalFS()))
    store = EmbeddingStore(committed.uri, fs, committed.manifest, committed.embedding_files, [])

    _CountingLocalFS.bytes_read = 0
    full = store.dataset().to_table()
    assert full.num_rows == 400
    full_bytes = _CountingLocalFS.bytes_read

    _CountingLocalFS.bytes_read = 0
    got = store.get(["user-007-03", "user-031-09"])
    assert set(got) == {"user-007-03", "user-031-09"}
    assert _CountingLocalFS.bytes_read < 0.25 * full_bytes, (_CountingLocalFS.bytes_read, full_bytes)


def test_check_compatible_against_a_checkpoint(tmp_path):
    from commer_core.backbone import load_backbone
    from commer_core.checkpoint import fingerprint, read_config, save_checkpoint
    from tests.helpers import make_compressor

    ckpt = tmp_path / "ckpt"
    save_checkpoint(make_compressor(load_backbone("tiny-random"), k=K), ckpt, trained=False)
    store_d = read_config(ckpt)["compressor"]["hidden_size"]  # 64 for tiny-random
    root = tmp_path / "s"
    root.mkdir()
    schema = store_schema(K, store_d)
    table = pa.Table.from_pylist(
        [{"user_id": "u", "embedding": [0.0] * (K * store_d), "num_embeddings": K, "hidden_size": store_d,
          "n_docs": 1, "checkpoint_fingerprint": fingerprint(ckpt), "computed_at": T0}],
        schema=schema,
    )
    pq.write_table(table, root / "embeddings-00000-of-00001.parquet")
    (root / MANIFEST_NAME).write_text(_manifest(fingerprint(ckpt), d=store_d).to_json())
    store = open_store(root)
    store.check_compatible(ckpt)
    store.check_compatible(read_config(ckpt))

    other = tmp_path / "other"
    save_checkpoint(make_compressor(load_backbone("tiny-random"), k=K, seed=5), other, trained=False)
    with pytest.raises(StoreError, match="fingerprint"):
        store.check_compatible(other)
    config = read_config(ckpt)
    config["compressor"]["num_embeddings"] = 3
    with pytest.raises(StoreError, match="k=3"):
        store.check_compatible(config)
    with pytest.raises(StoreError, match="cannot check"):
        store.check_compatible(tmp_path / "nope")


def test_the_compression_key_round_trips_through_the_manifest_and_older_manifests_still_read(tmp_path):
    """The key (issue 19, defect 1) is an additive manifest field: absent in older stores (None)."""
    import dataclasses

    from schemas.store import CompressionKey

    key = CompressionKey(checkpoint_fingerprint="f" * 64, base_model_sha256="b" * 64, max_doc_tokens=16,
                         num_embeddings=K, hidden_size=D, dtype="float32", device_class="cpu")
    manifest = dataclasses.replace(_manifest(users=3), compression_key=key)
    data = json.loads(manifest.to_json())
    assert data["compression_key"]["digest"] == key.digest and len(key.digest) == 64
    assert StoreManifest.from_json(manifest.to_json()) == manifest
    write_store(tmp_path / "new", manifest=manifest)
    assert open_store(tmp_path / "new").manifest.compression_key == key

    del data["compression_key"]  # a manifest written before the key existed
    assert StoreManifest.from_json(json.dumps(data)).compression_key is None
    # the digest changes with every field, and a manifest missing one of the key's fields is refused
    assert dataclasses.replace(key, max_doc_tokens=4).digest != key.digest
    assert dataclasses.replace(key, device_class="cuda", dtype="bfloat16").digest != key.digest
    broken = json.loads(manifest.to_json())
    del broken["compression_key"]["max_doc_tokens"]
    with pytest.raises(ValueError, match="compression_key.max_doc_tokens' is missing"):
        StoreManifest.from_json(json.dumps(broken))
