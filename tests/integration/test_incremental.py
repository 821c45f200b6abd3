"""Nightly-grade runs: incremental updates, the compression cache, determinism.

Truth is a full recompute over tonight's input: an incremental run (with or without the
cache) must give every user present tonight the same embedding within 1e-4, keep users
absent tonight exactly as they were, and count what it reused.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from commer_core.store import open_store
from schemas import text_sha256
from tests.helpers import run_job, write_corpus

NIGHT_1 = {
    "alice": ["I baked bread this morning.", "Sourdough needs a lively starter."],
    "bob": ["Saturn's rings were visible tonight.", "Jupiter rose after midnight."],
    "carol": ["The striker scored twice.", "The keeper saved a penalty."],
    "dave": ["The harbour committee met again on Tuesday."],
}


def rows_of(texts: dict[str, list[str]]) -> list[dict]:
    return [{"user_id": u, "doc_id": f"{u}-{i}", "text": t} for u, ts in texts.items() for i, t in enumerate(ts)]


def night_2_rows() -> list[dict]:
    """alice adds a document, bob deletes one, carol edits one, dave is absent, erin is new."""
    rows = [r for r in rows_of(NIGHT_1) if r["user_id"] != "dave" and r["doc_id"] != "bob-1"]
    rows = [dict(r, text="The striker scored three times.") if r["doc_id"] == "carol-0" else r for r in rows]
    return rows + [{"user_id": "alice", "doc_id": "alice-9", "text": "A rye loaf this time."},
                   {"user_id": "erin", "doc_id": "erin-0", "text": "First post from erin."}]


def embeddings(output) -> dict[str, tuple[np.ndarray, int]]:
    store = open_store(output)
    return store.get(store.users())


@pytest.fixture(scope="module")
def nights(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("nights")
    night_1 = write_corpus(root / "night-1", rows_of(NIGHT_1))
    night_2 = write_corpus(root / "night-2", night_2_rows(), n_files=3)
    full = run_job(night_2, root / "full-recompute", tiny_checkpoint)
    return root, night_1, night_2, full


@pytest.mark.parametrize("with_cache,buckets", [(False, 1), (True, 1), (True, 4)],
                         ids=["no-cache", "cache", "cache-4-user-buckets"])
def test_incremental_run_equals_a_full_recompute(nights, tiny_checkpoint, tmp_path, with_cache, buckets):
    """4 buckets: alice+carol, bob+dave, erin and an empty one; a user's rows, store row and cache entries meet."""
    root, night_1, night_2, full = nights
    cache = ("--doc-cache", str(tmp_path / "cache")) if with_cache else ()
    cache += ("--user-buckets", str(buckets))
    first = run_job(night_1, tmp_path / "store", tiny_checkpoint, *cache)
    before = embeddings(tmp_path / "store")
    second = run_job(night_2, tmp_path / "store", tiny_checkpoint, "--previous", str(tmp_path / "store"), *cache)

    got, want = embeddings(tmp_path / "store"), embeddings(full.output)
    assert sorted(got) == sorted([*want, "dave"])
    for user, (mean, n_docs) in want.items():
        assert got[user][1] == n_docs, user
        np.testing.assert_allclose(got[user][0], mean, atol=1e-4, err_msg=user)
    assert np.array_equal(got["dave"][0], before["dave"][0]) and got["dave"][1] == 1  # carried over as is

    c = second.counts
    assert (c["users_new"], c["users_updated"], c["users_recomputed"], c["users_carried"]) == (1, 1, 2, 1)
    assert c["documents_reused"] == 2 and c["documents_carried"] == 1  # alice's two, dave's one
    # alice-9, carol's edit and erin always need the model; with the cache, bob-0 and carol-1 do not
    assert c["compressed"] == (3 if with_cache else 5)
    assert c.get("documents_from_cache", 0) == (2 if with_cache else 0)
    assert c["rows_read"] == c["documents"] - c["documents_carried"] + c["dead_letters"]
    assert second.manifest.previous_store.endswith(first.version + ")")
    index = open_store(tmp_path / "store").documents().to_pylist()
    assert len(index) == c["documents"] == 8  # alice 3, bob 1, carol 2, dave 1, erin 1
    edited = {"user_id": "carol", "doc_id": "carol-0", "text_sha256": text_sha256("The striker scored three times.")}
    assert edited in index
    names = [os.path.basename(f) for f in open_store(tmp_path / "store").embedding_files]
    assert all(("-b000" in name) == (buckets > 1) for name in names)


