"""`commer-pipeline bench`: compress throughput against a naive loop and the machine's peak.

All figures of one report come from one run on the same documents, so ratios hold
even when the machine's absolute speed drifts.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from commer_core.perf import MIXES

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"


@click.command("bench")
@click.option("--docs", "n_docs", default=64, show_default=True, type=click.IntRange(4, 1_000_000),
              help="Documents per mix.")
@click.option("--mix", "mixes", multiple=True, type=click.Choice(MIXES), default=MIXES, show_default=True,
              help="Document length mix (repeatable): tweet 20-60 tokens, article 200-400, lognormal 20-500.")
@click.option("--pipeline-mix", type=click.Choice(MIXES), default="tweet", show_default=True,
              help="The mix the Beam pipeline runs on (in-process and 2 worker processes).")
@click.option("--pipeline-docs", default=256, show_default=True, type=click.IntRange(4, 1_000_000),
              help="Documents of the pipeline comparison (enough to amortize Beam's and the workers' start-up).")
@click.option("--skip-pipeline", is_flag=True, help="Only the naive loop and commer_core.")
@click.option("--batch-tokens", default=1024, show_default=True, type=click.IntRange(64),
              help="Padded-token budget of one forward pass (the compress job's CPU default).")
@click.option("--compile/--no-compile", "compile_layers", default=False, show_default=True,
              help="Also time commer_core with torch.compile'd decoder layers (what compress --compile runs).")
@click.option("--generation/--no-generation", default=True, show_default=True,
              help="Also time batched generation at batch 1, 8, 32 (serving).")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="Checkpoint to bench (default: the bundled one, on smollm2-135m).")
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
              help="Rewrite docs/PERFORMANCE.md's measured section and docs/performance.png.")
def bench(n_docs: int, mixes: tuple[str, ...], pipeline_mix: str, pipeline_docs: int, skip_pipeline: bool,
          batch_tokens: int, compile_layers: bool, generation: bool, checkpoint: str | None, json_path: Path | None, scaling: bool,
          scaling_model: str, write_docs: bool) -> None:
    """Measure docs/s, tokens/s, fraction of matmul peak, padding and peak RSS; print a table."""
    import torch

    from commer_core import perf
    from commer_core.checkpoint import load_checkpoint
    from commer_core.compressor import tokenize_documents
    from commer_core.defaults import default_checkpoint_path
    from pipelines.model_handler import quiet_transformers

    quiet_transformers()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    ckpt = checkpoint or str(default_checkpoint_path())
    compressor = load_checkpoint(ckpt)
    say = lambda msg: click.echo(msg, err=True)  # noqa: E731
    peak = perf.matmul_peak_gflops(torch.float32)
    say(f"bench: matmul peak fp32 {peak:.1f} GFLOP/s ({threads} threads)")
    report: dict[str, Any] = {"machine": _machine(), "threads": threads, "checkpoint": ckpt,
                              "docs_per_mix": n_docs, "batch_tokens": batch_tokens,
                              "matmul_peak_gflops": peak, "mixes": {}}
    docs_by_mix: dict[str, list[list[int]]] = {}
    for mix in mixes:  # real text at the mix's own lengths, whatever the checkpoint truncates at
        ids = perf.make_documents(mix, n_docs, len(compressor.tokenizer), seed=1)
        texts = [compressor.tokenizer.decode(x) for x in ids]
        docs_by_mix[mix] = [d.ids for d in tokenize_documents(compressor.tokenizer, texts, perf.MAX_MIX_TOKENS)]
    naive = {}
    for mix, docs in docs_by_mix.items():
        say(f"bench: {mix}: naive loop over {len(docs)} documents ...")
        naive[mix] = perf.time_naive(compressor, docs, probe=perf.MatmulProbe())
    if generation:  # before the LoRA is merged: generation switches it off
        say("bench: generation at batch 1, 8, 32 ...")
        report["generation"] = _generation(compressor)
    compressor.merge_lora()  # what the compress job's workers do
    variants = {"core": {}, "core_compiled": {}} if compile_layers else {"core": {}}
    peaks = [peak]
    for variant, timings in variants.items():
        if variant == "core_compiled":
            say("bench: compiling the decoder layers (torch.compile) ...")
            compressor.compile_layers()
            compressor.compress_tokenized(docs_by_mix[mixes[0]][:8], batch_tokens=batch_tokens)
        for mix, docs in docs_by_mix.items():
            say(f"bench: {mix}: commer_core batched{', compiled layers' if variant == 'core_compiled' else ''} ...")
            # each timing carries the peak probed between its own batches (same machine state);
            # the standalone samples give the run's best peak, a stricter yardstick
            peaks.append(perf.matmul_peak_gflops(torch.float32))
            timings[mix] = perf.best_of(lambda: perf.time_compressor(
                compressor, docs, batch_tokens=batch_tokens, probe=perf.MatmulProbe()), 2)
    peak = max(peaks)
    report.update(matmul_peak_gflops=peak, matmul_peak_samples=peaks, compiled=compile_layers)
    say(f"bench: matmul peak fp32, best of {len(peaks)} measurements: {peak:.1f} GFLOP/s")
    for mix in docs_by_mix:
        rows = {"naive": _row(naive[mix], peak), **{v: _row(t[mix], peak) for v, t in variants.items()}}
        report["mixes"][mix] = {**rows, "core_vs_naive": variants["core"][mix].docs_per_s / naive[mix].docs_per_s}
    first = report["mixes"][mixes[0]]
    report.update(naive_docs_per_s=first["naive"]["docs_per_s"], core_docs_per_s=first["core"]["docs_per_s"],
                  core_fraction_of_peak=min(m["core"]["fraction_of_peak"] for m in report["mixes"].values()),
                  core_fraction_of_best_peak=min(m["core"]["fraction_of_best_peak"] for m in report["mixes"].values()),
                  padding_fraction=report["mixes"].get("lognormal", first)["core"]["padding_fraction"])
    if compile_layers:
        report["core_compiled_docs_per_s"] = first["core_compiled"]["docs_per_s"]
        report["core_compiled_fraction_of_peak"] = min(
            m["core_compiled"]["fraction_of_peak"] for m in report["mixes"].values())
    report["bf16"] = _bf16(compressor, docs_by_mix[mixes[0]], batch_tokens, peak)
    if not skip_pipeline:
        ids = perf.make_documents(pipeline_mix, pipeline_docs, len(compressor.tokenizer), seed=2)
        texts = [compressor.tokenizer.decode(x) for x in ids]
        report["pipeline"] = _pipeline(ckpt, texts, batch_tokens, say)
        report.update(pipeline_docs_per_s=report["pipeline"]["in_process"]["marginal_docs_per_s"],
                      pipeline_mp_docs_per_s=report["pipeline"]["multi_process"]["marginal_docs_per_s"])
    if scaling:
        report["scaling"] = _scaling(ckpt if scaling_model == "default" else None, batch_tokens, say)
    report["peak_rss_mb"] = perf.peak_rss_mb()
    table = markdown_tables(report)
    click.echo(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    if write_docs:
        _write_docs(report, table)


def _row(t: Any, best_peak: float) -> dict[str, float]:
    """One timing's figures; its fraction of peak is against the peak probed alongside it, when probed."""
    alongside = t.probe_gflops or best_peak
    return {"docs_per_s": t.docs_per_s, "tokens_per_s": t.tokens_per_s, "gflops": t.gflops,
            "peak_alongside_gflops": alongside, "fraction_of_peak": t.gflops / alongside,
            "fraction_of_best_peak": t.gflops / best_peak, "padding_fraction": t.padding_fraction,
            "seconds": t.seconds}


