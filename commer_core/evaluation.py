"""Evaluating ComMer and its baselines on identical examples: perplexity, ROUGE, cost, plots.

- Perplexity: exp(total target NLL / total target tokens) over a set (target +
  end-of-sequence, as in training); the mean of per-example perplexities is
  reported beside it.
- ROUGE-1 / ROUGE-L: ``rouge_score`` directly, default settings (no stemmer),
  F-measure, averaged over examples: LaMP's official metric.
- Cost: the prompt positions a method adds before the task input (k for ComMer
  with the mean merge, k + raw tokens for prompt tuning, raw tokens for raw
  documents, 0 for no personalization), averaged over examples.
- Every method of a run is scored on the same prepared examples per number of
  documents; each result row carries the examples' digest so this is checkable.
- Personalization gap (``swap``): for methods that read documents, the same examples
  with a deranged user's documents (and, ComMer, the mean of all users' prompts);
  the gap is other minus own in nats per token with a paired bootstrap interval
  (:mod:`commer_core.personalization`, :mod:`commer_core.swap`).
- Plots (matplotlib, Agg): cost vs perplexity (the paper's Figure 3) and
  perplexity vs number of documents with a power law ``ppl = a * n^b`` fitted by
  least squares in log-log space (Figure 4).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from commer_core.training.examples import PreparedExample, examples_digest
from commer_core.training.methods import Method
from commer_core.personalization import personalization_gap
from commer_core.training.scoring import autocast, batches, corpus_perplexity, perplexity, score_examples

#: Personalization columns of a summary row (None for methods that read no documents, or --no-swap).
GAP_FIELDS = ("other_perplexity", "mean_prompt_perplexity", "gap", "gap_low", "gap_high", "own_better")

SUMMARY_FIELDS = (
    "label", "method", "k", "budget", "n_docs", "n_examples", "perplexity", "mean_example_perplexity",
    "mean_nll_per_token", "rouge1", "rougeL", "n_generated", "prompt_tokens", "examples_digest", *GAP_FIELDS,
)


@dataclass(frozen=True)
class MethodSpec:
    """How a method appears in results: a label and its descriptive fields."""

    label: str
    method: str
    k: int | None = None
    budget: int | None = None


def rouge(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """ROUGE-1 and ROUGE-L F-measure per pair (rouge_score, default settings, no stemmer)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    out = []
    for pred, ref in zip(predictions, references):
        s = scorer.score(ref, pred)  # score(target, prediction)
        out.append({"rouge1": s["rouge1"].fmeasure, "rougeL": s["rougeL"].fmeasure})
    return out


def generate_examples(
    method: Method, examples: Sequence[PreparedExample], *, batch_size: int = 8, max_new_tokens: int = 32,
    bf16: bool = False,
) -> list[str]:
    """Greedy generations for each example's input under ``method``'s prefix (first non-empty line)."""
    import torch

    method.eval()
    out: list[str] = []
    with torch.inference_mode():
        for batch in batches(examples, batch_size):
            with autocast(method.generator.device, bf16):
                prefixes = method.prefixes(batch)
                out.extend(method.generator.generate(prefixes, [e.input for e in batch], max_new_tokens=max_new_tokens))
    return [first_line(g) for g in out]


def first_line(text: str) -> str:
    """The first non-empty line: the answer, whatever whitespace a method's output starts with."""
    return next((line.strip() for line in text.strip().splitlines() if line.strip()), "")


def evaluate_method(
    method: Method,
    spec: MethodSpec,
    examples_by_n: dict[int, list[PreparedExample]],
    *,
    batch_size: int = 8,
    generate: int = 0,
    generate_at: Sequence[int] | None = None,
    max_new_tokens: int = 32,
    bf16: bool = False,
    swap: bool = False,
    swap_seed: int = 0,
) -> list[dict[str, Any]]:
    """Per-example records for every number of documents.

    ``generate``: how many examples (the first ones) are generated and ROUGE-scored;
    ``generate_at``: for which numbers of documents (default: all). ``swap``: for a method
    that reads documents (n_docs >= 1), also score each example with a deranged user's
    documents (``nll_other``) and, for ComMer, the mean of all users' prompts (``nll_mean``);
    :func:`summarize` turns them into the personalization gap.
    """
    records: list[dict[str, Any]] = []
    for n_docs, examples in examples_by_n.items():
        digest = examples_digest(examples)
        scores = score_examples(method, examples, batch_size=batch_size, bf16=bf16)
        controls = _controls(method, examples, scores, swap and n_docs >= 1, swap_seed, batch_size, bf16)
        gens: list[str] = []
        if generate and (generate_at is None or n_docs in generate_at):
            gens = generate_examples(method, examples[:generate], batch_size=batch_size,
                                     max_new_tokens=max_new_tokens, bf16=bf16)
        rouges = rouge(gens, [e.target for e in examples[: len(gens)]])
        for i, (e, (nll, n_tok)) in enumerate(zip(examples, scores)):
            rec = {
                "label": spec.label, "method": spec.method, "k": spec.k, "budget": spec.budget, "n_docs": n_docs,
                "example_id": e.example_id, "examples_digest": digest, "nll": nll, "n_tokens": n_tok,
                "prompt_tokens": method.prompt_tokens(e), "docs_used": len(e.documents),
            }
            if i < len(gens):
                rec.update(generation=gens[i], **rouges[i])
            if controls is not None:
                rec["nll_other"] = controls.other[i][0]
                if controls.mean is not None:
                    rec["nll_mean"] = controls.mean[i][0]
            records.append(rec)
    return records


