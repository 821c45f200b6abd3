"""`commer-pipeline bench`: compress throughput against a naive loop and the machine's peak.

All figures of one report come from one run on the same documents, so ratios hold
even when the machine's absolute speed drifts. On CUDA the same run measures the
bf16 path against the card's measured and published matmul peaks.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from commer_core.perf import MIXES
from jobs.errors import cli_errors

DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16"}
BF16_DOCS = 512  # bf16 against fp32 on the first mix's first documents (fp32 is slow on a GPU)
PEAK_MATMUL_N = {"cpu": 2048, "cuda": 8192}  # big enough to reach the device's peak, small enough to repeat


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
              help="Rewrite this device's measured section of docs/PERFORMANCE.md and its chart.")
@click.option("--render", "render_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Measure nothing: print the tables of a report an earlier run wrote with --json (one fetched "
                   "from a GPU machine, say), and with --write-docs put them into docs/.")
@cli_errors
def bench(n_docs: int, mixes: tuple[str, ...], naive_docs: int | None, pipeline_mix: str, pipeline_docs: int,
          skip_pipeline: bool, device: str, dtype: str, batch_tokens: tuple[int, ...], max_batch_size: int | None,
          compile_layers: bool, generation: bool, checkpoint: str | None, base_model: str | None,
          json_path: Path | None, scaling: bool, scaling_model: str, write_docs: bool,
          render_path: Path | None) -> None:
    """Measure docs/s, tokens/s, fraction of matmul peak, padding and peak RSS; print a table."""
    if render_path is not None:
        _render(render_path, write_docs)
        return
    import torch

    from commer_core import perf
    from commer_core.backbone import quiet_transformers, resolve_device
    from commer_core.checkpoint import load_checkpoint
    from commer_core.compressor import tokenize_documents
    from commer_core.defaults import default_batch_tokens, default_checkpoint_path, default_max_batch_size
    from jobs.bench_report import markdown_tables, write_docs as write_docs_section

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
        compressor, ckpt = _untrained(base_model, dev, run_dtype, workdir.name)
    else:
        ckpt = str(checkpoint or default_checkpoint_path())
        compressor = load_checkpoint(ckpt, device=dev, dtype=run_dtype)
    name16 = DTYPE_NAMES[str(run_dtype).removeprefix("torch.")]
    peak_of = lambda: perf.matmul_peak_gflops(run_dtype, n=PEAK_MATMUL_N[dev.type], device=dev)  # noqa: E731
    probe_of = lambda: perf.MatmulProbe(run_dtype, PEAK_MATMUL_N[dev.type], dev) if dev.type == "cpu" else None  # noqa: E731
    peak = peak_of()
    say(f"bench: matmul peak {name16} {peak:.1f} GFLOP/s on {_machine(dev)}")
    report: dict[str, Any] = {"machine": _machine(dev), "software": _software(), "device": dev.type, "dtype": name16,
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
        report["generation"] = _generation(compressor)
    compressor.merge_lora()  # what the compress job's workers do
    variants = {"core": {}, "core_compiled": {}} if compile_layers else {"core": {}}
    sweeps: dict[str, dict[int, Any]] = {mix: {} for mix in docs_by_mix}
    peaks = [peak]
    fastest_budget = lambda mix: min(sweeps[mix], key=lambda b: sweeps[mix][b].seconds)  # noqa: E731
    bf16_of = lambda: _bf16(compressor, docs_by_mix[mixes[0]][:BF16_DOCS], fastest_budget(mixes[0]),  # noqa: E731
                            max_batch, dev)
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
        rows = {"naive": _row(naive[mix], peak), **{v: _row(t[mix], peak) for v, t in variants.items()}}
        rows["core"]["batch_tokens"] = fastest_budget(mix)
        report["mixes"][mix] = {**rows, "core_vs_naive": variants["core"][mix].docs_per_s / naive[mix].docs_per_s}
        if len(budgets) > 1:
            report["mixes"][mix]["sweep"] = {str(b): _row(t, peak) for b, t in sweeps[mix].items()}
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
        report["pipeline"] = _pipeline(ckpt, pipeline_mix, texts, budgets[0], say, device=dev.type)
        report.update(pipeline_docs_per_s=report["pipeline"]["in_process"]["marginal_docs_per_s"],
                      pipeline_mp_docs_per_s=report["pipeline"]["multi_process"]["marginal_docs_per_s"])
    if scaling:
        report["scaling"] = _scaling(ckpt if scaling_model == "default" else None, budgets[0], say)
    report["peak_rss_mb"] = perf.peak_rss_mb()
    if dev.type == "cuda":
        report["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    table = markdown_tables(report)
    click.echo(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    if write_docs:
        write_docs_section(report, table)
    workdir.cleanup()


def _render(path: Path, write_docs: bool) -> None:
    """Print (and write into docs/) the tables of a saved report, exactly as the run that measured it would."""
    from jobs.bench_report import markdown_tables, write_docs as write_docs_section

    try:
        report = json.loads(path.read_text())
        table = markdown_tables(report)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(f"{path} is not a report written by `bench --json` ({type(exc).__name__}: {exc})",
                                 param_hint="--render") from exc
    click.echo(table)
    if write_docs:
        write_docs_section(report, table)


def _untrained(base_model: str, device: Any, dtype: Any, folder: str) -> tuple[Any, str]:
    """A fresh compressor (default settings), also saved as a checkpoint for the pipeline rows to load.

    A ``random:`` backbone is rebuilt from its fixed seed wherever it loads, so the
    pipeline's workers see the same weights.
    """
    from commer_core.backbone import load_backbone
    from commer_core.checkpoint import save_checkpoint
    from commer_core.compressor import Compressor
    from commer_core.config import CompressorConfig

    compressor = Compressor(load_backbone(base_model, device=device, dtype=dtype), CompressorConfig(base_model=base_model))
    path = Path(folder) / "untrained"
    save_checkpoint(compressor, path, trained=False)
    return compressor, str(path)


def _row(t: Any, best_peak: float) -> dict[str, float]:
    """One timing's figures; its fraction of peak is against the peak probed alongside it, when probed."""
    alongside = t.probe_gflops or best_peak
    return {"docs_per_s": t.docs_per_s, "tokens_per_s": t.tokens_per_s, "gflops": t.gflops,
            "peak_alongside_gflops": alongside, "fraction_of_peak": t.gflops / alongside,
            "fraction_of_best_peak": t.gflops / best_peak, "padding_fraction": t.padding_fraction,
            "seconds": t.seconds}