def _machine() -> str:
    import platform

    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def _bf16(compressor: Any, docs: list[list[int]], batch_tokens: int, peak32: float) -> dict[str, Any]:
    """bf16 speed and embedding difference, where the processor has native bf16."""
    import torch

    from commer_core import perf

    peak16 = perf.matmul_peak_gflops(torch.bfloat16, n=512, repeats=2)
    if not perf.bf16_supported():
        return {"supported": False, "matmul_peak_gflops": peak16,
                "note": "no AVX512-BF16/AMX on this CPU: bf16 is emulated "
                        f"({peak16:.1f} GFLOP/s vs {peak32:.1f} fp32), so the compressor stays in fp32"}
    ref = compressor.compress_tokenized(docs, batch_tokens=batch_tokens)
    t32 = perf.time_compressor(compressor, docs, batch_tokens=batch_tokens)
    compressor.to(torch.bfloat16)
    try:
        t16 = perf.time_compressor(compressor, docs, batch_tokens=batch_tokens)
        diff = (compressor.compress_tokenized(docs, batch_tokens=batch_tokens) - ref).abs()
    finally:
        compressor.to(torch.float32)
    return {"supported": True, "matmul_peak_gflops": peak16, "speedup_vs_fp32": t16.docs_per_s / t32.docs_per_s,
            "fraction_of_bf16_peak": t16.gflops / peak16, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean())}


