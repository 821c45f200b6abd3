"""Scoring methods on identical examples: perplexity, ROUGE, the personalization gap, summaries, power-law fits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from commer_core.personalization import Gap, personalization_gap
from commer_core.training.examples import PreparedExample, examples_digest
from commer_core.training.methods import Method
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
    """ROUGE-1 and ROUGE-L F-measure per pair (rouge_score, default settings, no stemmer).

    With no pairs (``evaluate --generate 0``) ``rouge_score`` is not imported: it loads nltk.
    """
    if not predictions:
        return []
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
    swap_pool: dict[int, list[PreparedExample]] | None = None,
) -> list[dict[str, Any]]:
    """Per-example records for every number of documents.

    ``generate``: how many examples (the first ones) are generated and ROUGE-scored;
    ``generate_at``: for which numbers of documents (default: all). ``swap``: for a method
    that reads documents (n_docs >= 1), also score each example with a deranged user's
    documents (``nll_other``) and, for ComMer, the mean of all users' prompts (``nll_mean``);
    :func:`summarize` turns them into the personalization gap. ``swap_pool``: per number of
    documents, examples of other users that donate the swapped documents (a split with a
    single user, e.g. PerLTQA's unseen character, swaps with the training split's).
    """
    records: list[dict[str, Any]] = []
    for n_docs, examples in examples_by_n.items():
        digest = examples_digest(examples)
        scores = score_examples(method, examples, batch_size=batch_size, bf16=bf16)
        pool = None if swap_pool is None else swap_pool[n_docs]
        controls = _controls(method, examples, scores, swap and n_docs >= 1, swap_seed, batch_size, bf16, pool)
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
              seed: int, batch_size: int, bf16: bool, pool: Sequence[PreparedExample] | None = None) -> Any:
    """The swapped-documents (and mean-prompt) scores, or None where the gap is undefined."""
    from commer_core.swap import personalization_scores, reads_documents

    users = {e.user_id for e in examples} | {e.user_id for e in pool or ()}
    if not enabled or not reads_documents(method) or len(users) < 2:
        return None
    return personalization_scores(method, examples, seed=seed, batch_size=batch_size, bf16=bf16, own=own, pool=pool)


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


def paired_difference(records: Sequence[dict[str, Any]], first: str, second: str, *,
                      seed: int = 0) -> dict[int, Gap]:
    """Per number of documents: ``second`` minus ``first`` in nats per token on the examples both scored.

    Examples pair up by (examples digest, example id), so records of several evaluate runs on
    different splits pool into one comparison; ``own_better`` of the result is the share of
    examples where ``first`` is better. Raises ``ValueError`` when the two share no example.
    """
    def by_example(label: str) -> dict[tuple[int, str, str], tuple[float, int]]:
        return {(r["n_docs"], r["examples_digest"], r["example_id"]): (r["nll"], r["n_tokens"])
                for r in records if r["label"] == label}

    a, b = by_example(first), by_example(second)
    common = sorted(a.keys() & b.keys())
    out: dict[int, Gap] = {}
    for n_docs in sorted({key[0] for key in common}):
        keys = [key for key in common if key[0] == n_docs]
        out[n_docs] = personalization_gap([a[key] for key in keys], [b[key] for key in keys], seed=seed)
    if not out:
        raise ValueError(f"{first!r} and {second!r} scored no example in common "
                         f"({len(a)} and {len(b)} records)")
    return out


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


def gap_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows that carry a personalization gap, largest gap first."""
    return sorted((r for r in rows if r.get("gap") is not None), key=lambda r: (-r["gap"], r["label"], r["n_docs"]))