def _machine(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} host cores"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def _software() -> str:
    """The library versions behind the figures: a new torch or transformers moves them by several percent."""
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}"


def _bf16(compressor: Any, docs: list[list[int]], batch_tokens: int, max_batch_size: int, device: Any) -> dict[str, Any]:
    """bf16 against fp32 on the same documents: speed-up, fraction of the bf16 peak, embedding difference.

    Only where the device has native bf16 (CUDA, or a CPU with AVX512-BF16 / AMX); the
    compressor comes back in the dtype it had.
    """
    import torch

    from commer_core import perf

    n = PEAK_MATMUL_N[device.type] if device.type == "cuda" else 512  # emulated bf16 on a CPU is slow
    peak16 = perf.matmul_peak_gflops(torch.bfloat16, n=n, repeats=2 if device.type == "cpu" else 5, device=device)
    peak32 = perf.matmul_peak_gflops(torch.float32, n=PEAK_MATMUL_N[device.type], device=device)
    if not perf.bf16_supported():
        return {"supported": False, "matmul_peak_gflops": peak16,
                "note": "no AVX512-BF16/AMX on this CPU: bf16 is emulated "
                        f"({peak16:.1f} GFLOP/s vs {peak32:.1f} fp32), so the compressor stays in fp32"}
    run_dtype = compressor.backbone.dtype
    time_it = lambda: perf.best_of(lambda: perf.time_compressor(  # noqa: E731
        compressor, docs, batch_tokens=batch_tokens, max_batch_size=max_batch_size), 2)
    try:
        compressor.to(torch.float32)
        ref = compressor.compress_tokenized(docs, batch_tokens=batch_tokens, max_batch_size=max_batch_size)
        t32 = time_it()
        compressor.to(torch.bfloat16)
        t16 = time_it()
        diff = (compressor.compress_tokenized(docs, batch_tokens=batch_tokens, max_batch_size=max_batch_size) - ref)
    finally:
        compressor.to(run_dtype)
    return {"supported": True, "matmul_peak_gflops": peak16, "fp32_matmul_peak_gflops": peak32,
            "speedup_vs_fp32": t16.docs_per_s / t32.docs_per_s, "fraction_of_bf16_peak": t16.gflops / peak16,
            "fp32_fraction_of_fp32_peak": t32.gflops / peak32, "max_abs_diff": float(diff.abs().max()),
            "mean_abs_diff": float(diff.abs().mean()),
            "relative_diff": float(diff.norm() / ref.norm()), "docs": len(docs)}


