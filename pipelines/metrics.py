"""The job's counters, read back on the launcher, and the check that nothing was lost.

Workers count into Beam metrics (namespace ``commer``); the launcher sums them over the
user buckets and checks that rows read = documents + dead letters before committing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from pipelines.commit import CommitError
from pipelines.validate import METRICS_NAMESPACE

log = logging.getLogger(__name__)


def metric_counts(result: Any) -> tuple[dict[str, int], bool] | None:
    """The job's ``commer`` counters and whether all were *committed* values, or None.

    Attempted values (runners without committed metrics) may count retried bundles twice,
    so the launcher only enforces the conservation check on committed ones.
    """
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except Exception as exc:  # some runners do not report metrics to the launcher
        log.warning("metrics unavailable from the runner: %s", exc)
        return None
    counts: dict[str, int] = {}
    committed = bool(query.get("counters"))  # no counters at all: the runner did not report them
    for item in query.get("counters", []):
        value = _committed(item)
        if value is None:
            committed = False
            value = item.attempted
        if value is not None:
            counts[item.key.metric.name] = counts.get(item.key.metric.name, 0) + int(value)
    for item in query.get("distributions", []):
        value = _committed(item)
        value = item.attempted if value is None else value
        if value is None or not value.count:
            continue
        name = item.key.metric.name
        if name == "doc_tokens":
            counts["doc_tokens_total"] = counts.get("doc_tokens_total", 0) + int(value.sum)
            counts["doc_tokens_max"] = max(counts.get("doc_tokens_max", 0), int(value.max or 0))
        elif name.endswith("inference_batch_latency_micro_secs"):  # RunInference's own timing
            counts["inference_ms"] = counts.get("inference_ms", 0) + int(value.sum) // 1000
        elif name.endswith("load_model_latency_milli_secs"):
            counts["model_load_ms"] = counts.get("model_load_ms", 0) + int(value.sum)
    return counts, committed


def summed_metric_counts(buckets: Sequence[tuple[dict[str, int], bool] | None]) -> tuple[dict[str, int], bool]:
    """The user buckets' :func:`metric_counts` added up (``*_max``: the largest); committed if all were."""
    total: dict[str, int] = {}
    committed = bool(buckets)
    for bucket in buckets:
        counts, ok = bucket or ({}, False)
        committed = committed and ok
        for name, value in counts.items():
            total[name] = max(total.get(name, 0), value) if name.endswith("_max") else total.get(name, 0) + value
    return total, committed


def _committed(item: Any) -> Any:
    try:
        return item.committed
    except Exception:  # runners without committed metrics raise here
        return None


def check_counts(counts: dict[str, int], committed: bool, echo: Callable[[str], None]) -> None:
    """Nothing lost: rows read = tonight's documents + dead letters; the index covers every averaged document.

    Tonight's documents are the store's documents minus those carried over unchanged
    from a previous version for users absent from tonight's input.
    """
    if counts.get("indexed_documents", counts["documents"]) != counts["documents"]:
        raise CommitError(
            f"the document index lists {counts['indexed_documents']} documents but the means average "
            f"{counts['documents']}"
        )
    carried = counts.get("documents_carried", 0)
    written = counts["documents"] - carried + counts["dead_letters"]
    conserved = counts.get("rows_read", 0) == written
    if not committed and not conserved:
        echo("commer: warning: the runner reported no committed metrics; rows read could not be checked")
    elif not conserved:
        raise CommitError(
            f"counts do not add up: rows read {counts.get('rows_read', 0)} != documents {counts['documents']} "
            f"- carried over {carried} + dead letters {counts['dead_letters']}"
        )
