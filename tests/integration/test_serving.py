"""Serving: a store written by the compress job, read back to personalize generation."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from commer_core.checkpoint import CheckpointError, save_checkpoint
from commer_core.merge import mean_pool
from commer_core.serving import PersonalizedLM, Request
from commer_core.store import StoreError
from jobs.cli import cli
from tests.helpers import DOCS, make_compressor

USERS = {"alice": DOCS[:2], "bob": DOCS[2:4], "carol": DOCS[4:]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny checkpoint and the store the compress job builds with it (built once: Beam is slow to start)."""
    from commer_core.backbone import load_backbone

    root = tmp_path_factory.mktemp("serving")
    checkpoint = root / "ck"
    save_checkpoint(make_compressor(load_backbone("tiny-random")), checkpoint, trained=False)
    rows = [{"user_id": u, "doc_id": f"{u}-{i}", "text": t} for u, docs in USERS.items() for i, t in enumerate(docs)]
    pq.write_table(pa.Table.from_pylist(rows), root / "corpus.parquet")
    result = CliRunner().invoke(
        cli, ["compress", "--input", str(root / "corpus.parquet"), "--output", str(root / "store"),
              "--checkpoint", str(checkpoint)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


def test_generation_from_the_store_equals_generation_from_direct_compression(served):
    lm = PersonalizedLM.open(served / "store", served / "ck")
    for user, docs in USERS.items():
        direct = mean_pool(lm.compressor.compress_texts(docs))
        stored = lm.prompts([user])[user]
        assert torch.allclose(stored, direct, atol=1e-5)
        from_store = lm.generate([Request(user, "Write a headline:")], max_new_tokens=8)[0].output
        from_docs = lm.generator.generate([direct], ["Write a headline:"], max_new_tokens=8)[0]
        assert from_store == from_docs


def test_batched_requests_with_different_users_equal_one_at_a_time(served):
    lm = PersonalizedLM.open(served / "store", served / "ck")
    requests = [Request("carol", "Hi"), Request("alice", "Paraphrase: so tired today"), Request("bob", "Tell me")]
    batch = lm.generate(requests, batch_size=8, max_new_tokens=6)
    single = [lm.generate([r], batch_size=1, max_new_tokens=6)[0] for r in requests]
    assert [r.output for r in batch] == [r.output for r in single]
    assert all(r.personalized and r.error is None for r in batch)


def test_an_unknown_user_fails_only_its_row(served):
    lm = PersonalizedLM.open(served / "store", served / "ck")
    requests = [Request("alice", "Hi"), Request("mallory", "Hi"), Request("bob", "Hi")]
    rows = lm.generate(requests, max_new_tokens=4)
    assert rows[1].output is None and "unknown user 'mallory'" in rows[1].error
    assert rows[0].output is not None and rows[2].output is not None
    fallback = lm.generate(requests, max_new_tokens=4, fallback="none")
    assert fallback[1].output is not None and not fallback[1].personalized
    assert lm.generator.generate([None], ["Hi"], max_new_tokens=4)[0] == fallback[1].output
    assert lm.score(["mallory", "alice"], ["Hi", "Hi"], [" there", " there"])[0] is None


def test_a_store_from_another_checkpoint_is_refused(served, tmp_path):
    from commer_core.backbone import load_backbone

    other = tmp_path / "other"
    save_checkpoint(make_compressor(load_backbone("tiny-random"), seed=7), other, trained=False)
    with pytest.raises(StoreError):
        PersonalizedLM.open(served / "store", other)
    altered = tmp_path / "altered"
    shutil.copytree(served / "ck", altered)
    (altered / "commer_config.json").write_text((altered / "commer_config.json").read_text() + " ")
    with pytest.raises((StoreError, CheckpointError)):
        PersonalizedLM.open(served / "store", altered)


def test_generate_cli_single_and_batch(served, tmp_path):
    runner = CliRunner()
    one = runner.invoke(cli, ["generate", "--store", str(served / "store"), "--checkpoint", str(served / "ck"),
                              "--user", "alice", "--input", "Hi", "--max-new-tokens", "4"])
    assert one.exit_code == 0, one.output
    unknown = runner.invoke(cli, ["generate", "--store", str(served / "store"), "--checkpoint", str(served / "ck"),
                                  "--user", "nobody", "--input", "Hi"])
    assert unknown.exit_code != 0 and "unknown user 'nobody'" in unknown.output
    requests = tmp_path / "req.parquet"
    pq.write_table(pa.Table.from_pylist([{"user_id": "bob", "input": "Hi"}, {"user_id": "zed", "input": "Yo"}]), requests)
    out = tmp_path / "out.parquet"
    batch = runner.invoke(cli, ["generate", "--store", str(served / "store"), "--checkpoint", str(served / "ck"),
                                "--requests", str(requests), "--output", str(out), "--max-new-tokens", "4"])
    assert batch.exit_code == 0, batch.output
    table = pq.read_table(out).to_pylist()
    assert [r["user_id"] for r in table] == ["bob", "zed"]
    assert table[0]["output"] is not None and table[0]["error"] is None and table[0]["new_tokens"] > 0
    assert table[1]["output"] is None and "unknown user" in table[1]["error"]


LONG = "Summarize: " + "word " * 20_000  # ~20k tokens; the tiny backbone has 2048 positions


def test_empty_null_and_overlong_inputs_get_per_row_errors_or_a_truncated_flag(served):
    lm = PersonalizedLM.open(served / "store", served / "ck")
    requests = [Request("alice", "Hi"), Request("alice", ""), Request("bob", "   "), Request("bob", None),
                Request(None, "Hi"), Request("carol", LONG), Request("mallory", ""), Request("bob", "Tell me")]
    for fallback in ("error", "none"):
        rows = lm.generate(requests, batch_size=8, max_new_tokens=4, fallback=fallback)
        errors = [r.error for r in rows[1:5]]
        assert errors == ["input is empty", "input is empty", "input is null", "user_id is null"]
        assert all(r.output is None and not r.truncated for r in rows[1:5])
        assert rows[6].output is None and rows[6].error  # unknown user or empty input: an error either way
        for good in (rows[0], rows[7]):
            assert good.error is None and not good.truncated and good.new_tokens > 0
            assert good.output == lm.generate([requests[rows.index(good)]], max_new_tokens=4)[0].output
        long = rows[5]
        assert long.error is None and long.truncated and long.input == LONG and long.output is not None


def test_an_overlong_input_keeps_its_first_tokens_within_the_budget(served):
    lm = PersonalizedLM.open(served / "store", served / "ck")
    prefix = lm.prompts(["carol"])["carol"]
    budget = lm.generator.input_budget(prefix, 16)
    assert budget == 2048 - prefix.shape[0] - 16  # no BOS head with a chat template
    text, truncated, error = lm.fit_input(LONG, prefix, 16)
    assert truncated and error is None and LONG.startswith(text) and text.startswith("Summarize: word")
    assert budget - 3 <= len(lm.generator.format.input_ids([text])[0]) <= budget
    assert lm.fit_input("Hi", prefix, 16) == ("Hi", False, None)
    assert lm.fit_input("Hi", prefix, 4096)[2].startswith("no room for an input")
    # what the cut row generates is what the cut text generates alone
    row = lm.generate([Request("carol", LONG)], max_new_tokens=16)[0]
    assert row.truncated and row.output == lm.generator.generate([prefix], [text], max_new_tokens=16)[0]


def test_generate_cli_writes_per_row_errors_and_the_truncated_flag(served, tmp_path):
    runner = CliRunner()
    base = ["generate", "--store", str(served / "store"), "--checkpoint", str(served / "ck"), "--max-new-tokens", "4"]
    empty = runner.invoke(cli, [*base, "--user", "alice", "--input", ""])
    assert empty.exit_code != 0 and "input is empty" in empty.output
    long = runner.invoke(cli, [*base, "--user", "alice", "--input", LONG])
    assert long.exit_code == 0, long.output
    assert "only its first tokens were read" in long.stderr
    requests = tmp_path / "req.parquet"
    pq.write_table(pa.Table.from_pylist([{"user_id": "bob", "input": "Hi"}, {"user_id": "bob", "input": ""},
                                         {"user_id": "bob", "input": None}, {"user_id": None, "input": "Hi"},
                                         {"user_id": "alice", "input": LONG}]), requests)
    out = tmp_path / "out.parquet"
    batch = runner.invoke(cli, [*base, "--requests", str(requests), "--output", str(out)])
    assert batch.exit_code == 0, batch.output
    table = pq.read_table(out)
    assert "truncated" in table.column_names
    rows = table.to_pylist()
    assert [r["error"] for r in rows] == [None, "input is empty", "input is null", "user_id is null", None]
    assert [r["truncated"] for r in rows] == [False, False, False, False, True]
    assert rows[0]["output"] is not None and rows[4]["output"] is not None
    assert "3 errors, 1 inputs truncated" in batch.stderr
