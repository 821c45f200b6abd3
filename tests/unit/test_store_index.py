"""The store's lookup index: written at commit with the job's layout, read by `get` with one range per row group."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from commer_core.store import MANIFEST_NAME, EmbeddingStore, StoreError, UnindexedStoreWarning, open_store
from jobs.bench.serving_store import VERSION, build_store, user_id
from pipelines.commit import CommitError
from pipelines.store_index import write_index
from pipelines.store_tables import EMBEDDING_LEAF, rows_per_row_group, store_writer_options
from schemas import INDEX_USERS_NAME, StoreIndexInfo, StoreManifest, store_schema

K, D = 4, 8


class _CountingFS(LocalFileSystem):
    """A local fsspec filesystem that records every read: ranged or whole (``cat_file``, what an object
    store bills as one GET) and any other open (``(path, "open", None)``)."""

    reads: list[tuple[str, object, int | None]] = []
    _in_cat = False

    def cat_file(self, path, start=None, end=None, **kwargs):
        _CountingFS.reads.append((str(path), start, end))
        _CountingFS._in_cat = True
        try:
            return super().cat_file(path, start=start, end=end, **kwargs)
        finally:
            _CountingFS._in_cat = False

    def _open(self, path, mode="rb", **kwargs):
        if not _CountingFS._in_cat:
            _CountingFS.reads.append((str(path), "open", None))
        return super()._open(path, mode, **kwargs)


def _counted(store: EmbeddingStore) -> EmbeddingStore:
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(_CountingFS()))
    counted = EmbeddingStore(store.uri, fs, store.manifest, version=store.version, root=store.root,
                             base=store._base, index=store.index)
    _CountingFS.reads = []
    return counted


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """20k users, k=4, d=8, in 3 files, as the job lays them out: 256 ranges of ~78 users, row groups of <= 64."""
    return build_store(tmp_path_factory.mktemp("indexed") / "store", 20_000, K, D, files=3, seed=1)


def _expected(store_dir, users: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    table = pq.read_table(store_dir / VERSION, columns=["user_id", "embedding", "n_docs"])
    rows = {u: i for i, u in enumerate(table.column("user_id").to_pylist())}
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).reshape(-1, K, D)
    n_docs = table.column("n_docs").to_pylist()
    return {u: (emb[rows[u]], n_docs[rows[u]]) for u in users if u in rows}


def test_the_index_is_in_the_manifest_and_get_returns_the_stored_rows(store_dir):
    store = open_store(store_dir)
    assert store.manifest.index == StoreIndexInfo("_INDEX.parquet", "_INDEX_FILES.parquet", users=20_000, files=3)
    assert len(store) == 20_000 and store.users() == sorted(user_id(i) for i in range(20_000))
    wanted = [user_id(i) for i in (0, 63, 64, 250, 19_999)] + ["nobody", user_id(20_000)]
    got = store.get(wanted)
    expected = _expected(store_dir, wanted)
    assert set(got) == set(expected) == set(wanted[:5])
    for user, (emb, n_docs) in got.items():
        assert emb.dtype == np.float32 and emb.shape == (K, D)
        np.testing.assert_array_equal(emb, expected[user][0])
        assert n_docs == expected[user][1]


def test_a_lookup_reads_one_range_per_row_group_and_unknown_users_read_nothing(store_dir):
    store = _counted(open_store(store_dir))
    assert store.get(["nobody", "user-99999999999"]) == {} and _CountingFS.reads == []
    store.get([user_id(100)])
    (path, start, end), = _CountingFS.reads
    assert path.endswith(".parquet") and "embeddings-" in path and 0 < end - start < 64 * K * D * 4 + 2000
    _CountingFS.reads = []
    store.get([user_id(i) for i in (1, 2, 3)])  # three users in one row group: one range
    assert len(_CountingFS.reads) == 1
    _CountingFS.reads = []
    store.get([user_id(i) for i in (1, 200, 400)])  # three row groups
    assert len(_CountingFS.reads) == 3 and all(s is not None for _, s, _ in _CountingFS.reads)


def test_refresh_reads_only_latest_while_the_version_is_unchanged(store_dir):
    store = _counted(open_store(store_dir))
    assert store.latest_version() == VERSION
    assert [r[0].rsplit("/", 1)[-1] for r in _CountingFS.reads] == ["LATEST"]


def test_a_version_without_an_index_opens_with_a_warning_and_still_answers(tmp_path):
    root = build_store(tmp_path / "old", 200, K, D, seed=2)
    version = root / VERSION
    data = json.loads((version / MANIFEST_NAME).read_text())
    del data["index"]
    (version / MANIFEST_NAME).write_text(json.dumps(data))
    for name in ("_INDEX.parquet", "_INDEX_FILES.parquet"):
        (version / name).unlink()
    with pytest.warns(UnindexedStoreWarning, match="no lookup index"):
        store = open_store(root)
    assert store.index is None and len(store) == 200
    got = store.get([user_id(7), "nobody"])
    np.testing.assert_array_equal(got[user_id(7)][0], _expected(root, [user_id(7)])[user_id(7)][0])


def test_an_index_that_disagrees_with_the_manifest_is_refused(tmp_path):
    root = build_store(tmp_path / "s", 100, K, D)
    path = root / VERSION / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["index"]["users"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="holds 100 users in 1 files, the manifest says 99 in 1"):
        open_store(root)
    (root / VERSION / INDEX_USERS_NAME).write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="cannot read the lookup index _INDEX.parquet"):
        open_store(root)


def test_a_user_in_two_rows_cannot_be_indexed(tmp_path, store_dir):
    version = tmp_path / "v"
    version.mkdir()
    table = pq.read_table(store_dir / VERSION / "embeddings-00000-of-00003.parquet")
    for f in range(2):
        pq.write_table(table.slice(0, 5), version / f"embeddings-0000{f}-of-00002.parquet")
    manifest = open_store(store_dir).manifest
    with pytest.raises(CommitError, match=f"user '{table.column('user_id')[0].as_py()}' is in more than one row"):
        write_index(str(version), manifest)


def test_manifest_index_field_round_trips_and_is_checked():
    info = StoreIndexInfo("_INDEX.parquet", "_INDEX_FILES.parquet", users=3, files=1)
    assert StoreIndexInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    with pytest.raises(ValueError, match="'index.users_file' must be a file name in the version"):
        StoreIndexInfo("../x", "_INDEX_FILES.parquet", users=3, files=1)
    with pytest.raises(ValueError, match="'index.files' is missing"):
        StoreIndexInfo.from_dict({"users_file": "a", "files_file": "b", "users": 1})
    with pytest.raises(ValueError, match="index.format_version' is 9"):
        StoreIndexInfo("a", "b", users=1, files=1, format_version=9)


def test_embeddings_are_written_without_dictionary_and_byte_stream_split(store_dir):
    metadata = pq.read_metadata(store_dir / VERSION / "embeddings-00000-of-00003.parquet")
    leaves = [metadata.schema.column(j).path for j in range(metadata.num_columns)]
    column = metadata.row_group(0).column(leaves.index(EMBEDDING_LEAF))
    assert "BYTE_STREAM_SPLIT" in column.encodings and "RLE_DICTIONARY" not in column.encodings
    assert not column.has_dictionary_page and column.compression == "ZSTD"
    assert max(metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)) == 64  # the job's cap
    assert rows_per_row_group(16, 576, 64) == 7  # at real dims, 256 KiB of embeddings
    assert store_writer_options()["use_byte_stream_split"] == [EMBEDDING_LEAF]
    assert store_schema(K, D).field("embedding").type.list_size == K * D


def test_twenty_thousand_users_fit_in_the_memory_target(store_dir):
    store = open_store(store_dir)
    per_user = (store.index.nbytes + store.index.footer_bytes) / len(store)
    assert store.index.nbytes / len(store) <= 26 and per_user <= 40, (store.index.nbytes, store.index.footer_bytes)
    rng = np.random.default_rng(0)
    wanted = [user_id(int(i)) for i in rng.integers(20_000, size=32)]
    got = store.get(wanted)
    expected = _expected(store_dir, wanted)
    assert set(got) == set(wanted)
    for user in wanted:
        np.testing.assert_array_equal(got[user][0], expected[user][0])


def test_a_manifest_without_the_index_field_reads_as_none():
    from datetime import datetime, timezone

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    data = json.loads(StoreManifest(checkpoint_fingerprint="f" * 64, base_model="m", base_model_sha256=None,
                                    num_embeddings=K, hidden_size=D, counts={}, input_pattern="x", runner="r",
                                    started_at=t, finished_at=t, package_version="t").to_json())
    del data["index"]
    assert StoreManifest.from_json(json.dumps(data)).index is None


def test_a_float16_store_is_half_the_size_and_reads_back_as_float32(tmp_path):
    half = build_store(tmp_path / "half", 2_000, K, 64, dtype="float16")
    full = build_store(tmp_path / "full", 2_000, K, 64)
    sizes = [sum(p.stat().st_size for p in (s / VERSION).glob("embeddings-*")) for s in (half, full)]
    assert sizes[0] < 0.6 * sizes[1], sizes  # the embeddings halve; ids and footers stay
    got = open_store(half).get([user_id(5)])[user_id(5)][0]
    exact = open_store(full).get([user_id(5)])[user_id(5)][0]  # same seed: the same random means
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, exact.astype(np.float16).astype(np.float32))
