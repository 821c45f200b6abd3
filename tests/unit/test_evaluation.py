"""Metrics, power-law fit, plots, and that every method is scored on identical examples."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig, LoraSettings
from commer_core.data import Document, Example
from commer_core.evaluation import (
    MethodSpec,
    evaluate_method,
    fit_power_law,
    format_table,
    rouge,
    summarize,
    write_results,
)
from commer_core.training import (
    CommerMethod,
    NoPersonalization,
    PromptTuningMethod,
    RawDocsMethod,
    prepare_examples,
)


def test_rouge_matches_rouge_score_defaults():
    from rouge_score import rouge_scorer

    preds = ["the cats are running home", "completely different words", ""]
    refs = ["the cat is running home", "nothing shared here", "empty prediction"]
    got = rouge(preds, refs)
    assert got[0]["rouge1"] == pytest.approx(0.6)  # the, running, home: P = R = 3/5 (no stemming: cats != cat)
    assert got[1] == {"rouge1": 0.0, "rougeL": 0.0} and got[2]["rougeL"] == 0.0
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    assert got[0]["rougeL"] == scorer.score(refs[0], preds[0])["rougeL"].fmeasure
    assert rouge(["same text"], ["same text"])[0] == {"rouge1": 1.0, "rougeL": 1.0}


def test_power_law_fit_recovers_exponent():
    ns = [1, 2, 4, 8]
    fit = fit_power_law(ns, [3.0 * n ** -0.12 for n in ns])
    assert fit["a"] == pytest.approx(3.0) and fit["b"] == pytest.approx(-0.12) and fit["r2"] == pytest.approx(1.0)
    noisy = fit_power_law(ns, [3.0 * n ** -0.12 * (1 + e) for n, e in zip(ns, [0.01, -0.01, 0.005, 0.0])])
    assert -0.14 < noisy["b"] < -0.10 and noisy["r2"] > 0.9
    with pytest.raises(ValueError):
        fit_power_law([4, 4], [1.0, 2.0])


def test_summarize_is_token_weighted():
    recs = [
        {"label": "m", "method": "commer", "k": 4, "budget": None, "n_docs": 2, "example_id": "a",
         "examples_digest": "x", "nll": 2.0, "n_tokens": 1, "prompt_tokens": 4, "rouge1": 0.5, "rougeL": 0.25},
        {"label": "m", "method": "commer", "k": 4, "budget": None, "n_docs": 2, "example_id": "b",
         "examples_digest": "x", "nll": 6.0, "n_tokens": 3, "prompt_tokens": 4},
    ]
    (row,) = summarize(recs)
    assert row["perplexity"] == pytest.approx(math.exp(8.0 / 4))
    assert row["mean_example_perplexity"] == pytest.approx((math.exp(2.0) + math.exp(2.0)) / 2)
    assert row["rouge1"] == 0.5 and row["n_generated"] == 1 and row["prompt_tokens"] == 4
    assert "| m |" in format_table([row])


def _examples() -> list[Example]:
    out = []
    for i in range(5):
        docs = [Document(f"{i}-{j}", f"note {j} of user {i}: likes topic {(i + j) % 3}") for j in range(5)]
        out.append(Example(f"e{i}", f"u{i}", f"write about topic {i % 3}", f"topic {i % 3} is fun", docs))
    out.append(Example("unlabelled", "u9", "no target", None, []))
    return out


def test_baselines_and_commer_are_scored_on_identical_examples(tiny_backbone, tmp_path):
    config = CompressorConfig(base_model="tiny-random", num_embeddings=3, lora=LoraSettings(r=2, alpha=4))
    commer = CommerMethod(Compressor(tiny_backbone, config))
    gen = commer.generator
    methods = [
        (commer, MethodSpec("commer-k3", "commer", 3)),
        (PromptTuningMethod(gen, num_embeddings=3, budget=20), MethodSpec("pt", "prompt_tuning", 3, 20)),
        (RawDocsMethod(gen, budget=20), MethodSpec("raw-b20", "raw_docs", None, 20)),
        (NoPersonalization(gen), MethodSpec("none", "none", 0)),
    ]
    by_n = {n: prepare_examples(_examples(), tiny_backbone.tokenizer, n_docs=n) for n in (1, 2, 4)}
    records = []
    for method, spec in methods:
        records += evaluate_method(method, spec, by_n, generate=2, max_new_tokens=3)
    rows = summarize(records)
    assert len(rows) == 4 * 3
    for n in (1, 2, 4):
        ids = {r["label"]: [x["example_id"] for x in records if x["label"] == r["label"] and x["n_docs"] == n]
               for r in rows}
        assert all(v == ["e0", "e1", "e2", "e3", "e4"] for v in ids.values())
        digests = {r["examples_digest"] for r in rows if r["n_docs"] == n}
        assert len(digests) == 1 and "MIXED" not in digests
    docs_used = {(r["label"], r["n_docs"]): {x["docs_used"] for x in records
                                              if x["label"] == r["label"] and x["n_docs"] == r["n_docs"]}
                 for r in rows}
    assert docs_used[("none", 4)] == {4} and docs_used[("commer-k3", 2)] == {2}
    cost = {(r["label"], r["n_docs"]): r["prompt_tokens"] for r in rows}
    assert cost[("commer-k3", 4)] == 3 and cost[("none", 4)] == 0
    assert cost[("raw-b20", 4)] == 20 and cost[("pt", 4)] == 23  # budget reached with 4 documents
    assert cost[("raw-b20", 1)] < 20
    assert all(r["n_generated"] == 2 and r["rougeL"] is not None for r in rows)

    paths = write_results(tmp_path, rows, records, meta={"note": "test"})
    data = json.loads(paths["json"].read_text())
    assert data["meta"] == {"note": "test"} and len(data["summary"]) == 12
    assert set(data["power_law"]) >= {"commer-k3"}
    with open(paths["csv"]) as fh:
        assert len(list(csv.DictReader(fh))) == 12
    for key in ("cost_quality", "docs_scaling"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perplexity_agrees_with_the_generators_scores(tiny_backbone):
    config = CompressorConfig(base_model="tiny-random", num_embeddings=2, lora=LoraSettings(r=2, alpha=4))
    method = NoPersonalization(CommerMethod(Compressor(tiny_backbone, config)).generator)
    prepared = prepare_examples(_examples(), tiny_backbone.tokenizer, n_docs=0)
    recs = evaluate_method(method, MethodSpec("none", "none", 0), {0: prepared})
    scored = method.generator.score([None] * len(prepared), [e.input for e in prepared], [e.target for e in prepared])
    (row,) = summarize(recs)
    expected = math.exp(sum(s.nll for s in scored) / sum(s.n_tokens for s in scored))
    assert row["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert np.isclose(recs[0]["nll"], scored[0].nll, rtol=1e-5)


def test_pivot_table_has_one_line_per_method_best_first():
    from commer_core.evaluation import format_pivot

    def row(label, n, ppl, rouge=None):
        return {"label": label, "n_docs": n, "perplexity": ppl, "prompt_tokens": 16.0, "rouge1": rouge,
                "rougeL": rouge and rouge / 2}

    rows = [row("a", 1, 9.0), row("a", 8, 8.0, 0.4), row("b", 1, 3.0), row("b", 8, 2.0)]
    lines = format_pivot(rows).splitlines()
    assert lines[0] == "| method | prompt tokens | ppl @1 docs | ppl @8 docs | ROUGE-1 | ROUGE-L |"
    assert lines[2] == "| b | 16 | 3.00 | 2.00 | - | - |" and lines[3] == "| a | 16 | 9.00 | 8.00 | 0.400 | 0.200 |"


def test_swap_adds_the_personalization_gap_to_rows_files_and_tables(tiny_backbone, tmp_path):
    from commer_core.evaluation import GAP_FIELDS, format_personalization, gap_rows

    config = CompressorConfig(base_model="tiny-random", num_embeddings=3, lora=LoraSettings(r=2, alpha=4))
    commer = CommerMethod(Compressor(tiny_backbone, config))
    by_n = {n: prepare_examples(_examples(), tiny_backbone.tokenizer, n_docs=n) for n in (0, 2)}
    records = evaluate_method(commer, MethodSpec("commer-k3", "commer", 3), by_n, swap=True)
    records += evaluate_method(RawDocsMethod(commer.generator, budget=20), MethodSpec("raw-b20", "raw_docs", None, 20),
                               by_n, swap=True)
    records += evaluate_method(NoPersonalization(commer.generator), MethodSpec("none", "none", 0), by_n, swap=True)
    rows = {(r["label"], r["n_docs"]): r for r in summarize(records)}
    assert all(rows[(label, 0)]["gap"] is None for label in ("commer-k3", "raw-b20", "none"))
    assert all(rows[("none", 2)][f] is None for f in GAP_FIELDS)
    for label in ("commer-k3", "raw-b20"):
        row = rows[(label, 2)]
        assert row["gap_low"] <= row["gap"] <= row["gap_high"] and 0.0 <= row["own_better"] <= 1.0
        assert row["other_perplexity"] != row["perplexity"]
    assert rows[("commer-k3", 2)]["mean_prompt_perplexity"] > 0
    assert rows[("raw-b20", 2)]["mean_prompt_perplexity"] is None
    assert [r["label"] for r in gap_rows(rows.values())] == sorted(
        ["commer-k3", "raw-b20"], key=lambda label: -rows[(label, 2)]["gap"])
    assert format_personalization(rows.values()).count("\n") == 3
    paths = write_results(tmp_path, list(rows.values()), records)
    assert paths["personalization_gap"].read_bytes()[:4] == b"\x89PNG"
    with open(paths["csv"]) as fh:
        csv_rows = {(r["label"], r["n_docs"]): r for r in csv.DictReader(fh)}
    assert float(csv_rows[("raw-b20", "2")]["gap"]) == pytest.approx(rows[("raw-b20", 2)]["gap"])
    no_swap = evaluate_method(commer, MethodSpec("c", "commer", 3), by_n)
    assert all("nll_other" not in r for r in no_swap)


def test_evaluate_cli_prints_the_personalization_table_first(tmp_path):
    from click.testing import CliRunner

    from commer_core.data import write_examples_parquet
    from jobs.cli import cli

    write_examples_parquet(_examples(), tmp_path / "dev.parquet")
    common = ["evaluate", "--data", str(tmp_path), "--base-model", "tiny-random", "--baseline", "none",
              "--baseline", "raw_docs", "--raw-budget", "16", "--docs-at-test", "2", "--generate", "0",
              "--no-progress"]
    result = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "swap")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.index("personalization") < result.output.index("| method | k |")
    assert "| raw-b16 | 2 | 5 |" in result.output
    summary = json.loads((tmp_path / "swap" / "results.json").read_text())["summary"]
    assert {r["label"]: r["gap"] is not None for r in summary} == {"raw-b16": True, "none": False}
    off = CliRunner().invoke(cli, [*common, "--no-swap", "--output", str(tmp_path / "off")], catch_exceptions=False)
    assert off.exit_code == 0 and "personalization" not in off.output


def test_evaluate_cli_swaps_a_single_user_split_with_another_splits_users(tmp_path):
    """PerLTQA's test split holds one unseen character: --swap-with train gives it a gap."""
    from click.testing import CliRunner

    from commer_core.data import write_examples_parquet
    from jobs.cli import cli

    examples = _examples()
    write_examples_parquet([e for e in examples if e.user_id == "u0"], tmp_path / "test.parquet")
    write_examples_parquet([e for e in examples if e.user_id != "u0"], tmp_path / "train.parquet")
    common = ["evaluate", "--data", str(tmp_path), "--split", "test", "--base-model", "tiny-random", "--baseline",
              "raw_docs", "--raw-budget", "16", "--docs-at-test", "2", "--generate", "0", "--no-progress"]
    alone = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "alone")], catch_exceptions=False)
    assert alone.exit_code == 0, alone.output
    assert json.loads((tmp_path / "alone" / "results.json").read_text())["summary"][0]["gap"] is None
    pooled = CliRunner().invoke(cli, [*common, "--swap-with", "train", "--output", str(tmp_path / "pooled")],
                                catch_exceptions=False)
    assert pooled.exit_code == 0, pooled.output
    results = json.loads((tmp_path / "pooled" / "results.json").read_text())
    assert results["summary"][0]["gap"] is not None and results["meta"]["swap_with"] == "train"
    missing = CliRunner().invoke(cli, [*common, "--swap-with", "validation", "--output", str(tmp_path / "bad")])
    assert missing.exit_code != 0 and "valid" in missing.output
