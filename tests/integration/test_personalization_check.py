"""`commer-pipeline personalization-check`: compress -> store -> PersonalizedLM, end to end on the tiny backbone."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from commer_core.data import Document, Example, write_examples_parquet
from jobs.cli import cli
from jobs.personalization_cmd import failures, score_with_partners

TOPICS = ["sailing", "chess", "opera", "baking"]


def _examples() -> list[Example]:
    """One example per user (as LaMP), documents that spell out the target, plus an unlabelled one."""
    out = []
    for u, topic in enumerate(TOPICS):
        docs = [Document(f"d{j}", f"note {j}: user {u} writes about {topic} every day") for j in range(3)]
        out.append(Example(f"q{u}", f"user{u}", f"Generate a headline for user {u}", f"{topic} news", docs))
    out.append(Example("q9", "user9", "unlabelled", None, [Document("d0", "text")]))
    return out


@pytest.fixture(scope="module")
def checked(tmp_path_factory, tiny_checkpoint):
    """One end-to-end run (Beam is slow to start): its output folder and CLI result."""
    root = tmp_path_factory.mktemp("pcheck")
    write_examples_parquet(_examples(), root / "dev.parquet")
    result = CliRunner().invoke(cli, ["personalization-check", "--data", str(root), "--checkpoint", str(tiny_checkpoint),
                                      "--output", str(root / "out"), "--docs-per-user", "2", "--batch-size", "3"])
    return root, result


def test_the_check_runs_end_to_end_and_writes_the_report(checked):
    root, result = checked
    assert result.exit_code == 0, result.output
    report = json.loads((root / "out" / "personalization.json").read_text())
    assert report["examples"] == 4 and report["users"] == 4 and report["docs_per_user"] == 2
    assert set(report["gap"]) == {"gap", "low", "high", "own_better", "own_nats", "other_nats", "examples"}
    assert report["gap"]["low"] <= report["gap"]["gap"] <= report["gap"]["high"]
    for key in ("own_perplexity", "other_perplexity", "none_perplexity"):
        assert report[key] > 1.0
    assert report["own_perplexity"] != report["other_perplexity"]
    assert "own better on" in result.output and (root / "out" / "store").is_dir()
    rows = report["per_example"]
    assert [r["example_id"] for r in rows] == [e.example_id for e in _examples() if e.target is not None]
    assert all(r["other_user_id"] != r["user_id"] for r in rows)
    # the summary is made of the rows: the share where own wins and the mean per-token gap
    assert sum(r["own_nats"] < r["other_nats"] for r in rows) / len(rows) == report["gap"]["own_better"]
    assert sum(r["other_nats"] - r["own_nats"] for r in rows) / len(rows) == pytest.approx(report["gap"]["gap"])


def test_the_product_path_agrees_with_the_evaluation_path_and_a_self_swap_is_zero(checked, tiny_checkpoint):
    from commer_core.personalization import personalization_gap
    from commer_core.serving import PersonalizedLM
    from commer_core.training import CommerMethod, prepare_examples, score_examples

    root, result = checked
    assert result.exit_code == 0, result.output
    lm = PersonalizedLM.open(root / "out" / "store", tiny_checkpoint)
    prepared = prepare_examples(_examples(), lm.compressor.tokenizer, n_docs=2)
    own = score_with_partners(lm, prepared, {e.user_id: e.user_id for e in prepared}, batch_size=3)
    direct = score_examples(CommerMethod(lm.compressor), prepared, batch_size=3)
    assert [n for _, n in own] == [n for _, n in direct]
    assert [a for a, _ in own] == pytest.approx([a for a, _ in direct], rel=1e-4)
    zero = personalization_gap(own, score_with_partners(lm, prepared, {e.user_id: e.user_id for e in prepared},
                                                        batch_size=3))
    assert zero.gap == 0.0 and zero.low == 0.0 and zero.high == 0.0


def test_thresholds_fail_the_check():
    report = {"gap": {"gap": 0.2, "low": -0.01, "high": 0.4, "own_better": 0.8}}
    assert failures(report, None, None) == []
    problems = failures(report, 0.3, 0.85)
    assert len(problems) == 3 and "gap 0.200 < --min-gap 0.3" in problems[0]
    assert failures({"gap": {"gap": 0.5, "low": 0.1, "high": 0.9, "own_better": 0.9}}, 0.3, 0.85) == []


def test_bad_input_is_one_error_line(tmp_path, tiny_checkpoint):
    runner = CliRunner()
    empty = runner.invoke(cli, ["personalization-check", "--data", str(tmp_path), "--checkpoint", str(tiny_checkpoint),
                                "--output", str(tmp_path / "out")])
    assert empty.exit_code == 1 and empty.output.startswith("Error:") and empty.output.count("\n") == 1
    assert "dev.parquet" in empty.output
    write_examples_parquet(_examples()[:1], tmp_path / "dev.parquet")
    one_user = runner.invoke(cli, ["personalization-check", "--data", str(tmp_path), "--checkpoint",
                                   str(tiny_checkpoint), "--output", str(tmp_path / "out")])
    assert one_user.exit_code == 1 and "at least 2 users" in one_user.output
    not_ckpt = runner.invoke(cli, ["personalization-check", "--data", str(tmp_path), "--checkpoint", str(tmp_path),
                                   "--output", str(tmp_path / "out")])
    assert not_ckpt.exit_code == 1 and not_ckpt.output.startswith("Error:")
