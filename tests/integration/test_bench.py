"""`commer-pipeline bench` on the tiny model: the figures it promises are there and consistent."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from jobs.cli import cli


@pytest.mark.slow
def test_bench_reports_ratios_against_naive_and_peak(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--docs", "8", "--mix", "tweet", "--mix", "lognormal",
                                      "--checkpoint", str(tiny_checkpoint), "--no-generation", "--compile",
                                      "--json", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    for key in ("naive_docs_per_s", "core_docs_per_s", "pipeline_docs_per_s", "pipeline_mp_docs_per_s",
                "matmul_peak_gflops", "core_fraction_of_peak", "peak_rss_mb"):
        assert r[key] > 0, key
    # padding: none one document at a time; at most the planner's 10% per batch; the report's
    # figure is the lognormal mix's (the one with padding to lose)
    for mix in r["mixes"].values():
        assert mix["naive"]["padding_fraction"] == 0 and 0 <= mix["core"]["padding_fraction"] <= 0.1
    assert r["padding_fraction"] == r["mixes"]["lognormal"]["core"]["padding_fraction"]
    tweet = r["mixes"]["tweet"]
    assert tweet["core_vs_naive"] == tweet["core"]["docs_per_s"] / tweet["naive"]["docs_per_s"]
    assert r["compiled"] and tweet["core_compiled"]["docs_per_s"] > 0 and r["core_compiled_fraction_of_peak"] > 0
    assert len(r["matmul_peak_samples"]) == 5 and r["matmul_peak_gflops"] == max(r["matmul_peak_samples"])
    for row in (tweet["naive"], tweet["core"]):  # each against the peak probed between its own batches
        assert row["peak_alongside_gflops"] > 0
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / row["peak_alongside_gflops"])
        assert row["fraction_of_best_peak"] == pytest.approx(row["gflops"] / r["matmul_peak_gflops"])
    assert r["core_fraction_of_best_peak"] == min(m["core"]["fraction_of_best_peak"] for m in r["mixes"].values())
    assert "| tweet | core |" in result.output and "| tweet | core (compiled layers) |" in result.output
    assert "machine-hours" in result.output and r["pipeline"]["mix"] == "tweet"
    assert f"machine-hour (tweet mix, model {r['model']}, fp32)" in result.output  # the cost names what it costs
    import torch
    assert f"torch {torch.__version__}" in r["software"] and r["software"] in result.output  # figures name their stack


@pytest.mark.slow
def test_scaling_runs_each_size_in_its_own_process(tiny_checkpoint):
    from jobs.bench.scaling import run_sizes

    out = run_sizes(str(tiny_checkpoint), [200], [1, 50], 100, 512, say=lambda _m: None)
    runs = out["runs"]
    assert [(r["docs"], r["docs_per_user"], r["users"]) for r in runs] == [(200, 10, 20), (100, 1, 100), (100, 50, 2)]
    assert [r["user_buckets"] for r in runs] == [1, 1, 1]
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 100 for r in runs)


@pytest.mark.slow
def test_bench_sweeps_token_budgets_on_an_untrained_base_model(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--docs", "8", "--naive-docs", "3", "--mix", "tweet",
                                      "--base-model", "tiny-random", "--batch-tokens", "128",
                                      "--batch-tokens", "512", "--skip-pipeline", "--no-generation",
                                      "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert (r["model"], r["device"], r["dtype"], r["batch_tokens"]) == ("tiny-random", "cpu", "fp32", [128, 512])
    tweet = r["mixes"]["tweet"]
    sweep = tweet["sweep"]
    assert set(sweep) == {"128", "512"}
    fastest = max(sweep, key=lambda b: sweep[b]["docs_per_s"])
    assert tweet["core"]["batch_tokens"] == int(fastest)
    assert tweet["core"]["docs_per_s"] == sweep[fastest]["docs_per_s"]
    assert "Token budget per forward pass" in result.output and "**best**" in result.output


def test_render_puts_a_gpu_report_in_its_own_section(tmp_path):
    from tests.conftest import REPO_ROOT

    cpu_section = "<!-- bench:begin -->\nCPU figures\n<!-- bench:end -->"
    (tmp_path / "PERFORMANCE.md").write_text(f"# Performance\n\n{cpu_section}\n\nprose\n")
    report = REPO_ROOT / "docs" / "bench-cuda-gemma-2b.json"
    for _ in range(2):  # a second render replaces the section instead of adding one
        result = CliRunner().invoke(cli, ["bench", "--render", str(report), "--write-docs", "--docs-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
    doc = (tmp_path / "PERFORMANCE.md").read_text()
    assert cpu_section in doc and "prose" in doc
    assert doc.count("<!-- bench-cuda-random-gemma-2b:begin -->") == 1
    assert (tmp_path / "performance-cuda-random-gemma-2b.png").stat().st_size > 10_000
    r = json.loads(report.read_text())
    mfu = min(m["core"]["gflops"] for m in r["mixes"].values()) / r["datasheet_peak_gflops"]
    assert f"| commer_core >= 50% bf16 MFU (datasheet peak), every mix | {mfu:.0%} |" in doc
    assert ">= 20x the naive loop, article" in result.output
    # a GPU run with the pipeline rows gets a section of its own beside the sweep's
    cpu = json.loads((REPO_ROOT / "docs" / "bench.json").read_text())
    with_pipeline = tmp_path / "with-pipeline.json"
    with_pipeline.write_text(json.dumps({**r, "pipeline": {**cpu["pipeline"], "mix": "article"}}))
    result = CliRunner().invoke(cli, ["bench", "--render", str(with_pipeline), "--write-docs",
                                      "--docs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = (tmp_path / "PERFORMANCE.md").read_text()
    assert doc.count("<!-- bench-cuda-random-gemma-2b:begin -->") == 1
    assert doc.count("<!-- bench-cuda-random-gemma-2b-pipeline:begin -->") == 1
    assert "documents per machine-hour (article mix, model random:gemma-2b, bf16)" in doc


def test_render_refuses_a_file_that_is_not_a_report(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text('{"rows": []}')
    result = CliRunner().invoke(cli, ["bench", "--render", str(bad)])
    assert result.exit_code == 2 and "other.json is not a report written by `bench --json`" in result.output


def test_serving_bench_measures_stores_built_by_the_job_writer(tmp_path):
    from jobs.bench.serving_report import serving_tables

    out = tmp_path / "serving.json"
    result = CliRunner().invoke(cli, ["bench", "--serving", "--serving-users", "1500", "--serving-users", "3000",
                                      "--serving-real-users", "0", "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert [row["users"] for row in r["rows"]] == [1500, 3000]
    for row in r["rows"]:
        assert row["k"] == 4 and row["d"] == 64 and row["open_ms"] > 0 and row["resident_mb"] >= 0
        assert 0 < row["single"]["p50_ms"] <= row["single"]["p99_ms"] and row["missing"]["p50_ms"] < 1
        assert 20 < row["index_bytes_per_user"] < 30 and row["bytes_per_user"] > 4 * 4 * 64 * 0.8
    assert (r["s3"]["single_max"], r["s3"]["missing"], r["s3"]["open"], r["s3"]["refresh_unchanged"]) == (1, 0, 4, 1)
    assert "| 3,000 | 4 x 64 | float32 | 1 |" in result.output and "Cost for 10,000,000 users" in result.output
    rendered = CliRunner().invoke(cli, ["bench", "--render", str(out)], catch_exceptions=False)
    assert rendered.exit_code == 0 and rendered.output.strip() == serving_tables(r).strip()