def _pipeline(ckpt: str, texts: list[str], batch_tokens: int, say: Any, rounds: int = 2) -> dict[str, Any]:
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
        reference = load_checkpoint(ckpt)
        reference.merge_lora()
        reference.compress_texts(subset, batch_tokens=batch_tokens)

    out: dict[str, Any] = {"docs": len(texts), "sizes": list(sizes), "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {}
        for n in sizes:
            corpora[n] = Path(tmp) / f"corpus-{n}.parquet"
            rows = [{"user_id": f"u{i // 10:05d}", "doc_id": f"d{i}", "text": t} for i, t in enumerate(texts[:n])]
            pq.write_table(pa.Table.from_pylist(rows), corpora[n])

        def job(beam_args: list[str]) -> Any:
            return lambda subset: run_job(
                CompressParams(input=str(corpora[len(subset)]), output=tempfile.mkdtemp(dir=tmp),
                               checkpoint=ckpt, batch_tokens=batch_tokens, device="cpu", progress_every=0,
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


def markdown_tables(r: dict[str, Any]) -> str:
    """The report as markdown: per-mix compressor table, pipeline, bf16, generation."""
    samples = r.get("matmul_peak_samples", [r["matmul_peak_gflops"]])
    lines = [f"Machine: {r['machine']}; {r['threads']} threads. Matmul peak fp32 (2048^3): probed between "
             "the timed batches of each row (\"peak alongside\", the same machine state as the row), and "
             f"{r['matmul_peak_gflops']:.1f} GFLOP/s at best over {len(samples)} standalone probes in this run "
             f"(range {min(samples):.0f}-{max(samples):.0f}). {r['docs_per_mix']} documents per mix, "
             f"token budget {r['batch_tokens']} per batch.", "",
             "| mix | method | docs/s | tokens/s | GFLOP/s | peak alongside | fraction of peak | of best peak "
             "| padding | vs naive |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mix, m in r["mixes"].items():
        for name in ("naive", "core", "core_compiled"):
            row = m.get(name)
            if row is None:
                continue
            ratio = row["docs_per_s"] / m["naive"]["docs_per_s"]
            title = {"core_compiled": "core (compiled layers)"}.get(name, name)
            lines.append(f"| {mix} | {title} | {row['docs_per_s']:.2f} | {row['tokens_per_s']:.0f} | "
                         f"{row['gflops']:.1f} | {row.get('peak_alongside_gflops', r['matmul_peak_gflops']):.1f} | "
                         f"{row['fraction_of_peak']:.0%} | {row.get('fraction_of_best_peak', row['fraction_of_peak']):.0%} | "
                         f"{row['padding_fraction']:.1%} | "
                         f"{ratio:.2f}x |")
    if "pipeline" in r:
        p = r["pipeline"]
        lines += ["", f"Pipeline vs commer_core on the same {p['docs']} documents, each run at {p['sizes'][0]} and "
                      f"{p['sizes'][1]} documents, the three taking turns, fastest of {p.get('rounds', 1)} rounds: "
                      "steady-state docs/s from the difference, start-up (process start, model loads) apart:", "",
                  f"| run | steady docs/s | vs core | start-up s | wall docs/s at {p['docs']} |", "|---|---|---|---|---|"]
        for name, title in (("core_with_load", "commer_core (load + compress)"), ("in_process", "pipeline in-process"),
                            ("multi_process", "pipeline, 2 worker processes")):
            row = p[name]
            lines.append(f"| {title} | {row['marginal_docs_per_s']:.2f} | {row['vs_core']:.2f} | "
                         f"{row['startup_seconds']:.1f} | {row['docs_per_s']:.2f} |")
    b = r["bf16"]
    lines += ["", "bf16: " + (b["note"] if not b["supported"] else
                              f"speed-up {b['speedup_vs_fp32']:.2f}x over fp32, {b['fraction_of_bf16_peak']:.0%} "
                              f"of the bf16 peak, max abs embedding difference {b['max_abs_diff']:.3g}")]
    if "generation" in r:
        g = r["generation"]
        lines += ["", f"Generation, {g['requests']} requests x up to {g['max_new_tokens']} new tokens:", "",
                  "| batch | requests/s | tokens/s |", "|---|---|---|"]
        for batch in (1, 8, 32):
            row = g[f"batch_{batch}"]
            lines.append(f"| {batch} | {row['requests_per_s']:.2f} | {row['tokens_per_s']:.1f} |")
    if "scaling" in r:
        sc = r["scaling"]
        lines += ["", f"Scaling of the whole job (in-process DirectRunner, one fresh process per row, model "
                      f"{sc['model']}; it isolates the pipeline's own cost and memory; user buckets as the job "
                      "chooses them, one per 10,000 rows):", "",
                  "| documents | docs per user | users | user buckets | seconds | docs/s | model seconds | peak RSS MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for run in sc["runs"]:
            lines.append(f"| {run['docs']} | {run['docs_per_user']} | {run['users']} | {run.get('user_buckets', 1)} | "
                         f"{run['seconds']:.1f} | "
                         f"{run['docs_per_s']:.0f} | {run['model_seconds']:.1f} | {run['peak_rss_mb']:.0f} |")
        if "rss_growth_10k_to_100k" in sc:
            lines.append(f"\nPeak RSS growth from 10k to 100k documents: {sc['rss_growth_10k_to_100k']:+.1%}.")
    if "pipeline" in r:
        lines += ["", cost_model(r)]
    lines += ["", targets_table(r)]
    lines += ["", f"Peak RSS of the bench process: {r['peak_rss_mb']:.0f} MiB"]
    return "\n".join(lines)


def targets_table(r: dict[str, Any]) -> str:
    """The CPU targets of docs/PERFORMANCE.md against this run's figures."""
    rows = [("commer_core >= 80% of the fp32 matmul peak probed alongside, every mix",
             r["core_fraction_of_peak"], 0.8, "{:.0%}", True)]
    if "core_fraction_of_best_peak" in r:
        rows.append(("commer_core >= 80% of the run's best standalone matmul probe, every mix",
                     r["core_fraction_of_best_peak"], 0.8, "{:.0%}", True))
    if "tweet" in r["mixes"]:
        rows.append((">= 2x the naive loop on tweets", r["mixes"]["tweet"]["core_vs_naive"], 2.0, "{:.2f}x", True))
    if "pipeline" in r:
        for name, title in (("in_process", "in-process"), ("multi_process", "2 worker processes")):
            rows.append((f"pipeline {title} within 15% of commer_core (steady state)",
                         r["pipeline"][name]["vs_core"], 0.85, "{:.2f}", True))
    if "lognormal" in r["mixes"]:
        rows.append(("padding <= 10% of computed tokens, lognormal", r["padding_fraction"], 0.10, "{:.1%}", False))
    growth = r.get("scaling", {}).get("rss_growth_10k_to_100k")
    if growth is not None:
        rows.append(("peak RSS growth <= 10% from 10k to 100k documents", growth, 0.10, "{:+.0%}", False))
    lines = ["| target | measured | met |", "|---|---|---|"]
    for title, value, bound, fmt, at_least in rows:
        met = value >= bound if at_least else value <= bound
        lines.append(f"| {title} | {fmt.format(value)} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)


def cost_model(r: dict[str, Any], users: int = 1_000_000, docs_per_user: int = 100, churn: float = 0.01) -> str:
    """Documents per machine-hour and the nightly bill, from this run's measured pipeline throughput."""
    rate = max(r["pipeline"]["in_process"]["marginal_docs_per_s"], r["pipeline"]["multi_process"]["marginal_docs_per_s"])
    per_hour = rate * 3600
    total = users * docs_per_user
    return "\n".join([
        f"Cost model (from the pipeline rows above, {r['machine']}): {per_hour:,.0f} documents per machine-hour "
        f"(mix of the pipeline run, default model, fp32).",
        f"A full nightly run over {users:,} users x {docs_per_user} documents = {total:,} documents takes "
        f"{total / per_hour:,.0f} machine-hours on this kind of machine; an incremental run where "
        f"{churn:.0%} of documents are new takes {total * churn / per_hour:,.1f} machine-hours "
        "(documents per hour scale with the number of machines; multiply by your price per machine-hour).",
    ])


def _write_docs(report: dict[str, Any], table: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = list(report["mixes"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = [n for n in ("naive", "core", "core_compiled") if n in report["mixes"][mixes[0]]]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(mixes))]
        label = {"core_compiled": "core (compiled layers)"}.get(name, name)
        ax1.bar(xs, [report["mixes"][m][name]["docs_per_s"] for m in mixes], width, label=label)
        ax2.bar(xs, [report["mixes"][m][name]["fraction_of_peak"] for m in mixes], width, label=label)
    for ax, title in ((ax1, "documents / s"), (ax2, "fraction of fp32 matmul peak (probed alongside)")):
        ax.set_xticks(range(len(mixes)), mixes)
        ax.set_title(title)
        ax.legend()
    ax2.axhline(0.8, color="grey", ls="--", lw=1)
    fig.suptitle(f"Compressor throughput, {report['machine']}")
    fig.tight_layout()
    fig.savefig(DOCS_DIR / "performance.png", dpi=110)
    doc = DOCS_DIR / "PERFORMANCE.md"
    text = doc.read_text() if doc.exists() else "# Performance\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    body = f"{begin}\n\n{table}\n\n![throughput](performance.png)\n\n{end}"
    doc.write_text(head + body + tail)
    print(f"bench: wrote {doc} and {DOCS_DIR / 'performance.png'}", file=sys.stderr)
