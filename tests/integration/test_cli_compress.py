"""Black-box acceptance of `commer-pipeline compress` / `inspect` through the CLI.

* two documents with identical text give a user the same embedding as one of them;
* a user with documents X and Y gets the mean of the users holding X alone and Y alone;
* shuffling the input rows changes no embedding by more than 1e-4;
* planted bad rows are dead letters with reasons, and the counts add up;
* bad input fails with one clear message and a non-zero exit, no traceback.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from commer_core.store import LATEST_NAME, MANIFEST_NAME, open_store
from jobs.cli import cli

X = "Our choir rehearsed the Brahms requiem twice this week, and the tenors finally found the pitch."
Y = "Fresh snow on the ridge made the last kilometre of the ski tour slow but beautiful."
Z = "The quarterly report shows revenue up four percent."

GOOD = [
    ("only-x", "a", X),
    ("x-twice", "a", X),
    ("x-twice", "b", X),
    ("only-y", "a", Y),
    ("x-and-y", "1", X),
    ("x-and-y", "2", Y),
    ("misc", "z", Z),
]
BAD = [  # (row, expected reason fragment)
    (("", "e1", "empty user id"), "user_id is null or empty"),
    ((None, "e2", "null user id"), "user_id is null or empty"),
    (("misc", "e3", "   "), "text is empty or whitespace"),
    (("misc", "e4", None), "text is null"),
    (("only-x", "a", X), "duplicate (user_id, doc_id): same text"),
]
INT_IDS = [("misc", 41, "A second file whose doc ids are integers."), ("misc", 42, "Another one.")]


def write_corpus(directory, rows, int_ids=INT_IDS) -> str:
    """``rows`` in one file, and a second file with integer doc ids (stringified by the job)."""
    os.makedirs(directory, exist_ok=True)
    schema = pa.schema([("user_id", pa.string()), ("doc_id", pa.string()), ("text", pa.string())])
    table = pa.Table.from_pylist([dict(zip(schema.names, r)) for r in rows], schema=schema)
    pq.write_table(table, os.path.join(directory, "a-main.parquet"))
    ints = pa.schema([("user_id", pa.string()), ("doc_id", pa.int64()), ("text", pa.string())])
    pq.write_table(pa.Table.from_pylist([dict(zip(ints.names, r)) for r in int_ids], schema=ints),
                   os.path.join(directory, "b-int-ids.parquet"))
    return os.path.join(directory, "*.parquet")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def compress(corpus: str, output, checkpoint, *extra: str):
    return invoke("compress", "--input", corpus, "--output", str(output), "--checkpoint", str(checkpoint),
                  "--progress-every", "4", *extra)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("cli")
    corpus = write_corpus(root / "corpus", GOOD + [row for row, _ in BAD])
    result = compress(corpus, root / "store", tiny_checkpoint)
    return root, result


def embeddings(output) -> dict[str, np.ndarray]:
    store = open_store(output)
    return {u: emb for u, (emb, _) in store.get(store.users()).items()}


def test_compress_commits_and_prints_a_summary(first_run):
    root, result = first_run
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert f"committed {root / 'store'}" in result.output
    for line in ("users         5", "documents     9", "dead letters  5", "rows read     14", "docs/s"):
        assert line in result.output, line
    assert "documents compressed" in result.output  # progress lines
    version = (root / "store" / LATEST_NAME).read_text().strip()
    assert f"version {version}" in result.output and (root / "store" / version / MANIFEST_NAME).is_file()


def test_identical_documents_and_means_of_users(first_run):
    root, _ = first_run
    emb = embeddings(root / "store")
    np.testing.assert_allclose(emb["x-twice"], emb["only-x"], atol=1e-5)
    np.testing.assert_allclose(emb["x-and-y"], (emb["only-x"] + emb["only-y"]) / 2, atol=1e-5)
    assert not np.allclose(emb["only-x"], emb["only-y"], atol=1e-3)  # the texts do matter


def test_dead_letters_have_reasons_and_counts_add_up(first_run):
    root, _ = first_run
    store = open_store(root / "store")
    counts = store.manifest.counts
    assert counts["rows_read"] == len(GOOD) + len(BAD) + len(INT_IDS)
    assert counts["rows_read"] == counts["documents"] + counts["dead_letters"]
    assert counts["documents"] == len(GOOD) + len(INT_IDS) and counts["users"] == 5
    dead = store.dead_letters().to_pylist()
    assert len(dead) == counts["dead_letters"] == len(BAD)
    for (user, doc_id, _), reason in BAD:
        assert any(d["doc_id"] == doc_id and reason in d["reason"] for d in dead), reason
    index = store.documents().to_pylist()
    assert {("misc", "41"), ("misc", "42")} <= {(r["user_id"], r["doc_id"]) for r in index}


def test_shuffled_input_gives_the_same_embeddings(first_run, tmp_path, tiny_checkpoint):
    root, _ = first_run
    rows = GOOD + [row for row, _ in BAD]
    random.Random(7).shuffle(rows)
    corpus = write_corpus(tmp_path / "corpus", rows, int_ids=list(reversed(INT_IDS)))
    result = compress(corpus, tmp_path / "store", tiny_checkpoint, "--batch-tokens", "64")
    assert result.exit_code == 0, result.output
    before, after = embeddings(root / "store"), embeddings(tmp_path / "store")
    assert sorted(before) == sorted(after)
    worst = max(float(np.abs(before[u] - after[u]).max()) for u in before)
    assert worst <= 1e-4, worst


def test_inspect_prints_manifest_and_rows(first_run, tiny_checkpoint):
    root, _ = first_run
    result = invoke("inspect", str(root / "store"), "--rows", "2", "--checkpoint", str(tiny_checkpoint))
    assert result.exit_code == 0, result.output
    assert '"checkpoint_fingerprint"' in result.output and "compatible" in result.output
    assert "k x d = 4 x 64" in result.output and result.output.count("n_docs=") == 2
    assert "dead letters: 5" in result.output
    result = invoke("inspect", str(root / "store"), "--user", "x-and-y", "--user", "ghost")
    assert "x-and-y: n_docs=2" in result.output and "ghost: not in the store" in result.output


def test_inspect_refuses_an_uncommitted_directory(first_run, tmp_path):
    root, _ = first_run
    shutil.copytree(root / "store", tmp_path / "copy")
    os.remove(tmp_path / "copy" / (tmp_path / "copy" / LATEST_NAME).read_text().strip() / MANIFEST_NAME)
    result = invoke("inspect", str(tmp_path / "copy"))
    assert result.exit_code == 1 and "not a committed store" in result.output
    assert "Traceback" not in result.output


def test_no_input_runs_the_embedded_sample_corpus(tmp_path, tiny_checkpoint):
    result = invoke("compress", "--checkpoint", str(tiny_checkpoint), "--output", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "sample corpus" in result.output
    counts = open_store(tmp_path / "out").manifest.counts
    assert counts["users"] == 6 and counts["documents"] == 42 and counts["dead_letters"] == 2


def _one_error_line(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_bad_input_fails_with_one_clear_message(tmp_path, tiny_checkpoint):
    out = str(tmp_path / "out")
    _one_error_line(compress(str(tmp_path / "nothing-*.parquet"), out, tiny_checkpoint), "no file matches")

    pq.write_table(pa.table({"user_id": ["u"], "doc_id": ["d"], "body": ["t"]}), tmp_path / "wrong.parquet")
    _one_error_line(compress(str(tmp_path / "wrong.parquet"), out, tiny_checkpoint), "missing column 'text'",
                    "--text-column")

    (tmp_path / "notparquet.parquet").write_text("hello")
    _one_error_line(compress(str(tmp_path / "notparquet.parquet"), out, tiny_checkpoint), "not a readable Parquet")

    corpus = write_corpus(tmp_path / "corpus", GOOD)
    broken = tmp_path / "broken-ckpt"
    shutil.copytree(tiny_checkpoint, broken)
    with open(broken / "commer_config.json", "a") as fh:
        fh.write(" ")
    _one_error_line(compress(corpus, out, broken), "checkpoint", "altered")
    _one_error_line(compress(corpus, out, tmp_path / "no-such-ckpt"), "checkpoint", "not usable: no such directory")
    _one_error_line(compress(corpus, out, tiny_checkpoint, "--", "--runner=NoSuchRunner"), "NoSuchRunner")
    assert not os.path.exists(os.path.join(out, LATEST_NAME))

    usage = invoke("compress", "--device", "tpu")
    assert usage.exit_code == 2 and "Traceback" not in usage.output


@pytest.mark.slow
def test_no_arguments_runs_the_embedded_default_with_the_real_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("compress")
    assert result.exit_code == 0, result.output
    from commer_core.checkpoint import read_config
    from commer_core.defaults import default_checkpoint_path

    # the untrained-placeholder warning appears exactly when the bundled checkpoint is untrained
    assert ("UNTRAINED" in result.output) == (not read_config(default_checkpoint_path())["trained"])
    assert "users         6" in result.output
    store = open_store(tmp_path / "commer-output")
    assert (store.num_embeddings, store.hidden_size) == (16, 576)

    store.check_compatible(default_checkpoint_path())
