"""The whole compress job on small corpora (tiny-random checkpoint), in-process and multi-process.

Truth is commer_core: every user's stored embedding must equal the mean of commer_core's
compressions of that user's valid documents. Rows are conserved: rows read = documents
compressed + dead letters, with planted bad rows landing in the dead letters.
"""

from __future__ import annotations

import glob
import os
import time
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from commer_core.merge import MeanPool
from commer_core.store import LATEST_NAME, MANIFEST_NAME, open_store
from tests.helpers import MAX_DOC_TOKENS, job_args, run_job, write_corpus, write_corrupt_parquet

LONG = "The committee met again on Tuesday to discuss the harbour project, the budget and the timetable in detail."
TEXTS = {
    "alice": ["I baked bread this morning.", "Sourdough needs a lively starter.", LONG],
    "bob": ["Saturn's rings were visible tonight.", "Jupiter rose after midnight."],
    "carol": ["The striker scored twice.", "ok"],
    "dave": [LONG + " And then they adjourned until next week, tired but hopeful."],
}
PLANTED = [
    ({"user_id": "", "doc_id": "x1", "text": "empty user id"}, "user_id is null or empty"),
    ({"user_id": None, "doc_id": "x2", "text": "null user id"}, "user_id is null or empty"),
    ({"user_id": "bob", "doc_id": "x3", "text": "  \t "}, "text is empty or whitespace"),
    ({"user_id": "bob", "doc_id": "x4", "text": None}, "text is null"),
    ({"user_id": "alice", "doc_id": "alice-0", "text": "I baked bread this morning."}, "duplicate"),
    ({"user_id": "carol", "doc_id": "c-clash", "text": "version A"}, "conflicting"),
    ({"user_id": "carol", "doc_id": "c-clash", "text": "version B"}, "conflicting"),
]


def corpus_rows() -> list[dict]:
    rows = [
        {"user_id": user, "doc_id": f"{user}-{i}", "text": text}
        for user, texts in TEXTS.items()
        for i, text in enumerate(texts)
    ]
    return rows + [row for row, _ in PLANTED]


@pytest.fixture(scope="module")
def core_reference(tiny_checkpoint):
    """commer_core alone: ({user: (mean k x d, n_docs)}, number of truncated documents)."""
    from commer_core.checkpoint import load_checkpoint
    from commer_core.compressor import tokenize_documents

    compressor = load_checkpoint(tiny_checkpoint)
    means, truncated = {}, 0
    for user, texts in TEXTS.items():
        docs = tokenize_documents(compressor.tokenizer, texts, MAX_DOC_TOKENS)
        truncated += sum(d.truncated for d in docs)
        pool = MeanPool.empty(compressor.num_embeddings, compressor.hidden_size)
        for x in compressor.compress_tokenized([d.ids for d in docs]).numpy():
            pool.add(x)
        means[user] = (pool.mean(), pool.count)
    return means, truncated


@pytest.fixture(scope="module")
def expected_means(core_reference):
    return core_reference[0]


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("job")
    corpus = write_corpus(root / "corpus", corpus_rows())
    result = run_job(corpus, root / "store", tiny_checkpoint)
    return corpus, result


def test_run_commits_a_store_equal_to_commer_core_means(in_process_run, expected_means, tiny_checkpoint):
    _, result = in_process_run
    store = open_store(result.output)
    store.check_compatible(tiny_checkpoint)
    got = store.get(list(TEXTS))
    assert set(got) == set(TEXTS) == set(store.users())
    for user, (mean, n_docs) in expected_means.items():
        assert got[user][1] == n_docs
        np.testing.assert_allclose(got[user][0], mean, atol=1e-5, err_msg=user)


