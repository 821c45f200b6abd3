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