def test_full_snapshot_drops_users_absent_from_the_input(nights, tiny_checkpoint, tmp_path):
    _, night_1, night_2, full = nights
    run_job(night_1, tmp_path / "store", tiny_checkpoint)
    result = run_job(night_2, tmp_path / "store", tiny_checkpoint, "--previous", str(tmp_path / "store"),
                     "--full-snapshot")
    assert sorted(embeddings(tmp_path / "store")) == sorted(embeddings(full.output))
    assert result.counts["users_dropped"] == 1 and "users_carried" not in result.counts


def test_an_unchanged_night_runs_no_model_and_keeps_every_embedding(nights, tiny_checkpoint, tmp_path):
    _, night_1, _, _ = nights
    run_job(night_1, tmp_path / "store", tiny_checkpoint)
    before = embeddings(tmp_path / "store")
    again = run_job(night_1, tmp_path / "store", tiny_checkpoint, "--previous", str(tmp_path / "store"))
    assert again.counts.get("compressed", 0) == 0 and again.counts["users_unchanged"] == len(NIGHT_1)
    after = embeddings(tmp_path / "store")
    for user, (mean, n_docs) in before.items():
        assert np.array_equal(after[user][0], mean) and after[user][1] == n_docs


def test_the_cache_serves_a_full_recompute_without_the_model(nights, tiny_checkpoint, tmp_path):
    _, night_1, _, _ = nights
    first = run_job(night_1, tmp_path / "a", tiny_checkpoint, "--doc-cache", str(tmp_path / "cache"))
    again = run_job(night_1, tmp_path / "b", tiny_checkpoint, "--doc-cache", str(tmp_path / "cache"))
    assert first.counts["compressed"] == 7 and again.counts.get("compressed", 0) == 0
    assert again.counts["documents_from_cache"] == 7
    a, b = embeddings(tmp_path / "a"), embeddings(tmp_path / "b")
    assert all(np.array_equal(a[u][0], b[u][0]) for u in a)


