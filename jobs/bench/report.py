"""What `commer-pipeline bench` prints and writes: markdown tables, targets, cost model, PERFORMANCE.md."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any


def markdown_tables(r: dict[str, Any]) -> str:
    """The report as markdown: per-mix compressor table, pipeline, bf16, generation, scaling, targets."""
    lines = [_machine_line(r), "", _mix_table(r)]
    if any("sweep" in m for m in r["mixes"].values()):
        lines += ["", sweep_table(r)]
    if "pipeline" in r:
        lines += ["", _pipeline_table(r)]
    lines += ["", _bf16_line(r["bf16"])]
    if "peak_gpu_memory_mb" in r:
        lines += ["", f"Peak GPU memory allocated: {r['peak_gpu_memory_mb']:,.0f} MiB."]
    if "generation" in r:
        lines += ["", _generation_table(r["generation"])]
    if "scaling" in r:
        lines += ["", _scaling_table(r["scaling"])]
    if "pipeline" in r:
        lines += ["", cost_model(r)]
    lines += ["", targets_table(r)]
    lines += ["", f"Peak RSS of the bench process: {r['peak_rss_mb']:.0f} MiB"]
    return "\n".join(lines)


def _machine_line(r: dict[str, Any]) -> str:
    samples = r.get("matmul_peak_samples", [r["matmul_peak_gflops"]])
    dtype, n = r.get("dtype", "fp32"), r.get("matmul_n", 2048)
    if r.get("device", "cpu") == "cuda":
        sheet = r.get("datasheet_peak_gflops")
        peak_text = (f"Matmul peak {dtype} ({n}^3, measured): {r['matmul_peak_gflops'] / 1e3:.0f} TFLOP/s at best over "
                     f"{len(samples)} probes in this run (range {min(samples) / 1e3:.0f}-{max(samples) / 1e3:.0f}); "
                     + (f"datasheet dense {dtype} peak {sheet / 1e3:.0f} TFLOP/s (MFU is against it). " if sheet else ""))
    else:
        peak_text = (f"Matmul peak {dtype} ({n}^3): probed between the timed batches of each row (\"peak alongside\", "
                     f"the same machine state as the row), and {r['matmul_peak_gflops']:.1f} GFLOP/s at best over "
                     f"{len(samples)} standalone probes in this run (range {min(samples):.0f}-{max(samples):.0f}). ")
    software = f" ({r['software']})" if r.get("software") else ""  # runs before 2026-11-27 did not record it
    return (f"Machine: {r['machine']}{software}; {r['threads']} threads; model {r.get('model', 'smollm2-135m')}, {dtype}. "
            + peak_text + f"{r['docs_per_mix']} documents per mix, token budget {r['batch_tokens']} per batch"
            + (" (core rows: the fastest; see the sweep)" if isinstance(r["batch_tokens"], list) else "") + ".")


def _mix_table(r: dict[str, Any]) -> str:
    lines = ["| mix | method | docs/s | tokens/s | GFLOP/s | peak alongside | fraction of peak | of best peak "
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
    return "\n".join(lines)


def _pipeline_table(r: dict[str, Any]) -> str:
    p = r["pipeline"]
    lines = [f"Pipeline vs commer_core on the same {p['docs']} documents, each run at {p['sizes'][0]} and "
             f"{p['sizes'][1]} documents, the three taking turns, fastest of {p.get('rounds', 1)} rounds: "
             "steady-state docs/s from the difference, start-up (process start, model loads) apart:", "",
             f"| run | steady docs/s | vs core | start-up s | wall docs/s at {p['docs']} |", "|---|---|---|---|---|"]
    for name, title in (("core_with_load", "commer_core (load + compress)"), ("in_process", "pipeline in-process"),
                        ("multi_process", "pipeline, 2 worker processes")):
        row = p[name]
        lines.append(f"| {title} | {row['marginal_docs_per_s']:.2f} | {row['vs_core']:.2f} | "
                     f"{row['startup_seconds']:.1f} | {row['docs_per_s']:.2f} |")
    return "\n".join(lines)


def _bf16_line(b: dict[str, Any]) -> str:
    return "bf16: " + (b["note"] if not b["supported"] else
                       f"speed-up {b['speedup_vs_fp32']:.2f}x over fp32 on {b.get('docs', '')} documents of "
                       f"the first mix, {b['fraction_of_bf16_peak']:.0%} of the measured bf16 peak (fp32: "
                       f"{b.get('fp32_fraction_of_fp32_peak', math.nan):.0%} of the fp32 peak); embedding "
                       f"difference from fp32: max abs {b['max_abs_diff']:.3g}, mean abs {b['mean_abs_diff']:.3g}, "
                       f"relative (Frobenius) {b.get('relative_diff', math.nan):.3g}")


def _generation_table(g: dict[str, Any]) -> str:
    lines = [f"Generation, {g['requests']} requests x up to {g['max_new_tokens']} new tokens:", "",
             "| batch | requests/s | tokens/s |", "|---|---|---|"]
    for batch in (1, 8, 32):
        row = g[f"batch_{batch}"]
        lines.append(f"| {batch} | {row['requests_per_s']:.2f} | {row['tokens_per_s']:.1f} |")
    return "\n".join(lines)


def _scaling_table(sc: dict[str, Any]) -> str:
    lines = [f"Scaling of the whole job (in-process DirectRunner, one fresh process per row, model "
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
    return "\n".join(lines)


def sweep_table(r: dict[str, Any]) -> str:
    """commer_core at each token budget of the run, per mix: docs/s and fraction of peak."""
    budgets = sorted({int(b) for m in r["mixes"].values() for b in m.get("sweep", {})})
    lines = ["Token budget per forward pass (commer_core, docs/s and fraction of peak):", "",
             "| mix | " + " | ".join(f"{b} tokens" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for mix, m in r["mixes"].items():
        cells = []
        for b in budgets:
            row = m.get("sweep", {}).get(str(b))
            best = " **best**" if row is not None and b == m["core"].get("batch_tokens") else ""
            cells.append("-" if row is None else f"{row['docs_per_s']:,.1f} ({row['fraction_of_peak']:.0%}){best}")
        lines.append(f"| {mix} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(r: dict[str, Any]) -> str:
    """The targets of docs/PERFORMANCE.md for this run's device against its figures."""
    if r.get("device", "cpu") == "cuda":
        return _gpu_targets_table(r)
    rows = [("commer_core >= 80% of the fp32 matmul peak probed alongside, every mix",
             r["core_fraction_of_peak"], 0.8, "{:.0%}", True)]
    if "core_fraction_of_best_peak" in r:
        rows.append(("commer_core >= 80% of the run's best standalone matmul probe, every mix",
                     r["core_fraction_of_best_peak"], 0.8, "{:.0%}", True))
    if "tweet" in r["mixes"]:
        rows.append((">= 2x the naive loop on tweets", r["mixes"]["tweet"]["core_vs_naive"], 2.0, "{:.2f}x", True))
    if "pipeline" in r:
        for name, title in (("in_process", "in-process"), ("multi_process", "2 worker processes")):
            rows.append((f"pipeline {title} >= 85% of commer_core's speed (steady state)",
                         r["pipeline"][name]["vs_core"], 0.85, "{:.2f}", True))
    if "lognormal" in r["mixes"]:
        rows.append(("padding <= 10% of computed tokens, lognormal", r["padding_fraction"], 0.10, "{:.1%}", False))
    growth = r.get("scaling", {}).get("rss_growth_10k_to_100k")
    if growth is not None:
        rows.append(("peak RSS growth <= 10% from 10k to 100k documents", growth, 0.10, "{:+.0%}", False))
    return _met_table(rows)


