"""`commer-pipeline bench`: compress throughput against a naive loop and the machine's peak.

All figures of one report come from one run on the same documents, so ratios hold
even when the machine's absolute speed drifts. On CUDA the same run measures the
bf16 path against the card's measured and published matmul peaks.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from jobs.bench import compress_bench as cb
from jobs.bench import measure, perf
from jobs.bench.compress_bench import DTYPE_NAMES
from jobs.bench.perf import MIXES
from jobs.bench.report import markdown_tables, write_docs as write_docs_section
from jobs.bench.serving_report import serving_tables
from jobs.errors import cli_errors


@click.command("bench")
@click.option("--docs", "n_docs", default=64, show_default=True, type=click.IntRange(4, 1_000_000),
              help="Documents per mix.")
@click.option("--mix", "mixes", multiple=True, type=click.Choice(MIXES), default=MIXES, show_default=True,
              help="Document length mix (repeatable): tweet 20-60 tokens, article 200-400, lognormal 20-500.")
@click.option("--naive-docs", type=click.IntRange(1), default=None,
              help="Documents per mix the naive loop runs (default: all of --docs); its docs/s is a rate, so "
                   "a subset suffices where the batched path needs many documents to fill a GPU.")
@click.option("--pipeline-mix", type=click.Choice(MIXES), default="tweet", show_default=True,
              help="The mix the Beam pipeline runs on (in-process and 2 worker processes).")
@click.option("--pipeline-docs", default=256, show_default=True, type=click.IntRange(4, 1_000_000),
              help="Documents of the pipeline comparison (enough to amortize Beam's and the workers' start-up).")
@click.option("--skip-pipeline", is_flag=True, help="Only the naive loop and commer_core.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the model runs (auto: CUDA when present).")
@click.option("--dtype", type=click.Choice(["auto", *DTYPE_NAMES]), default="auto", show_default=True,
              help="Compute dtype of the naive loop and commer_core (auto: float32 on CPU, bfloat16 on CUDA).")
@click.option("--batch-tokens", multiple=True, type=click.IntRange(64),
              help="Padded-token budget of one forward pass; repeat to sweep (each mix reports its fastest). "
                   "Default: the compress job's (1024 on CPU, 16384 on CUDA).")
@click.option("--max-batch-size", type=click.IntRange(1), default=None,
              help="Most documents in one forward pass (default: the compress job's, 64 on CPU, 2048 on CUDA).")
@click.option("--compile/--no-compile", "compile_layers", default=False, show_default=True,
              help="Also time commer_core with torch.compile'd decoder layers (what compress --compile runs).")
@click.option("--generation/--no-generation", default=True, show_default=True,
              help="Also time batched generation at batch 1, 8, 32 (serving).")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="Checkpoint to bench (default: the bundled one, on smollm2-135m).")
@click.option("--base-model", default=None,
              help="Bench an untrained compressor (default settings) on this backbone instead of a checkpoint: "
                   "a hub id, a local folder, a built-in, or random:smollm2-135m / random:gemma-2b (a real "
                   "architecture with random weights: speed does not depend on the weights' values).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here.")
@click.option("--scaling/--no-scaling", default=False, show_default=True,
              help="Also run the job at 1k/10k/100k documents and with 1/100/10k documents per user, each in a "
                   "fresh process (time, peak RSS), on --scaling-model.")
@click.option("--scaling-model", type=click.Choice(["tiny-random", "default"]), default="tiny-random",
              show_default=True,
              help="tiny-random measures the pipeline's own cost and memory; default runs the bundled model "
                   "(hours at 100k documents on a CPU).")
@click.option("--write-docs/--no-write-docs", default=False, show_default=True,
              help="Rewrite this device's measured section of PERFORMANCE.md and its chart in the docs folder "
                   "(see --docs-dir).")
@click.option("--docs-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The docs folder --write-docs writes into (its PERFORMANCE.md and chart PNGs). Default: docs/ "
                   "in the current directory, so run from a checkout's root; where there is none, --write-docs "
                   "stops before measuring anything.")
@click.option("--render", "render_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Measure nothing: print the tables of a report an earlier run wrote with --json (one fetched "
                   "from a GPU machine, say), and with --write-docs put them into the docs folder.")
@click.option("--serving", is_flag=True,
              help="Measure store lookups instead (no model): stores built with the job's writer and index at "
                   "--serving-users (k=4, d=64) and --serving-real-users (k=16, d=576); open time, get p50/p99, "
                   "missing users, memory, bytes per user, requests per lookup on a local S3 server.")
@click.option("--serving-users", type=click.IntRange(1), multiple=True, default=(10_000, 100_000, 1_000_000),
              show_default=True, help="Store sizes (users) of --serving at small dims (repeatable).")
@click.option("--serving-real-users", type=click.IntRange(0), default=20_000, show_default=True,
              help="Users of the --serving store at the real dims, also used for the generate check (0: skip).")
@click.option("--serving-files", type=click.IntRange(1), default=1, show_default=True,
              help="Embedding files each --serving store is written as.")
@cli_errors
def bench(n_docs: int, mixes: tuple[str, ...], naive_docs: int | None, pipeline_mix: str, pipeline_docs: int,
          skip_pipeline: bool, device: str, dtype: str, batch_tokens: tuple[int, ...], max_batch_size: int | None,
          compile_layers: bool, generation: bool, checkpoint: str | None, base_model: str | None,
          json_path: Path | None, scaling: bool, scaling_model: str, write_docs: bool, docs_dir: Path | None,
          render_path: Path | None, serving: bool, serving_users: tuple[int, ...], serving_real_users: int,
          serving_files: int) -> None:
    """Measure docs/s, tokens/s, fraction of matmul peak, padding and peak RSS; print a table.

    With --serving, measure store lookups instead (docs/PERFORMANCE.md, "Serving"). With
    --write-docs the figures also go into PERFORMANCE.md (and a chart) in --docs-dir
    (default: ./docs, which must exist: run from a checkout's root, or name the folder).
    """
    out_dir = resolve_docs_dir(write_docs, docs_dir)  # before measuring: a refusal should not cost a run
    if render_path is not None:
        _render(render_path, out_dir)
        return
    if checkpoint and base_model:
        raise click.UsageError("pass --checkpoint or --base-model, not both")
    if serving:
        from jobs.bench.serving_run import run_serving

        report = run_serving(serving_users, serving_real_users, serving_files, say=_say)
        _emit(report, serving_tables(report), json_path, out_dir)
        return
    workdir = tempfile.TemporaryDirectory(prefix="commer-bench-")
    b = cb.setup(device, dtype, batch_tokens, max_batch_size, checkpoint, base_model, workdir.name, _say)
    report = cb.report_head(b, checkpoint or ("untrained on " + base_model if base_model else b.ckpt), n_docs)
    docs_by_mix = cb.documents(b, mixes, n_docs)
    naive = cb.naive_loop(b, docs_by_mix, naive_docs)
    if generation:  # before the LoRA is merged: generation switches it off
        _say("bench: generation at batch 1, 8, 32 ...")
        report["generation"] = measure.generation_speed(b.compressor)
    b.compressor.merge_lora()  # what the compress job's workers do
    variants = cb.time_core(b, docs_by_mix, compile_layers, report)
    cb.summarize(b, report, naive, variants)
    if not compile_layers:
        report["bf16"] = cb.bf16_check(b, docs_by_mix)
    if not skip_pipeline:
        cb.pipeline_rows(b, report, pipeline_mix, pipeline_docs)
    if scaling:
        report["scaling"] = measure.scaling_runs(b.ckpt if scaling_model == "default" else None, b.budgets[0], _say)
    report["peak_rss_mb"] = perf.peak_rss_mb()
    if b.dev.type == "cuda":
        import torch

        report["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(b.dev) / 2**20
    _emit(report, markdown_tables(report), json_path, out_dir)
    workdir.cleanup()


def _say(message: str) -> None:
    click.echo(message, err=True)


def _emit(report: dict[str, Any], table: str, json_path: Path | None, out_dir: Path | None) -> None:
    """Print the tables; write the JSON and the docs section where asked."""
    click.echo(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    if out_dir is not None:
        write_docs_section(report, table, out_dir)


def resolve_docs_dir(write_docs: bool, docs_dir: Path | None) -> Path | None:
    """Where --write-docs writes: --docs-dir, else ./docs where the current directory has one; None without it.

    Never the installed package's folder: a docs folder is the user's to name.
    """
    if not write_docs:
        if docs_dir is not None:
            raise click.UsageError("--docs-dir is where --write-docs writes; pass --write-docs too")
        return None
    if docs_dir is not None:
        return docs_dir
    default = Path("docs")
    if not default.is_dir():
        raise click.ClickException(f"--write-docs: no docs/ folder in {Path.cwd()}; pass --docs-dir DIR "
                                   "(the folder holding PERFORMANCE.md) or run from a checkout's root")
    return default


def _render(path: Path, docs_dir: Path | None) -> None:
    """Print (and write into ``docs_dir``) the tables of a saved report, exactly as the run that measured it would."""
    try:
        report = json.loads(path.read_text())
        table = serving_tables(report) if report.get("kind") == "serving" else markdown_tables(report)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(f"{path} is not a report written by `bench --json` ({type(exc).__name__}: {exc})",
                                 param_hint="--render") from exc
    click.echo(table)
    if docs_dir is not None:
        write_docs_section(report, table, docs_dir)


