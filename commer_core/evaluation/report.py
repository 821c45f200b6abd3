"""Evaluation results as files and terminal tables: results.json / results.csv, the plots, formatted tables."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from commer_core.evaluation.metrics import SUMMARY_FIELDS, gap_rows, power_law_fits
from commer_core.evaluation.plots import plot_cost_quality, plot_docs_scaling, plot_personalization_gap


def write_results(
    output_dir: str | Path, rows: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], *,
    meta: dict[str, Any] | None = None, plots: bool = True,
) -> dict[str, Path]:
    """``results.json`` (summary, fits, records, run metadata), ``results.csv`` and the PNG plots (gap included)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fits = power_law_fits(rows)
    paths = {"json": out / "results.json", "csv": out / "results.csv"}
    paths["json"].write_text(json.dumps({"meta": meta or {}, "summary": list(rows), "power_law": fits,
                                         "records": list(records)}, indent=1, sort_keys=True) + "\n")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in sorted(rows, key=lambda r: (r["label"], r["n_docs"])):
            writer.writerow(r)
    if plots and rows:
        paths["cost_quality"] = plot_cost_quality(rows, out / "cost_vs_quality.png")
        if fits:
            paths["docs_scaling"] = plot_docs_scaling(rows, out / "perplexity_vs_docs.png")
        if gap_rows(rows):
            paths["personalization_gap"] = plot_personalization_gap(rows, out / "personalization_gap.png")
    return paths


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of the summary rows (used by the CLI and docs/RESULTS.md)."""
    head = "| method | k | budget | docs | examples | perplexity | ROUGE-1 | ROUGE-L | prompt tokens |"
    lines = [head, "|" + "---|" * 9]

    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for r in sorted(rows, key=lambda r: (r["method"], r["label"], r["n_docs"])):
        lines.append(
            f"| {r['label']} | {fmt(r['k'], 'd')} | {fmt(r['budget'], 'd')} | {r['n_docs']} | {r['n_examples']} | "
            f"{r['perplexity']:.3f} | {fmt(r['rouge1'], '.3f')} | {fmt(r['rougeL'], '.3f')} | {r['prompt_tokens']:.1f} |"
        )
    return "\n".join(lines)


def format_pivot(rows: Sequence[dict[str, Any]]) -> str:
    """One line per method: prompt tokens, perplexity per number of documents, ROUGE where generated."""
    ns = sorted({r["n_docs"] for r in rows})
    by_label: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault(r["label"], {})[r["n_docs"]] = r
    head = ["method", "prompt tokens", *(f"ppl @{n} docs" for n in ns), "ROUGE-1", "ROUGE-L"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cells in sorted(by_label.items(), key=lambda kv: min(r["perplexity"] for r in kv[1].values())):
        generated = [r for r in cells.values() if r.get("rouge1") is not None]
        rouge = generated[-1] if generated else None
        ppl = [f"{cells[n]['perplexity']:.2f}" if n in cells else "-" for n in ns]
        tokens = max(r["prompt_tokens"] for r in cells.values())
        lines.append(f"| {label} | {tokens:.0f} | " + " | ".join(ppl) + " | "
                     + (f"{rouge['rouge1']:.3f} | {rouge['rougeL']:.3f} |" if rouge else "- | - |"))
    return "\n".join(lines)


def format_personalization(rows: Sequence[dict[str, Any]]) -> str:
    """The personalization table: own vs another user's documents (vs the mean prompt), gap in nats per token."""
    head = ("| method | docs | examples | own ppl | other-user ppl | mean-prompt ppl | gap (nats/token) "
            "| 95% interval | own better |")
    lines = [head, "|" + "---|" * 9]
    for r in gap_rows(rows):
        mean = "-" if r["mean_prompt_perplexity"] is None else f"{r['mean_prompt_perplexity']:.3f}"
        lines.append(
            f"| {r['label']} | {r['n_docs']} | {r['n_examples']} | {r['perplexity']:.3f} | {r['other_perplexity']:.3f} "
            f"| {mean} | {r['gap']:+.3f} | [{r['gap_low']:+.3f}, {r['gap_high']:+.3f}] | {r['own_better']:.0%} |"
        )
    return "\n".join(lines)
