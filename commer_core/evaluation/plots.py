"""The evaluation plots (matplotlib, Agg): cost vs quality, perplexity vs documents, the personalization gap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from commer_core.evaluation.metrics import gap_rows, power_law_fits

_COLORS = {"commer": "tab:blue", "commer_untrained": "tab:cyan", "prompt_tuning": "tab:orange",
           "raw_docs": "tab:green", "none": "tab:gray"}
SCALING_METHODS = ("commer",)  # methods whose perplexity-vs-documents curve gets a power-law fit


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