def _pipeline(ckpt: str, mix: str, texts: list[str], batch_tokens: int, say: Any, rounds: int = 2,
              device: str = "cpu") -> dict[str, Any]:
    """The full Beam job on the same documents (10 per user), in-process and with 2 worker processes.

    Each variant (commer_core: load the checkpoint and compress the texts, tokenization
    included; the job in-process; the job with 2 workers) runs on the first quarter of
    the texts and on all of them, the variants taking turns, ``rounds`` times (the fastest
    run of each is kept). The difference gives its steady-state throughput
    (``marginal_docs_per_s``, what a nightly run over millions of documents sees) and its
    fixed start-up cost (process start, model loads), reported apart.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from commer_core.checkpoint import load_checkpoint
    from pipelines.compress import CompressParams, run_job

    sizes = (max(1, len(texts) // 4), len(texts))

    def core(subset: list[str]) -> None:
        reference = load_checkpoint(ckpt, device=device)
        reference.merge_lora()
        reference.compress_texts(subset, batch_tokens=batch_tokens)

    out: dict[str, Any] = {"docs": len(texts), "mix": mix, "sizes": list(sizes), "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {}
        for n in sizes:
            corpora[n] = Path(tmp) / f"corpus-{n}.parquet"
            rows = [{"user_id": f"u{i // 10:05d}", "doc_id": f"d{i}", "text": t} for i, t in enumerate(texts[:n])]
            pq.write_table(pa.Table.from_pylist(rows), corpora[n])

        def job(beam_args: list[str]) -> Any:
            return lambda subset: run_job(
                CompressParams(input=str(corpora[len(subset)]), output=tempfile.mkdtemp(dir=tmp),
                               checkpoint=ckpt, batch_tokens=batch_tokens, device=device, progress_every=0,
                               overwrite=True),
                beam_args, echo=lambda _m: None)

        variants = {"core_with_load": core, "in_process": job([]),
                    "multi_process": job(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])}
        best = {name: {n: math.inf for n in sizes} for name in variants}
        for round_ in range(1, rounds + 1):  # interleaved: a shared machine's drift hits every variant alike
            say(f"bench: pipeline comparison, round {round_} of {rounds}: commer_core, in-process, 2 workers "
                f"at {sizes[0]} and {sizes[1]} documents ...")
            for n in sizes:
                for name, fn in variants.items():
                    start = time.perf_counter()
                    fn(texts[:n])
                    best[name][n] = min(best[name][n], time.perf_counter() - start)
        for name in variants:
            seconds = [best[name][n] for n in sizes]
            marginal = (sizes[1] - sizes[0]) / max(seconds[1] - seconds[0], 1e-9)
            out[name] = {"docs_per_s": sizes[1] / seconds[1], "seconds": seconds[1], "marginal_docs_per_s": marginal,
                         "startup_seconds": max(seconds[1] - sizes[1] / marginal, 0.0)}
    for name in ("core_with_load", "in_process", "multi_process"):
        out[name]["vs_core"] = out[name]["marginal_docs_per_s"] / out["core_with_load"]["marginal_docs_per_s"]
    return out


def _scaling(checkpoint: str | None, batch_tokens: int, say: Any) -> dict[str, Any]:
    """Job time and peak RSS at growing sizes (see jobs.bench_scaling); tiny-random when no checkpoint."""
    from jobs.bench_scaling import run_sizes

    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:
            from commer_core.backbone import load_backbone
            from commer_core.checkpoint import save_checkpoint
            from commer_core.compressor import Compressor
            from commer_core.config import CompressorConfig

            checkpoint = str(Path(tmp) / "tiny-random")
            save_checkpoint(Compressor(load_backbone("tiny-random"), CompressorConfig(base_model="tiny-random")),
                            checkpoint, trained=False)
            model = "tiny-random (d=64, 2 layers)"
        else:
            model = "the bundled checkpoint"
        out = run_sizes(checkpoint, [1_000, 10_000, 100_000], [1, 100, 10_000], 10_000, batch_tokens, say)
    out["model"] = model
    return out


def _generation(compressor: Any, n_requests: int = 32, new_tokens: int = 16) -> dict[str, Any]:
    """Requests/s and tokens/s of batched generation, half the rows personalized."""
    from commer_core.generator import Generator

    gen = Generator(compressor)
    prompt = compressor.compress_texts(["I like hiking and tea."]).mean(0)
    prefixes = [prompt if i % 2 else None for i in range(n_requests)]
    inputs = [f"Write a short note number {i}:" for i in range(n_requests)]
    out: dict[str, Any] = {"requests": n_requests, "max_new_tokens": new_tokens}
    for batch in (1, 8, 32):
        start = time.perf_counter()
        tokens = 0
        for s in range(0, n_requests, batch):
            ids = gen.generate_ids(prefixes[s : s + batch], inputs[s : s + batch], max_new_tokens=new_tokens)
            tokens += sum(len(x) for x in ids)
        seconds = time.perf_counter() - start
        out[f"batch_{batch}"] = {"requests_per_s": n_requests / seconds, "tokens_per_s": tokens / seconds}
    return out