def _gpu_targets_table(r: dict[str, Any]) -> str:
    """GPU targets: bf16 MFU against the datasheet (and the measured peak), and the speed-up over the naive loop."""
    rows = []
    if r.get("core_mfu") is not None:
        rows.append(("commer_core >= 50% bf16 MFU (datasheet peak), every mix", r["core_mfu"], 0.5, "{:.0%}", True))
    rows.append(("commer_core >= 50% of the measured matmul peak, every mix", r["core_fraction_of_peak"], 0.5,
                 "{:.0%}", True))
    if r.get("core_compiled_mfu") is not None:
        rows.append(("commer_core with compiled layers >= 50% bf16 MFU (datasheet peak), every mix",
                     r["core_compiled_mfu"], 0.5, "{:.0%}", True))
    for mix, m in r["mixes"].items():
        rows.append((f">= 20x the naive loop, {mix}", m["core_vs_naive"], 20.0, "{:.1f}x", True))
    return _met_table(rows)


def _met_table(rows: list[tuple[str, float, float, str, bool]]) -> str:
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
        f"({r['pipeline'].get('mix', 'tweet')} mix, model {r['model']}, {r['dtype']}).",
        f"A full nightly run over {users:,} users x {docs_per_user} documents = {total:,} documents takes "
        f"{total / per_hour:,.0f} machine-hours on this kind of machine; an incremental run where "
        f"{churn:.0%} of documents are new takes {total * churn / per_hour:,.1f} machine-hours "
        "(documents per hour scale with the number of machines; multiply by your price per machine-hour).",
    ])


