"""The nightly job: Parquet user corpora -> one merged ComMer soft prompt per user.

Graph (every step labelled)::

    ReadCorpus            (file, row group) pairs checked at launch -> rows (invalid UTF-8 reaches Validate)
    Validate              schemas.check_row + duplicate (user_id, doc_id) resolution
    [PlanAgainstPrevious] --previous: reuse the previous version's means (pipelines.incremental)
    [ResolveFromCache]    --doc-cache: documents already compressed under this checkpoint
    Tokenize              the compressor's tokenizer, truncated at max_doc_tokens
    Compress              SortAndBatchByTokens + RunInference(CompressorModelHandler)
    [WriteCache]          --doc-cache: tonight's compressions, for later runs
    KeyByUser             ((user_id, doc_id, sha256), k x d) -> (user_id, k x d)
    MeanPoolPerUser       CombinePerKey(MeanPoolCombineFn): float64 (sum, count)
    GroupUsersByRange     user-id quantile ranges (so row groups hold nearby ids, for lookups)
    ToStoreTables         sorted pa.Tables in schemas.store_schema(k, d), one per row group
    WriteEmbeddings       Parquet (zstd, one row group per table) into the new version directory
    WriteDocumentIndex    (user_id, doc_id, text_sha256) of every document the means cover
    FlattenDeadLetters -> CountDeadLetters -> WriteDeadLetters

then, on the launcher, counts are checked (rows read = documents + dead letters, the
index covers exactly the documents averaged) and :mod:`pipelines.commit` writes the
version's ``_MANIFEST.json`` and then points ``LATEST`` at it.

Entry points: :func:`run` (argv in the Beam-example style, with ``test_pipeline``),
:func:`run_job` (already-parsed :class:`CompressParams`), :func:`build` (the graph
alone, for tests that use ``assert_that``).

The job by concern: :mod:`pipelines.options` (the flags, declared once),
:mod:`pipelines.plan` (launch-time checks), :mod:`pipelines.graph` (the steps above),
:mod:`pipelines.store_tables` (store rows and row groups), :mod:`pipelines.metrics`
(counters and the conservation check), :mod:`pipelines.run` (buckets, verify, commit).
This module is the entry point and re-exports what callers import from it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import apache_beam as beam

from pipelines.graph import KeyByUser, build
from pipelines.metrics import check_counts, metric_counts, summed_metric_counts
from pipelines.options import DEFAULT_OUTPUT, CompressParams, argument_parser, parse_args
from pipelines.plan import CompressError, JobPlan, PreviousVersion, plan_job
from pipelines.run import CompressResult, echo_stderr, run_job, summarize_exception
from pipelines.store_tables import GroupUsersByRange, ToStoreTables

__all__ = [
    "DEFAULT_OUTPUT", "CompressError", "CompressParams", "CompressResult", "GroupUsersByRange", "JobPlan",
    "KeyByUser", "PreviousVersion", "ToStoreTables", "argument_parser", "build", "check_counts", "main",
    "metric_counts", "parse_args", "plan_job", "run", "run_job", "summarize_exception", "summed_metric_counts",
]


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> CompressResult:
    """Parse ``argv`` (job flags + Beam options) and run the job."""
    params, beam_args = parse_args(argv)
    return run_job(params, beam_args, test_pipeline=test_pipeline)


def main() -> None:
    """``python -m pipelines.compress``: run, then one summary line."""
    logging.basicConfig(level=logging.WARNING)
    summary = run()
    echo_stderr(
        f"commer: committed {summary.output}: {summary.counts['users']} users, "
        f"{summary.counts['documents']} documents, {summary.counts['dead_letters']} dead letters"
    )


if __name__ == "__main__":
    main()