def test_rows_are_conserved_and_bad_rows_dead_lettered_with_reasons(in_process_run, core_reference):
    _, result = in_process_run
    counts = result.counts
    n_valid = sum(len(t) for t in TEXTS.values())
    assert counts["rows_read"] == len(corpus_rows())
    assert counts["documents"] == counts["compressed"] == n_valid
    assert counts["dead_letters"] == counts["dead_lettered"] == len(PLANTED)
    assert counts["rows_read"] == counts["documents"] + counts["dead_letters"]
    assert counts["users"] == counts["users_written"] == len(TEXTS)
    assert counts["truncated"] == core_reference[1] > 0
    dead = open_store(result.output).dead_letters().to_pylist()
    assert len(dead) == len(PLANTED)
    for row, reason in PLANTED:
        matches = [d for d in dead if d["doc_id"] == row["doc_id"] and reason in d["reason"]]
        assert matches, (row, reason)
        assert all(d["stage"] == "validate" and d["source"].endswith(".parquet") for d in matches)


def test_store_layout_manifest_and_readers(in_process_run, tiny_checkpoint):
    import datasets

    from commer_core.checkpoint import fingerprint

    corpus, result = in_process_run
    assert sorted(os.listdir(result.output)) == sorted([LATEST_NAME, result.version])
    assert open(os.path.join(result.output, LATEST_NAME)).read().strip() == result.version
    out = os.path.join(result.output, result.version)
    names = sorted(os.listdir(out))
    assert MANIFEST_NAME in names
    for prefix in ("embeddings", "documents", "dead_letter"):
        assert glob.glob(os.path.join(out, f"{prefix}-*.parquet")), prefix
    index = open_store(result.output).documents()
    assert index.num_rows == result.counts["documents"] == sum(len(t) for t in TEXTS.values())
    assert set(zip(index.column("user_id").to_pylist(), index.column("doc_id").to_pylist())) == {
        (user, f"{user}-{i}") for user, texts in TEXTS.items() for i in range(len(texts))}
    m = result.manifest
    assert (m.checkpoint_fingerprint, m.base_model, m.num_embeddings, m.hidden_size) == (
        fingerprint(tiny_checkpoint), "tiny-random", 4, 64)
    assert m.input_pattern == corpus and m.runner and m.finished_at >= m.started_at and m.package_version

    table = pq.read_table(glob.glob(os.path.join(out, "embeddings-*.parquet")))
    assert table.num_rows == len(TEXTS) and pa.types.is_fixed_size_list(table.schema.field("embedding").type)
    assert pq.ParquetFile(glob.glob(os.path.join(out, "embeddings-*.parquet"))[0]).metadata.row_group(0).column(0).compression == "ZSTD"

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ds = datasets.load_dataset(
        "parquet", data_files=os.path.join(out, "embeddings-*.parquet"), split="train",
        cache_dir=os.path.join(os.path.dirname(out), "hf-cache"),
    )
    assert sorted(ds["user_id"]) == sorted(TEXTS)
    assert len(ds[0]["embedding"]) == 4 * 64


def test_graph_is_labelled_and_per_user_means_assert_that(tmp_path, tiny_checkpoint, expected_means):
    from pipelines.commit import new_staging_area
    from pipelines.compress import build, parse_args, plan_job

    corpus = write_corpus(tmp_path / "corpus", corpus_rows(), n_files=1)
    params, beam_args = parse_args(job_args(corpus, tmp_path / "store", tiny_checkpoint))
    plan = plan_job(params, PipelineOptions(beam_args))
    staging = new_staging_area(plan.output)
    expected = [(user, value) for user, value in expected_means.items()]
    with BeamTestPipeline() as p:
        outputs = build(p, plan, staging, computed_at=datetime.now(timezone.utc))
        assert_that(
            outputs["per_user"],
            equal_to(expected, equals_fn=lambda e, a: e[0] == a[0] and e[1][1] == a[1][1]
                     and np.allclose(e[1][0], a[1][0], atol=1e-5)),
        )
        labels = {t.full_label for t in p.transforms_stack[0].parts}
    for step in ("ReadCorpus", "Validate", "Tokenize", "Compress", "KeyByUser", "MeanPoolPerUser",
                 "GroupUsersByRange", "ToStoreTables", "WriteEmbeddings", "FlattenDeadLetters",
                 "CountDeadLetters", "WriteDeadLetters"):
        assert step in labels, step


