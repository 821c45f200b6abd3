"""jobs.bench: what the benchmark counts, how it pairs timings with the matmul peak, where it writes.

The benchmark lives beside the CLI, not in commer_core: importing commer_core (any
module of it) loads none of it, and its docs go where the user says, never into the
installed package.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from click.testing import CliRunner

from commer_core.compressor import plan_batches
from jobs.bench import perf
from jobs.cli import cli
from tests.conftest import REPO_ROOT
from tests.helpers import make_compressor


def test_flops_count_the_decoder_without_lora_or_lm_head(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    c = tiny_backbone.model.config
    d, kv = c.hidden_size, c.num_key_value_heads * (d_head := c.hidden_size // c.num_attention_heads)
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * c.intermediate_size + 2 * d  # q, o, k, v, MLP, 2 norms
    params = c.num_hidden_layers * per_layer + d  # + the final norm
    assert d_head * c.num_attention_heads == d
    expected = 2 * params * 10 + 4 * c.num_hidden_layers * 10 * 10 * d
    assert perf.forward_flops(compressor, [10]) == expected


def test_timing_with_a_probe_runs_one_matmul_per_batch(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    docs = [[5 + i] * n for i, n in enumerate([3, 9, 30, 31, 60, 7])]
    probe = perf.MatmulProbe(n=64)
    timing = perf.time_compressor(compressor, docs, batch_tokens=128, probe=probe)
    batches = list(plan_batches([len(x) for x in docs], compressor.num_embeddings, 128))
    assert len(batches) > 1
    assert probe.flops == 2 * 64**3 * len(batches)
    assert timing.probe_gflops == pytest.approx(probe.gflops) and timing.probe_gflops > 0
    assert timing.docs == len(docs) and timing.tokens == sum(len(x) + compressor.num_embeddings for x in docs)
    assert timing.computed_tokens >= timing.tokens and timing.seconds > 0


def test_importing_commer_core_loads_no_bench_or_cli_code() -> None:
    """Every commer_core module imported in a fresh process: no ``jobs`` module comes along."""
    code = (
        "import importlib, importlib.util, pkgutil, sys, commer_core\n"
        "for m in pkgutil.walk_packages(commer_core.__path__, 'commer_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n == 'jobs' or n.startswith('jobs.')))\n"
        "print(importlib.util.find_spec('commer_core.perf'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["[]", "None"], proc.stdout


def test_no_commer_core_module_imports_jobs_even_inside_a_function() -> None:
    offenders = []
    for path in sorted((REPO_ROOT / "commer_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}" for n in names
                          if n == "jobs" or n.startswith("jobs.")]
    assert not offenders


def _gpu_report() -> str:
    return str(REPO_ROOT / "docs" / "bench-cuda-gemma-2b.json")


def test_write_docs_refuses_in_one_line_without_a_docs_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["bench", "--render", _gpu_report(), "--write-docs"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: --write-docs: no docs/ folder in {tmp_path}; pass --docs-dir DIR (the folder holding "
        "PERFORMANCE.md) or run from a checkout's root"]
    assert list(tmp_path.iterdir()) == []  # refused before printing or writing anything


def test_write_docs_defaults_to_the_current_directorys_docs(tmp_path, monkeypatch) -> None:
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["bench", "--render", _gpu_report(), "--write-docs"])
    assert result.exit_code == 0, result.output
    assert "<!-- bench-cuda-random-gemma-2b:begin -->" in (tmp_path / "docs" / "PERFORMANCE.md").read_text()
    assert (tmp_path / "docs" / "performance-cuda-random-gemma-2b.png").is_file()


def test_docs_dir_without_write_docs_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["bench", "--render", _gpu_report(), "--docs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--docs-dir is where --write-docs writes" in result.output
    assert list(tmp_path.iterdir()) == []


def test_render_without_write_docs_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["bench", "--render", _gpu_report()])
    assert result.exit_code == 0, result.output
    assert ">= 20x the naive loop" in result.output and list(tmp_path.iterdir()) == []
