"""Bad input to the compress job: one clear error before any work, or dead letters with reasons.

Either the job refuses to start (exit code non-zero, one ``Error:`` line naming the file
and column, no version directory created), or it runs and every row read is a document
or a dead letter (the job itself enforces rows read = documents + dead letters).
Also covered elsewhere: an altered checkpoint (test_cli_compress), a store read with
another checkpoint (test_serving, test_store), the row validator's unit properties
(test_schemas).
"""

from __future__ import annotations

import os

import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from commer_core.store import open_store
from jobs.cli import cli
from pipelines.validate import DEAD_LETTER_TAG, CheckRows, CorpusDoc, ResolveDuplicates
from tests.helpers import run_job, write_corpus, write_corrupt_parquet

GOOD = [{"user_id": "ann", "doc_id": "1", "text": "A perfectly ordinary document."},
        {"user_id": "ben", "doc_id": "1", "text": "Another ordinary document."}]


def compress_cli(*args: str):
    return CliRunner().invoke(cli, ["compress", "--progress-every", "0", *args], catch_exceptions=False)


def assert_refused(result, output, *fragments: str) -> None:
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert not os.path.exists(output)  # refused before the run created anything


def string_array_with_raw_bytes(values: list[bytes]) -> pa.Array:
    """A ``string`` array holding exactly these bytes, valid UTF-8 or not (as some writers produce)."""
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()),
                                                            pa.py_buffer(b"".join(values))])


