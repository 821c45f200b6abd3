"""The chain on the command line: official-format files -> prepare -> train -> evaluate -> plots."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from commer_core.personalization import pooled_gap
from commer_core.synthetic import make_personas, write_synthetic_lamp
from jobs.cli import cli

TINY = ["--base-model", "tiny-random", "-k", "4", "--lora-r", "4", "--batch-size", "2", "--docs-per-example", "3",
        "--max-doc-tokens", "32", "--max-dev-examples", "4", "--no-progress"]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_synthetic_lamp_is_deterministic_and_official_format(tmp_path):
    write_synthetic_lamp(tmp_path / "a", users={"train": 3, "dev": 2}, seed=4)
    write_synthetic_lamp(tmp_path / "b", users={"train": 3, "dev": 2}, seed=4)
    for name in ("train/train_questions.json", "train/train_outputs.json", "dev/dev_outputs.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    questions = json.loads((tmp_path / "a/train/train_questions.json").read_text())
    outputs = json.loads((tmp_path / "a/train/train_outputs.json").read_text())
    assert outputs["task"] == "LaMP_7" and [g["id"] for g in outputs["golds"]] == [q["id"] for q in questions]
    assert all(set(p) == {"id", "text", "date"} for q in questions for p in q["profile"])
    persona = make_personas(3, seed=4, split="train")[0]
    assert questions[0]["id"].startswith(persona.user + "-q")
    assert any(persona.facts["city"] in p["text"] or persona.facts["pet_name"] in p["text"]
               for p in questions[0]["profile"])


def test_prepare_train_evaluate_end_to_end(tmp_path):
    raw, prep = tmp_path / "raw", tmp_path / "prep"
    write_synthetic_lamp(raw, users={"train": 4, "dev": 2})
    counts = json.loads(_invoke("prepare", "lamp7", "--source", str(raw), "--output", str(prep)))
    assert counts["train"]["examples"] == 8 and counts["dev"]["examples"] == 4
    out = _invoke("train", "--task", "lamp7", "--data", str(prep), "--output", str(tmp_path / "run"),
                  "--steps", "2", *TINY)
    summary = json.loads(out[out.index("{"):])
    assert summary["steps"] == 2 and {"trained", "untrained", "none"} <= set(summary["dev_perplexity"])
    _invoke("train", "--task", "lamp7", "--method", "prompt_tuning", "--raw-budget", "16", "--data", str(prep),
            "--output", str(tmp_path / "pt"), "--steps", "1", "--no-compare-baselines", *TINY)
    # A second call without --resume is refused; with --resume on a finished run it is a no-op.
    refused = CliRunner().invoke(cli, ["train", "--data", str(prep), "--output", str(tmp_path / "run"), "--steps", "2", *TINY])
    assert refused.exit_code != 0 and "--resume" in refused.output
    _invoke("train", "--data", str(prep), "--output", str(tmp_path / "run"), "--steps", "2", "--resume",
            "--task", "lamp7", *TINY)
    out = _invoke("evaluate", "--checkpoint", f"mine={tmp_path / 'run'}", "--checkpoint", str(tmp_path / "pt"),
                  "--data", str(prep), "--docs-at-test", "1,3", "--raw-budget", "8,16", "--generate", "1",
                  "--max-new-tokens", "2", "--output", str(tmp_path / "eval"), "--no-progress")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    labels = {r["label"] for r in results["summary"]}
    assert labels == {"mine", "pt-k4-b16", "untrained-k4", "none", "raw-b8", "raw-b16"}
    for n in (1, 3):
        assert len({r["examples_digest"] for r in results["summary"] if r["n_docs"] == n}) == 1
    for name in ("results.csv", "cost_vs_quality.png", "perplexity_vs_docs.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    assert "| mine |" in out


def test_prepare_malformed_file_names_file_and_item(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic_lamp(raw, users={"train": 2, "dev": 1})
    questions = raw / "train" / "train_questions.json"
    data = json.loads(questions.read_text())
    del data[1]["profile"]
    questions.write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["prepare", "lamp7", "--source", str(raw), "--output", str(tmp_path / "p")])
    assert result.exit_code != 0
    assert "train_questions.json" in result.output and "item 1" in result.output and "profile" in result.output


def test_train_autoencode_then_init_task_training(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"sentence {i} about the topic {i % 5}" for i in range(40)))
    out = _invoke("train", "--objective", "autoencode", "--task", "text", "--data", str(corpus), "--output",
                  str(tmp_path / "ae"), "--steps", "2", "--ae-dev-examples", "3", *TINY)
    assert json.loads(out[out.index("{"):])["steps"] == 2
    ckpt = json.loads((tmp_path / "ae" / "checkpoint" / "commer_config.json").read_text())
    assert ckpt["training"]["objective"] == "autoencode" and ckpt["training"]["autoencode"]["dev_examples"] == 3
    raw, prep = tmp_path / "raw", tmp_path / "prep"
    write_synthetic_lamp(raw, users={"train": 2, "dev": 1})
    _invoke("prepare", "lamp7", "--source", str(raw), "--output", str(prep))
    _invoke("train", "--data", str(prep), "--output", str(tmp_path / "task"), "--steps", "1",
            "--init-from", str(tmp_path / "ae" / "checkpoint"), "--no-compare-baselines", *TINY)
    task = json.loads((tmp_path / "task" / "checkpoint" / "commer_config.json").read_text())
    assert task["training"]["init_from"].endswith("checkpoint")


@pytest.mark.slow
def test_real_model_perltqa_smoke(shared_data, tmp_path):
    """Smoke scale on the real PerLTQA excerpt with SmolLM2-135M (about two minutes on 2 cores).

    Ten steps take the compressor from an untrained prompt that hurts the frozen model to a
    usable one: with the RMS prompt norm the untrained prompt sits at the token embeddings'
    scale (dev perplexity about 90 instead of thousands) and ten steps reach about 11.
    """
    prep = tmp_path / "prep"
    _invoke("prepare", "perltqa", "--source", str(shared_data / "perltqa"), "--output", str(prep),
            "--n-test-characters", "1")
    out = _invoke("train", "--task", "perltqa", "--data", str(prep), "--output", str(tmp_path / "run"),
                  "-k", "8", "--lora-r", "8", "--lr-lora", "1e-3", "--steps", "10", "--batch-size", "4",
                  "--docs-per-example", "1", "--max-doc-tokens", "64", "--max-input-tokens", "64",
                  "--max-target-tokens", "32", "--max-dev-examples", "8", "--no-progress")
    dev = json.loads(out[out.index("{"):])["dev_perplexity"]
    assert dev["trained"] < dev["untrained"] / 4, dev
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["loss"] for r in log[-3:]) < sum(r["loss"] for r in log[:3]), log


# Held-out user sets the bundled checkpoint is checked on (32 users each, the generator's held-out pools):
# the ten sets a rule written before they existed judged it on (docs/RESULTS.md, Session 33). The floor
# test reads the first, the whole-bar test pools all ten (one 64-example set's share is +-9 points, five
# sets' +-4: the bar is read over all the examples that decided, not over a subset that happens to pass).
_HELDOUT_SEEDS = tuple(range(90, 100))


@pytest.fixture(scope="module")
def default_checkpoint_check(tmp_path_factory):
    """The bundled checkpoint through the product path (compress job -> store -> PersonalizedLM) on
    users it never saw: a function of a seed giving that seed's report, each seed checked once."""
    @functools.cache
    def check(seed: int) -> dict:
        root = tmp_path_factory.mktemp(f"default-ckpt-{seed}")
        write_synthetic_lamp(root / "raw", users={"train": 1, "dev": 32}, seed=seed)
        _invoke("personalization-check", "--data", str(root / "raw"), "--task", "lamp7", "--split", "dev",
                "--checkpoint", "default", "--output", str(root / "check"), "--docs-per-user", "0",
                "--max-examples", "64", "--max-input-tokens", "64", "--max-target-tokens", "40", "--no-progress")
        return json.loads((root / "check" / "personalization.json").read_text())
    return check


