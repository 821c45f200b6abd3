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

Modules: :mod:`.metrics` (scoring and summaries), :mod:`.plots`, :mod:`.report` (files and tables).
"""

from commer_core.evaluation.metrics import (
    GAP_FIELDS,
    SUMMARY_FIELDS,
    MethodSpec,
    rouge,
    generate_examples,
    first_line,
    evaluate_method,
    gap_columns,
    summarize,
    paired_difference,
    fit_power_law,
    power_law_fits,
    gap_rows,
)
from commer_core.evaluation.plots import (
    plot_cost_quality,
    plot_docs_scaling,
    plot_personalization_gap,
)
from commer_core.evaluation.report import (
    write_results,
    format_table,
    format_pivot,
    format_personalization,
)

__all__ = [
    "GAP_FIELDS",
    "SUMMARY_FIELDS",
    "MethodSpec",
    "rouge",
    "generate_examples",
    "first_line",
    "evaluate_method",
    "gap_columns",
    "summarize",
    "paired_difference",
    "fit_power_law",
    "power_law_fits",
    "gap_rows",
    "plot_cost_quality",
    "plot_docs_scaling",
    "plot_personalization_gap",
    "write_results",
    "format_table",
    "format_pivot",
    "format_personalization",
]