def write_docs(report: dict[str, Any], table: str, docs_dir: Path) -> None:
    """Rewrite the run's section of ``docs_dir/PERFORMANCE.md`` (and its chart beside it).

    A CPU run owns the ``bench`` section and performance.png; a GPU run owns a section
    per model and kind of run (``bench-cuda-<model>[-compiled][-pipeline]``, appended
    when new) and its own chart, so runs on different machines never overwrite each
    other's figures. A ``--serving`` run owns ``bench-serving`` (no chart).
    """
    section, chart = "bench", "performance.png"
    if report.get("kind") == "serving":
        section, chart = "bench-serving", None
    elif report.get("device", "cpu") == "cuda":
        slug = re.sub(r"[^a-z0-9]+", "-", report.get("model", "model").lower()).strip("-")
        slug += ("-compiled" if report.get("compiled") else "") + ("-pipeline" if report.get("pipeline") else "")
        section, chart = f"bench-cuda-{slug}", f"performance-cuda-{slug}.png"
    if chart is not None:
        _chart(report, docs_dir / chart)
    doc = docs_dir / "PERFORMANCE.md"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    body = f"{begin}\n\n{table}\n\n" + (f"![throughput]({chart})\n\n" if chart else "") + end
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    doc.write_text(text)
    print(f"bench: wrote {doc}" + (f" and {docs_dir / chart}" if chart else ""), file=sys.stderr)


def _chart(report: dict[str, Any], path: Path) -> None:
    """Docs/s (log scale: the naive loop and a GPU's batches lie orders apart) and fraction of peak per mix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = list(report["mixes"])
    gpu = report.get("device", "cpu") == "cuda"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = [n for n in ("naive", "core", "core_compiled") if n in report["mixes"][mixes[0]]]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(mixes))]
        label = {"core_compiled": "core (compiled layers)"}.get(name, name)
        ax1.bar(xs, [report["mixes"][m][name]["docs_per_s"] for m in mixes], width, label=label)
        ax2.bar(xs, [report["mixes"][m][name]["fraction_of_peak"] for m in mixes], width, label=label)
    peak_title = (f"fraction of measured {report.get('dtype', 'fp32')} matmul peak" if gpu
                  else "fraction of fp32 matmul peak (probed alongside)")
    for ax, title in ((ax1, "documents / s"), (ax2, peak_title)):
        ax.set_xticks(range(len(mixes)), mixes)
        ax.set_title(title)
        ax.legend()
    if gpu:
        ax1.set_yscale("log")
    ax2.axhline(0.5 if gpu else 0.8, color="grey", ls="--", lw=1)
    fig.suptitle(f"Compressor throughput, {report.get('model', 'smollm2-135m')}, {report['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