def test_a_failed_rerun_leaves_the_committed_store_untouched(tmp_path, tiny_checkpoint):
    from pipelines.compress import CompressError

    corpus = write_corpus(tmp_path / "corpus", corpus_rows()[:3], n_files=1)
    first = run_job(corpus, tmp_path / "store", tiny_checkpoint)
    before = sorted(os.listdir(first.output))
    latest = (tmp_path / "store" / LATEST_NAME).read_text()
    manifest = (tmp_path / "store" / first.version / MANIFEST_NAME).read_text()
    with pytest.raises(CompressError, match="already holds a committed store.*--overwrite"):
        run_job(corpus, tmp_path / "store", tiny_checkpoint)
    # A second file with a valid footer passes the launch checks, then fails the job when read.
    write_corrupt_parquet(tmp_path / "corpus" / "zz-broken.parquet")
    with pytest.raises(CompressError, match=r"pipeline failed: .*zz-broken.parquet, row group 0"):
        run_job(corpus, tmp_path / "store", tiny_checkpoint, "--overwrite")
    assert sorted(os.listdir(first.output)) == before
    assert (tmp_path / "store" / LATEST_NAME).read_text() == latest
    assert (tmp_path / "store" / first.version / MANIFEST_NAME).read_text() == manifest


def _empty_embeddings(path) -> None:
    """A valid embeddings shard with no users: commit builds the version's lookup index from its footer."""
    import pyarrow.parquet as pq

    from schemas import store_schema
    from tests.unit.test_store import D, K

    pq.write_table(store_schema(K, D).empty_table(), str(path))