@pytest.mark.slow
def test_default_checkpoint_reads_the_users_own_documents(default_checkpoint_check):
    """Own stored prompt beats no prompt and, by a real margin, another user's prompt.

    Measured when bundled on seed 90 (S5avg of session 33: the mean of IC and four runs of 200 steps from it):
    own 48.4, other 81.2, none 70.8 ppl; gap +0.540 [+0.428, +0.657], own better on 85.9% of 64 examples
    (docs/RESULTS.md). IC, bundled before, met the floor on seed 40 (+0.441, 87.5%); run I (gap +0.122, own
    better 80%) and F at step 325 (+0.098) fail it.
    """
    report = default_checkpoint_check(_HELDOUT_SEEDS[0])
    assert report["none_gap"]["low"] > 0 and report["own_perplexity"] < report["none_perplexity"], report
    assert report["gap"]["gap"] > 0.25 and report["gap"]["low"] > 0.15, report["gap"]
    assert report["gap"]["own_better"] > 0.75, report["gap"]


@pytest.mark.slow
def test_default_checkpoint_keeps_the_bar_on_the_sets_that_chose_it(default_checkpoint_check):
    """Issue 17's bar (gap >= 0.30 nats/token, interval above 0, own better on >= 85%) over the 640
    examples of all ten held-out sets, read as docs/RESULTS.md and scripts/pool_personalization.py do.

    Measured when bundled (S5avg, session 33): +0.515 [+0.478, +0.554], own better on 548 of 640 (85.6%),
    four examples above the bar. The sets were made after the rule that judged the soup was written; IC,
    bundled before, scores 544 of 640 (85.0%) on them and 84.5% over 1920 other held-out examples (seeds
    30-84), so this guards the figures the checkpoint was bundled on, not the issue's bar on every new set.
    """
    gap = pooled_gap([default_checkpoint_check(seed) for seed in _HELDOUT_SEEDS])
    assert gap.gap >= 0.30 and gap.low > 0 and gap.own_better >= 0.85, gap