"""`commer-pipeline bench`: compress throughput against a naive loop and the machine's peak.

All figures of one report come from one run on the same documents, so ratios hold
even when the machine's absolute speed drifts. On CUDA the same run measures the
bf16 path against the card's measured and published matmul peaks.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from jobs.bench import measure, perf
from jobs.bench.measure import PEAK_MATMUL_N
from jobs.bench.perf import MIXES
from jobs.bench.report import markdown_tables, write_docs as write_docs_section
from jobs.errors import cli_errors

DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16"}
BF16_DOCS = 512  # bf16 against fp32 on the first mix's first documents (fp32 is slow on a GPU)


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
@cli_errors
def bench(n_docs: int, mixes: tuple[str, ...], naive_docs: int | None, pipeline_mix: str, pipeline_docs: int,
          skip_pipeline: bool, device: str, dtype: str, batch_tokens: tuple[int, ...], max_batch_size: int | None,
          compile_layers: bool, generation: bool, checkpoint: str | None, base_model: str | None,
          json_path: Path | None, scaling: bool, scaling_model: str, write_docs: bool, docs_dir: Path | None,
          render_path: Path | None) -> None:
    """Measure docs/s, tokens/s, fraction of matmul peak, padding and peak RSS; print a table.

    With --write-docs the figures also go into PERFORMANCE.md and a chart in --docs-dir
    (default: ./docs, which must exist: run from a checkout's root, or name the folder).
    """
    out_dir = resolve_docs_dir(write_docs, docs_dir)  # before measuring: a refusal should not cost a run
    if render_path is not None:
        _render(render_path, out_dir)
        return
    import torch

    from commer_core.backbone import quiet_transformers, resolve_device
    from commer_core.checkpoint import load_checkpoint
    from commer_core.compressor import tokenize_documents
    from commer_core.defaults import default_batch_tokens, default_checkpoint_path, default_max_batch_size

    if checkpoint and base_model:
        raise click.UsageError("pass --checkpoint or --base-model, not both")
    quiet_transformers()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    run_dtype = torch.bfloat16 if dtype == "bfloat16" or (dtype == "auto" and dev.type == "cuda") else torch.float32
    budgets = sorted(set(batch_tokens)) or [default_batch_tokens(dev.type)]
    max_batch = max_batch_size or default_max_batch_size(dev.type)
    say = lambda msg: click.echo(msg, err=True)  # noqa: E731
    workdir = tempfile.TemporaryDirectory(prefix="commer-bench-")
    if base_model:
        compressor, ckpt = measure.untrained_compressor(base_model, dev, run_dtype, workdir.name)
    else:
        ckpt = str(checkpoint or default_checkpoint_path())
        compressor = load_checkpoint(ckpt, device=dev, dtype=run_dtype)
    name16 = DTYPE_NAMES[str(run_dtype).removeprefix("torch.")]
    peak_of = lambda: perf.matmul_peak_gflops(run_dtype, n=PEAK_MATMUL_N[dev.type], device=dev)  # noqa: E731
    probe_of = lambda: perf.MatmulProbe(run_dtype, PEAK_MATMUL_N[dev.type], dev) if dev.type == "cpu" else None  # noqa: E731
    peak = peak_of()
    say(f"bench: matmul peak {name16} {peak:.1f} GFLOP/s on {measure.machine_name(dev)}")
    report: dict[str, Any] = {"machine": measure.machine_name(dev), "software": measure.software_versions(),
                              "device": dev.type, "dtype": name16,
                              "threads": threads,
                              "checkpoint": checkpoint or ("untrained on " + base_model if base_model else ckpt),
                              "model": compressor.backbone.name, "matmul_n": PEAK_MATMUL_N[dev.type],
                              "docs_per_mix": n_docs, "batch_tokens": budgets[0] if len(budgets) == 1 else budgets,
                              "max_batch_size": max_batch, "matmul_peak_gflops": peak, "mixes": {},
                              "datasheet_peak_gflops": perf.datasheet_peak_gflops(dev, run_dtype)}
    docs_by_mix: dict[str, list[list[int]]] = {}
    for mix in mixes:  # real text at the mix's own lengths, whatever the checkpoint truncates at
        ids = perf.make_documents(mix, n_docs, len(compressor.tokenizer), seed=1)
        texts = [compressor.tokenizer.decode(x) for x in ids]
        docs_by_mix[mix] = [d.ids for d in tokenize_documents(compressor.tokenizer, texts, perf.MAX_MIX_TOKENS)]
    naive = {}
    for mix, docs in docs_by_mix.items():
        docs = docs[:naive_docs] if naive_docs else docs
        say(f"bench: {mix}: naive loop over {len(docs)} documents ...")
        naive[mix] = perf.time_naive(compressor, docs, probe=probe_of())
    if generation:  # before the LoRA is merged: generation switches it off
        say("bench: generation at batch 1, 8, 32 ...")
        report["generation"] = measure.generation_speed(compressor)
    compressor.merge_lora()  # what the compress job's workers do
    variants = {"core": {}, "core_compiled": {}} if compile_layers else {"core": {}}
    sweeps: dict[str, dict[int, Any]] = {mix: {} for mix in docs_by_mix}
    peaks = [peak]
    fastest_budget = lambda mix: min(sweeps[mix], key=lambda b: sweeps[mix][b].seconds)  # noqa: E731
    bf16_of = lambda: measure.bf16_vs_fp32(  # noqa: E731
        compressor, docs_by_mix[mixes[0]][:BF16_DOCS], fastest_budget(mixes[0]), max_batch, dev)
    for variant, timings in variants.items():
        if variant == "core_compiled":
            report["bf16"] = bf16_of()  # eager, before compiling: a dtype change would recompile every layer
            say("bench: compiling the decoder layers (torch.compile) ...")
            compressor.compile_layers()
            compressor.compress_tokenized(docs_by_mix[mixes[0]][:8], batch_tokens=budgets[0])
        for mix, docs in docs_by_mix.items():
            for budget in budgets if variant == "core" else [fastest_budget(mix)]:
                say(f"bench: {mix}: commer_core batched, {budget} tokens per pass"
                    f"{', compiled layers' if variant == 'core_compiled' else ''} ...")
                # on a CPU each timing carries the peak probed between its own batches (same machine
                # state); the standalone samples give the run's best peak, a stricter yardstick
                peaks.append(peak_of())
                timing = perf.best_of(lambda: perf.time_compressor(
                    compressor, docs, batch_tokens=budget, max_batch_size=max_batch, probe=probe_of()), 2)
                if variant == "core":
                    sweeps[mix][budget] = timing
            timings[mix] = sweeps[mix][fastest_budget(mix)] if variant == "core" else timing
    peak = max(peaks)
    report.update(matmul_peak_gflops=peak, matmul_peak_samples=peaks, compiled=compile_layers)
    say(f"bench: matmul peak {name16}, best of {len(peaks)} measurements: {peak:.1f} GFLOP/s")
    for mix in docs_by_mix:
        rows = {"naive": measure.timing_row(naive[mix], peak),
                **{v: measure.timing_row(t[mix], peak) for v, t in variants.items()}}
        rows["core"]["batch_tokens"] = fastest_budget(mix)
        report["mixes"][mix] = {**rows, "core_vs_naive": variants["core"][mix].docs_per_s / naive[mix].docs_per_s}
        if len(budgets) > 1:
            report["mixes"][mix]["sweep"] = {str(b): measure.timing_row(t, peak) for b, t in sweeps[mix].items()}
    first = report["mixes"][mixes[0]]
    report.update(naive_docs_per_s=first["naive"]["docs_per_s"], core_docs_per_s=first["core"]["docs_per_s"],
                  core_fraction_of_peak=min(m["core"]["fraction_of_peak"] for m in report["mixes"].values()),
                  core_fraction_of_best_peak=min(m["core"]["fraction_of_best_peak"] for m in report["mixes"].values()),
                  padding_fraction=report["mixes"].get("lognormal", first)["core"]["padding_fraction"])
    if report["datasheet_peak_gflops"]:
        report["core_mfu"] = min(m["core"]["gflops"] for m in report["mixes"].values()) / report["datasheet_peak_gflops"]
    if compile_layers:
        report["core_compiled_docs_per_s"] = first["core_compiled"]["docs_per_s"]
        report["core_compiled_fraction_of_peak"] = min(
            m["core_compiled"]["fraction_of_peak"] for m in report["mixes"].values())
        if report["datasheet_peak_gflops"]:
            report["core_compiled_mfu"] = min(
                m["core_compiled"]["gflops"] for m in report["mixes"].values()) / report["datasheet_peak_gflops"]
    else:
        report["bf16"] = bf16_of()
    if not skip_pipeline:
        ids = perf.make_documents(pipeline_mix, pipeline_docs, len(compressor.tokenizer), seed=2)
        texts = [compressor.tokenizer.decode(x) for x in ids]
        report["pipeline"] = measure.pipeline_vs_core(ckpt, pipeline_mix, texts, budgets[0], say, device=dev.type)
        report.update(pipeline_docs_per_s=report["pipeline"]["in_process"]["marginal_docs_per_s"],
                      pipeline_mp_docs_per_s=report["pipeline"]["multi_process"]["marginal_docs_per_s"])
    if scaling:
        report["scaling"] = measure.scaling_runs(ckpt if scaling_model == "default" else None, budgets[0], say)
    report["peak_rss_mb"] = perf.peak_rss_mb()
    if dev.type == "cuda":
        report["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    table = markdown_tables(report)
    click.echo(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    if out_dir is not None:
        write_docs_section(report, table, out_dir)
    workdir.cleanup()


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
        table = markdown_tables(report)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(f"{path} is not a report written by `bench --json` ({type(exc).__name__}: {exc})",
                                 param_hint="--render") from exc
    click.echo(table)
    if docs_dir is not None:
        write_docs_section(report, table, docs_dir)