def _controls(method: Method, examples: Sequence[PreparedExample], own: list[tuple[float, int]], enabled: bool,
              seed: int, batch_size: int, bf16: bool) -> Any:
    """The swapped-documents (and mean-prompt) scores, or None where the gap is undefined."""
    from commer_core.swap import personalization_scores, reads_documents

    if not enabled or not reads_documents(method) or len({e.user_id for e in examples}) < 2:
        return None
    return personalization_scores(method, examples, seed=seed, batch_size=batch_size, bf16=bf16, own=own)


def gap_columns(recs: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """The personalization columns of one summary row from its records (all None without ``nll_other``)."""
    out: dict[str, Any] = dict.fromkeys(GAP_FIELDS)
    if not recs or any("nll_other" not in r for r in recs):
        return out
    own = [(r["nll"], r["n_tokens"]) for r in recs]
    other = [(r["nll_other"], r["n_tokens"]) for r in recs]
    gap = personalization_gap(own, other, seed=seed)
    out.update(other_perplexity=corpus_perplexity(other), gap=gap.gap,
               gap_low=gap.low, gap_high=gap.high, own_better=gap.own_better)
    if all("nll_mean" in r for r in recs):
        out["mean_prompt_perplexity"] = corpus_perplexity([(r["nll_mean"], r["n_tokens"]) for r in recs])
    return out


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (label, n_docs): perplexity, ROUGE, mean prompt tokens, examples digest."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["label"], r["n_docs"]), []).append(r)
    rows = []
    for (label, n_docs), recs in groups.items():
        tokens = sum(r["n_tokens"] for r in recs)
        nll = sum(r["nll"] for r in recs)
        gen = [r for r in recs if "rouge1" in r]
        digests = {r["examples_digest"] for r in recs}
        rows.append({
            "label": label, "method": recs[0]["method"], "k": recs[0]["k"], "budget": recs[0]["budget"],
            "n_docs": n_docs, "n_examples": len(recs),
            "perplexity": perplexity(nll, tokens),
            "mean_example_perplexity": float(np.mean([perplexity(r["nll"], r["n_tokens"]) for r in recs])),
            "mean_nll_per_token": nll / max(tokens, 1),
            "rouge1": float(np.mean([r["rouge1"] for r in gen])) if gen else None,
            "rougeL": float(np.mean([r["rougeL"] for r in gen])) if gen else None,
            "n_generated": len(gen),
            "prompt_tokens": float(np.mean([r["prompt_tokens"] for r in recs])),
            "examples_digest": digests.pop() if len(digests) == 1 else "MIXED",
            **gap_columns(recs),
        })
    return rows


def fit_power_law(ns: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    """Least squares ``log v = log a + b log n``: returns a, b and R^2 (in log space)."""
    x = np.log(np.asarray(ns, dtype=float))
    y = np.log(np.asarray(values, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a power-law fit needs at least two distinct n")
    b, log_a = np.polyfit(x, y, 1)
    pred = log_a + b * x
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"a": float(math.exp(log_a)), "b": float(b), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def power_law_fits(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """A fit per label over its n_docs >= 1 (labels with fewer than two such points are skipped)."""
    fits = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r["n_docs"], r["perplexity"]) for r in rows if r["label"] == label and r["n_docs"] >= 1)
        if len({n for n, _ in pts}) >= 2:
            fits[label] = fit_power_law([n for n, _ in pts], [p for _, p in pts])
    return fits


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_COLORS = {"commer": "tab:blue", "commer_untrained": "tab:cyan", "prompt_tuning": "tab:orange",
           "raw_docs": "tab:green", "none": "tab:gray"}


def plot_cost_quality(rows: Sequence[dict[str, Any]], path: str | Path, *, n_docs: int | None = None,
                      title: str = "Cost vs quality") -> Path:
    """Perplexity against prompt tokens, one series per method kind (the paper's Figure 3).

    ``n_docs`` picks the number of documents at test time (default: the largest).
    No personalization costs 0 tokens and is drawn as a horizontal line.
    """
    plt = _pyplot()
    n_docs = n_docs if n_docs is not None else max(r["n_docs"] for r in rows)
    sel = [r for r in rows if r["n_docs"] == n_docs]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in sel:
        kinds.setdefault(r["method"], []).append(r)
    for kind, rs in kinds.items():
        color = _COLORS.get(kind)
        if kind == "none" or all(r["prompt_tokens"] <= 0 for r in rs):
            for r in rs:
                ax.axhline(r["perplexity"], color=color or "gray", ls="--", lw=1, label=r["label"])
            continue
        rs = sorted(rs, key=lambda r: r["prompt_tokens"])
        ax.plot([r["prompt_tokens"] for r in rs], [r["perplexity"] for r in rs], "o-", color=color, label=kind)
        for r in rs:
            ax.annotate(r["label"], (r["prompt_tokens"], r["perplexity"]), fontsize=6, alpha=0.7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # an untrained compressor sits orders of magnitude above the rest
    ax.set_xlabel("prompt tokens added (mean per example, log2)")
    ax.set_ylabel("perplexity (log; lower is better)")
    ax.set_title(f"{title} ({n_docs} documents at test time)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save_figure(fig, path)


SCALING_METHODS = ("commer",)


def plot_docs_scaling(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "Perplexity vs documents",
                      methods: Sequence[str] = SCALING_METHODS) -> Path:
    """Perplexity against the number of documents at test time, with fitted power laws (Figure 4).

    Only trained ComMer rows are drawn by default (their cost does not grow with the
    documents, and an untrained compressor's scale would flatten them); ``results.json``
    holds the fits of every method.
    """
    plt = _pyplot()
    rows = [r for r in rows if r["method"] in methods] or list(rows)
    fits = power_law_fits(rows)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r["n_docs"], r["perplexity"]) for r in rows if r["label"] == label and r["n_docs"] >= 1)
        if len(pts) < 2:
            continue
        kind = next(r["method"] for r in rows if r["label"] == label)
        line = ax.plot([n for n, _ in pts], [p for _, p in pts], "o", color=_COLORS.get(kind))[0]
        if label in fits:
            f = fits[label]
            grid = np.linspace(pts[0][0], pts[-1][0], 50)
            ax.plot(grid, f["a"] * grid ** f["b"], "--", color=line.get_color(),
                    label=f"{label}: {f['a']:.3g}·n^{f['b']:.3f} (R²={f['r2']:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ns = sorted({r["n_docs"] for r in rows if r["n_docs"] >= 1})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("documents at test time")
    ax.set_ylabel("perplexity (log)")
    _plain_log_ticks(ax)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save_figure(fig, path)


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


def gap_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows that carry a personalization gap, largest gap first."""
    return sorted((r for r in rows if r.get("gap") is not None), key=lambda r: (-r["gap"], r["label"], r["n_docs"]))


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


def plot_personalization_gap(rows: Sequence[dict[str, Any]], path: str | Path, *,
                             title: str = "Personalization gap") -> Path:
    """Gap (other-user minus own, nats per token) with its 95% interval, per method and number of documents."""
    plt = _pyplot()
    sel = sorted(gap_rows(rows), key=lambda r: (r["label"], r["n_docs"]))
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.35 * max(len(sel), 1)))
    ys = range(len(sel))
    for y, r in zip(ys, sel):
        ax.errorbar(r["gap"], y, xerr=[[r["gap"] - r["gap_low"]], [r["gap_high"] - r["gap"]]], fmt="o",
                    color=_COLORS.get(r["method"], "black"), capsize=3)
    ax.axvline(0.0, color="gray", lw=1, ls="--")
    ax.set_yticks(list(ys), [f"{r['label']} @{r['n_docs']} docs" for r in sel], fontsize=7)
    ax.set_xlabel("other-user minus own (nats per token; > 0: own documents help)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return _save_figure(fig, path)


def _plain_log_ticks(ax: Any) -> None:
    """Log-axis tick labels as plain numbers (a narrow range otherwise reads 9.81x10^0)."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:.4g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)


def _save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write a PNG and free the figure (matplotlib keeps figures alive otherwise)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