def test_commit_writes_the_manifest_then_latest_and_prunes_old_versions(tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    from pipelines import commit as commit_mod
    from schemas.store_index import INDEX_FILES_NAME, INDEX_USERS_NAME
    from tests.unit.test_store import _manifest

    out = tmp_path / "store"
    stale = time.time() - commit_mod.STALE_UNCOMMITTED_SECONDS - 60
    for version, committed in (("v-20200101T000000-a", True), ("v-20210101T000000-b", True),
                               ("v-20220101T000000-c", False), ("v-20220101T000000-d", False),
                               ("v-20990101T000000-z", False)):
        (out / version).mkdir(parents=True)
        (out / version / "embeddings-00000-of-00001.parquet").write_bytes(b"old")
        if committed:
            (out / version / MANIFEST_NAME).write_text("old manifest")
    # c: a failed run's leftover, idle for over a day; d: named as old but written a moment ago
    # (a concurrent run still computing), so it must survive this commit's pruning
    os.utime(out / "v-20220101T000000-c" / "embeddings-00000-of-00001.parquet", (stale, stale))
    (out / LATEST_NAME).write_text("v-20200101T000000-a\n")  # b has a manifest but never became LATEST
    area = commit_mod.new_staging_area(str(out))
    _empty_embeddings(os.path.join(area.root, "embeddings-00000-of-00001.parquet"))  # the index reads its footer
    with open(os.path.join(area.root, "dead_letter-00000-of-00001.parquet"), "wb") as fh:
        fh.write(b"new")

    events = []
    real_rename = FileSystems.rename
    monkeypatch.setattr(FileSystems, "rename", staticmethod(
        lambda src, dst: (events.append([os.path.relpath(d, out) for d in dst]), real_rename(src, dst))[1]))
    deleted = []
    real_delete = FileSystems.delete
    monkeypatch.setattr(FileSystems, "delete", staticmethod(
        lambda paths: (deleted.extend(os.path.relpath(p, out) for p in paths), real_delete(paths))[1]))
    commit_mod.commit(area, _manifest(), keep_versions=2, expected_latest="v-20200101T000000-a")
    assert events == [[f"{area.version}/{MANIFEST_NAME}"], [LATEST_NAME]]  # manifest, then the pointer
    assert LATEST_NAME not in deleted  # replaced by one rename: there is always a pointer
    assert (out / LATEST_NAME).read_text().strip() == area.version
    # kept: the new version, the one LATEST named before, and every uncommitted directory written
    # within the last day (a concurrent run's, whatever its name); the lock file is gone
    assert sorted(os.listdir(out)) == sorted([LATEST_NAME, area.version, "v-20200101T000000-a",
                                              "v-20220101T000000-d", "v-20990101T000000-z"])
    assert sorted(os.listdir(out / area.version)) == sorted(
        [MANIFEST_NAME, INDEX_USERS_NAME, INDEX_FILES_NAME, "embeddings-00000-of-00001.parquet",
         "dead_letter-00000-of-00001.parquet"])
    assert commit_mod.prune_versions(str(out), area.version, keep_versions=1) == ["v-20200101T000000-a"]
    later = time.time() + commit_mod.STALE_UNCOMMITTED_SECONDS + 60  # a day on, d is a leftover
    assert commit_mod.prune_versions(str(out), area.version, 1, now=later) == ["v-20220101T000000-d"]


def test_a_commit_is_a_compare_and_swap_on_latest(tmp_path):
    """A run whose LATEST moved since launch writes nothing and says so in one line."""
    from pipelines import commit as commit_mod
    from tests.unit.test_store import _manifest

    out = tmp_path / "store"
    (out / "v-20200101T000000-a").mkdir(parents=True)
    (out / "v-20200101T000000-a" / MANIFEST_NAME).write_text("manifest")
    (out / LATEST_NAME).write_text("v-20200101T000000-b\n")  # another run committed b meanwhile
    area = commit_mod.new_staging_area(str(out))
    _empty_embeddings(tmp_path / "store" / area.version / "embeddings-00000-of-00001.parquet")
    with pytest.raises(commit_mod.LatestMovedError) as caught:
        commit_mod.commit(area, _manifest(), expected_latest="v-20200101T000000-a")
    assert str(caught.value) == (
        "LATEST moved from v-20200101T000000-a to v-20200101T000000-b while this run was computing; "
        "nothing committed (rerun to include the other run's users)")
    assert (out / LATEST_NAME).read_text() == "v-20200101T000000-b\n"
    assert not (out / area.version / MANIFEST_NAME).exists() and not (out / commit_mod.LOCK_NAME).exists()
    with pytest.raises(commit_mod.LatestMovedError, match="from \\(no store\\) to v-20200101T000000-b"):
        commit_mod.commit(area, _manifest(), expected_latest=None)


def test_multi_processing_runner_gives_identical_output(in_process_run, tmp_path, tiny_checkpoint):
    from pipelines.compress import run

    corpus, reference = in_process_run
    result = run(job_args(corpus, tmp_path / "store", tiny_checkpoint,
                          "--direct_running_mode=multi_processing", "--direct_num_workers=2"))
    a, b = open_store(reference.output), open_store(result.output)
    got_a, got_b = a.get(a.users()), b.get(b.users())
    assert sorted(got_a) == sorted(got_b)
    for user in got_a:
        assert got_a[user][1] == got_b[user][1]
        np.testing.assert_allclose(got_b[user][0], got_a[user][0], atol=1e-6, err_msg=user)
    def same(counts):  # shard counts and timings legitimately differ between runners
        return {k: v for k, v in counts.items() if not k.endswith(("_files", "_ms"))}

    assert same(result.counts) == same(reference.counts)


def test_a_file_uri_version_directory_is_deleted_as_a_local_one(tmp_path):
    """file:// is local (commer_core.files.is_local_uri); it used to take the object-store branch and stay."""
    from pipelines.commit import _delete_tree

    version = tmp_path / "store" / "v-20200101T000000-a"
    (version / "sub").mkdir(parents=True)
    (version / "sub" / "x.parquet").write_bytes(b"x")
    _delete_tree(f"file://{version}/")
    assert not version.exists() and (tmp_path / "store").is_dir()