def test_empty_or_matchless_input_patterns_are_refused(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    assert_refused(compress_cli("--input", "", "--output", str(out), "--checkpoint", str(tiny_checkpoint)),
                   out, "--input must not be empty")
    (tmp_path / "empty-dir").mkdir()
    assert_refused(compress_cli("--input", str(tmp_path / "empty-dir"), "--output", str(out),
                                "--checkpoint", str(tiny_checkpoint)), out, "no file matches")


def test_a_wrong_schema_in_any_file_is_refused_at_launch_naming_file_and_column(tmp_path, tiny_checkpoint):
    corpus = write_corpus(tmp_path / "corpus", GOOD * 3, n_files=3)
    pq.write_table(pa.table({"user_id": ["u"], "doc_id": [1.5], "text": ["t"]}), tmp_path / "corpus" / "part-1.parquet")
    out = tmp_path / "out"
    assert_refused(compress_cli("--input", corpus, "--output", str(out), "--checkpoint", str(tiny_checkpoint)),
                   out, "part-1.parquet", "column 'doc_id' has type double")


def test_corrupt_parquet_footer_is_refused_and_corrupt_pages_fail_naming_the_file(tmp_path, tiny_checkpoint):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (tmp_path / "corpus" / "part-9.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    out = tmp_path / "out"
    assert_refused(compress_cli("--input", corpus, "--output", str(out), "--checkpoint", str(tiny_checkpoint)),
                   out, "part-9.parquet", "not a readable Parquet file")
    write_corrupt_parquet(tmp_path / "corpus" / "part-9.parquet")  # footer fine, pages garbage
    result = compress_cli("--input", corpus, "--output", str(out), "--checkpoint", str(tiny_checkpoint))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "part-9.parquet, row group 0" in result.output
    assert not os.path.exists(out / "LATEST")  # nothing committed


def test_mixed_but_valid_schemas_are_all_read(tmp_path, tiny_checkpoint):
    folder = tmp_path / "corpus"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(GOOD), folder / "a.parquet")
    pq.write_table(pa.table({"text": pa.array(["Integer ids, large strings."] * 2, pa.large_string()),
                             "lang": ["en", "en"], "doc_id": pa.array([7, 8], pa.int64()),
                             "user_id": ["cat", "cat"]}), folder / "b.parquet")
    pq.write_table(pa.table({"user_id": pa.array(["dan", "dan"]).dictionary_encode(), "doc_id": ["x", "y"],
                             "text": ["Dictionary-encoded ids.", "Second row."]}), folder / "c.parquet")
    result = run_job(str(folder), tmp_path / "out", tiny_checkpoint)
    assert result.counts["rows_read"] == result.counts["documents"] == 6 and result.counts["dead_letters"] == 0
    got = open_store(result.output).get(["ann", "ben", "cat", "dan"])
    assert {u: n for u, (_, n) in got.items()} == {"ann": 1, "ben": 1, "cat": 2, "dan": 2}


def test_invalid_utf8_and_control_characters_are_dead_lettered_row_by_row(tmp_path, tiny_checkpoint):
    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = [b"Fine text.", b"bad \xff\xfe bytes", b"a bell \x07 rings", b"Also fine."]
    users = [b"eve", b"eve", b"eve", b"f\xc3("]  # the last user id is invalid UTF-8
    pq.write_table(pa.table({"user_id": string_array_with_raw_bytes(users), "doc_id": ["1", "2", "3", "4"],
                             "text": string_array_with_raw_bytes(texts)}), folder / "odd.parquet")
    result = run_job(str(folder), tmp_path / "out", tiny_checkpoint)
    store = open_store(result.output)
    assert store.get(store.users()).keys() == {"eve"} and store.get(["eve"])["eve"][1] == 1
    dead = store.dead_letters().to_pylist()
    assert sorted(d["doc_id"] for d in dead) == ["2", "3", "4"]
    assert all("invalid UTF-8 / control characters" in d["reason"] for d in dead)
    assert result.counts["rows_read"] == 4


def test_user_buckets_give_the_same_store_and_dead_letter_each_bad_row_once(tmp_path, tiny_checkpoint):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = GOOD + [{"user_id": f"u{i}", "doc_id": str(j), "text": f"Document {j} of user {i}."}
                   for i in range(12) for j in range(2)]
    rows += [{"user_id": None, "doc_id": "n", "text": "No user."}, {"user_id": "ann", "doc_id": "e", "text": " "},
             {"user_id": "ben", "doc_id": "1", "text": "Conflicts with ben's first document."}]
    pq.write_table(pa.Table.from_pylist(rows), folder / "a.parquet")
    pq.write_table(pa.table({"user_id": pa.array(["7", "7", "8"]).dictionary_encode(), "doc_id": ["a", "a", "b"],
                             "text": ["Same row twice.", "Same row twice.", "Integer user eight."]}),
                   folder / "b.parquet")
    results = {n: run_job(str(folder), tmp_path / f"out-{n}", tiny_checkpoint, "--user-buckets", str(n))
               for n in (1, 3)}
    stores = {n: open_store(r.output) for n, r in results.items()}
    one, three = (stores[n].get(stores[n].users()) for n in (1, 3))
    assert sorted(one) == sorted(three) and len(one) == 15  # ann, u0-u11, 7, 8 (ben's rows conflict)
    for user in one:
        assert one[user][1] == three[user][1]
        np.testing.assert_allclose(three[user][0], one[user][0], atol=1e-5)
    dead = {n: sorted((d["doc_id"], d["reason"]) for d in stores[n].dead_letters().to_pylist()) for n in (1, 3)}
    assert dead[1] == dead[3] and len(dead[3]) == 5  # null user, blank text, ben's 2 conflicting, 7's copy
    for n, result in results.items():
        assert result.counts["rows_read"] == len(rows) + 3 == result.counts["documents"] + result.counts["dead_letters"]
    names = [os.path.basename(f) for f in stores[3].embedding_files]
    assert {name.split("-")[1] for name in names} == {"b0000", "b0001", "b0002"}


def test_a_5_mb_document_is_truncated_not_fatal(tmp_path, tiny_checkpoint):
    huge = "All work and no play makes a very long document. " * 105_000  # ~5.2 MB
    corpus = write_corpus(tmp_path / "corpus", [*GOOD, {"user_id": "ann", "doc_id": "big", "text": huge}], n_files=1)
    result = run_job(corpus, tmp_path / "out", tiny_checkpoint)
    assert len(huge.encode()) > 5_000_000
    assert result.counts["documents"] == 3 and result.counts["truncated"] == 1
    assert result.counts["doc_tokens_max"] <= 16  # the job's --max-doc-tokens


def test_a_heavy_user_is_one_pooled_row_across_many_batches_and_buckets(tmp_path, tiny_checkpoint):
    """The per-user mean is a (sum, count) combine: a user's documents, compressed in many
    batches, become one row with every document counted. The 100,000-document scale of
    that property is tests/unit/test_combine.py's (on the CombineFn, in a second)."""
    rows = [{"user_id": "heavy", "doc_id": str(i), "text": f"note {i % 97}"} for i in range(300)]
    corpus = write_corpus(tmp_path / "corpus", [*rows, *GOOD], n_files=2)
    result = run_job(corpus, tmp_path / "out", tiny_checkpoint, "--max-batch-size", "8", "--user-buckets", "2")
    got = open_store(result.output).get(["heavy", "ann", "ben"])
    assert got["heavy"][1] == 300 and np.isfinite(got["heavy"][0]).all()
    assert got["ann"][1] == got["ben"][1] == 1
    assert result.counts["rows_read"] == result.counts["documents"] == 302


# -- the row validator as Beam runs it, over arbitrary rows ---------------------------------------
_texts = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["", "  ", "dup", "a\x00b", "\ud800"]))
_rows = st.fixed_dictionaries({
    "user_id": st.one_of(st.none(), st.sampled_from(["", "u1", "u2", " u3 "]), st.integers(0, 3)),
    "doc_id": st.one_of(st.none(), st.sampled_from(["d1", "d2", ""]), st.integers(0, 2), st.floats(0, 1)),
    "text": _texts,
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_rows, max_size=25))
def test_validation_conserves_every_row(rows):
    """Each row leaves as exactly one valid document or one dead letter; documents are unique per key."""
    docs, dead = [], []
    for i, row in enumerate(rows):
        for out in CheckRows().process((f"file-{i}", row)):
            (dead if getattr(out, "tag", None) == DEAD_LETTER_TAG else docs).append(out)
    groups: dict[tuple[str, str], list[CorpusDoc]] = {}
    for doc in docs:
        groups.setdefault((doc.user_id, doc.doc_id), []).append(doc)
    kept = []
    for key, group in groups.items():
        for out in ResolveDuplicates().process((key, group)):
            (dead if getattr(out, "tag", None) == DEAD_LETTER_TAG else kept).append(out)
    assert len(kept) + len(dead) == len(rows)
    assert len({(d.user_id, d.doc_id) for d in kept}) == len(kept)
    assert all(d.value["reason"] for d in dead)
    assert all(isinstance(d.text, str) and d.text.strip() for d in kept)