def test_a_truncated_cache_shard_is_named_skipped_and_recomputed(nights, tiny_checkpoint, tmp_path, capsys):
    """A cut cache shard fails no later run: the launch names it, its documents are cache misses."""
    import glob

    _, night_1, _, _ = nights
    cache = ("--doc-cache", str(tmp_path / "cache"))
    clean = run_job(night_1, tmp_path / "clean", tiny_checkpoint, *cache)
    shards = sorted(glob.glob(str(tmp_path / "cache" / "key-*" / "part-*.parquet")))
    assert shards and clean.counts["compressed"] == 7
    bad = shards[0]
    size = os.path.getsize(bad)
    with open(bad, "r+b") as fh:
        fh.truncate(size // 2)
    capsys.readouterr()
    again = run_job(night_1, tmp_path / "again", tiny_checkpoint, *cache)
    err = capsys.readouterr().err
    assert f"cache shard {bad} is unreadable" in err and "its documents are recomputed" in err
    assert again.counts.get("documents_from_cache", 0) + again.counts.get("compressed", 0) == 7
    assert again.counts.get("compressed", 0) >= 1
    a, b = embeddings(tmp_path / "clean"), embeddings(tmp_path / "again")
    assert a.keys() == b.keys()
    assert all(np.allclose(a[u][0], b[u][0], atol=1e-5) and a[u][1] == b[u][1] for u in a)


def test_previous_store_from_another_checkpoint_is_refused(nights, tiny_checkpoint, tmp_path):
    from commer_core.backbone import load_backbone
    from commer_core.checkpoint import save_checkpoint
    from pipelines.compress import CompressError
    from tests.helpers import make_compressor

    _, night_1, night_2, _ = nights
    other = tmp_path / "other-ckpt"
    save_checkpoint(make_compressor(load_backbone("tiny-random"), seed=5), other, trained=False)
    run_job(night_1, tmp_path / "store", other)
    with pytest.raises(CompressError, match="a new checkpoint needs a full recompute"):
        run_job(night_2, tmp_path / "store", tiny_checkpoint, "--previous", str(tmp_path / "store"))


# -- determinism --------------------------------------------------------------------------------
def test_reruns_are_bit_identical_and_batching_or_compiling_changes_nothing_beyond_1e_4(nights, tiny_checkpoint, tmp_path):
    root, _, _, full = nights
    night_2 = os.path.join(root, "night-2", "*.parquet")
    again = run_job(night_2, tmp_path / "again", tiny_checkpoint)
    reference, rerun = embeddings(full.output), embeddings(again.output)
    assert all(np.array_equal(reference[u][0], rerun[u][0]) for u in reference)  # same everything: bit-identical

    # other bundle boundaries (7 files, reversed rows), batch sizes and token budgets
    rows = list(reversed(night_2_rows()))
    variants = {
        "files-and-order": (write_corpus(tmp_path / "seven", rows, n_files=7), ()),
        "batch-size-1": (night_2, ("--max-batch-size", "1")),
        "token-budget-32": (night_2, ("--batch-tokens", "32")),
        "compiled-layers": (night_2, ("--compile",)),
    }
    for name, (corpus, extra) in variants.items():
        other = embeddings(run_job(corpus, tmp_path / name, tiny_checkpoint, *extra).output)
        assert sorted(other) == sorted(reference), name
        worst = max(float(np.abs(other[u][0] - reference[u][0]).max()) for u in reference)
        assert worst <= 1e-4, (name, worst)


# -- the compression key (issue 19, defect 1) ---------------------------------------------------
def test_cache_and_previous_never_reuse_compressions_made_under_other_settings(nights, tiny_checkpoint, tmp_path):
    """A 4-token run fills the cache; a 16-token run must recompute, not serve those, and
    ``--previous`` of the 4-token store is refused naming the setting."""
    from pipelines.compress import CompressError

    _, night_1, night_2, _ = nights
    cache = ("--doc-cache", str(tmp_path / "cache"))
    short = run_job(night_1, tmp_path / "short", tiny_checkpoint, "--max-doc-tokens", "4", *cache)
    full = run_job(night_1, tmp_path / "full", tiny_checkpoint, *cache)  # MAX_DOC_TOKENS = 16
    assert full.counts.get("documents_from_cache", 0) == 0 and full.counts["compressed"] == 7
    assert short.manifest.compression_key.max_doc_tokens == 4 and short.counts["truncated"] > 0
    key = full.manifest.compression_key
    assert key.max_doc_tokens == 16 and key != short.manifest.compression_key
    assert (key.device_class, key.dtype) == ("cpu", "float32") and key.checkpoint_fingerprint == full.manifest.checkpoint_fingerprint
    a, b = embeddings(tmp_path / "short"), embeddings(tmp_path / "full")
    assert any(not np.array_equal(a[u][0], b[u][0]) for u in a)  # truncation changed the compressions
    reference = embeddings(run_job(night_1, tmp_path / "reference", tiny_checkpoint).output)
    assert all(np.array_equal(b[u][0], reference[u][0]) for u in reference)
    # the same settings again are served from the cache under their own key
    again = run_job(night_1, tmp_path / "again", tiny_checkpoint, "--max-doc-tokens", "4", *cache)
    assert again.counts["documents_from_cache"] == 7 and again.counts.get("compressed", 0) == 0
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(
        f"key-{k.digest[:32]}" for k in (short.manifest.compression_key, key))

    with pytest.raises(CompressError, match=r"compressed under other settings \(max_doc_tokens 4 vs 16"):
        run_job(night_2, tmp_path / "short", tiny_checkpoint, "--previous", str(tmp_path / "short"))


def test_previous_store_without_a_compression_key_is_refused(nights, tiny_checkpoint, tmp_path):
    """A store written before the key was recorded: its settings are unknown, so it is not reused."""
    import json

    from commer_core.store import LATEST_NAME, MANIFEST_NAME
    from pipelines.compress import CompressError

    _, night_1, night_2, _ = nights
    first = run_job(night_1, tmp_path / "store", tiny_checkpoint)
    path = tmp_path / "store" / (tmp_path / "store" / LATEST_NAME).read_text().strip() / MANIFEST_NAME
    data = json.loads(path.read_text())
    del data["compression_key"]
    path.write_text(json.dumps(data))
    assert open_store(tmp_path / "store").manifest.compression_key is None  # older manifests still read
    with pytest.raises(CompressError, match="records no compression key.*run once without --previous"):
        run_job(night_2, tmp_path / "store", tiny_checkpoint, "--previous", str(tmp_path / "store"))
    assert (tmp_path / "store" / LATEST_NAME).read_text().strip() == first.version
