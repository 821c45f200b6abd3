"""Running the job: check, run each user bucket's pipeline, verify the counts, commit.

A failure at any point abandons the staged version and raises :class:`CompressError` (or
``CommitError``); ``LATEST`` only moves once every file and the manifest are written.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from pipelines.commit import (
    StagingArea,
    abandon,
    commit,
    new_staging_area,
    read_latest,
    remove_stale_temp_dirs,
    staged_counts,
)
from pipelines.faults import pause_point
from pipelines.graph import build
from pipelines.incremental import CACHE_DIR_PREFIX, cache_directory
from pipelines.interrupts import Interrupted, received
from pipelines.metrics import check_counts, metric_counts, summed_metric_counts
from pipelines.model_handler import quiet_transformers
from pipelines.options import CompressParams
from pipelines.plan import CompressError, JobPlan, empty_snapshot_refusal, plan_job
from pipelines.runners import prepare_runner
from pipelines.user_buckets import UserBucket
from schemas import StoreManifest

Echo = Callable[[str], None]


@dataclass
class CompressResult:
    """What a committed run produced."""

    output: str
    manifest: StoreManifest
    counts: dict[str, int]
    pipeline_seconds: float
    files: list[str] = field(default_factory=list)
    version: str = ""

    @property
    def docs_per_second(self) -> float:
        return self.counts.get("documents", 0) / max(self.pipeline_seconds, 1e-9)


def echo_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_job(
    params: CompressParams,
    beam_args: Sequence[str] = (),
    *,
    test_pipeline: beam.Pipeline | None = None,
    echo: Echo = echo_stderr,
) -> CompressResult:
    """Check, run, verify and commit; raises :class:`CompressError` (or CommitError) on failure."""
    quiet_transformers()
    options = test_pipeline.options if test_pipeline is not None else PipelineOptions(list(beam_args))
    prepare_runner(options, test_pipeline)
    plan = plan_job(params, options, test_pipeline)
    announce(plan, echo)
    try:
        pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    except ValueError as exc:  # e.g. an unknown --runner
        raise CompressError(f"cannot create the pipeline: {exc}") from exc
    staging = new_staging_area(plan.output)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    try:
        try:
            bucket_metrics = run_buckets(plan, pipeline, options, staging, started, echo)
        except CompressError:
            abandon_run(plan, staging)
            raise
        except Exception as exc:
            abandon_run(plan, staging)
            raise CompressError(f"pipeline failed: {summarize_exception(exc)}") from exc
        seconds = time.monotonic() - t0
        try:
            manifest, files = verify_and_commit(plan, staging, bucket_metrics, started, echo)
        except Exception:
            abandon_run(plan, staging)
            raise
    except BaseException as exc:
        signum = received() or (signal.SIGINT if isinstance(exc, KeyboardInterrupt) else None)
        if signum is None or isinstance(exc, Interrupted):
            raise
        raise interrupted(plan, staging, signum) from None
    return CompressResult(plan.output, manifest, manifest.counts, seconds, files, staging.version)


def interrupted(plan: JobPlan, staging: StagingArea, signum: int) -> Interrupted:
    """The run was stopped by ``signum``: remove its staging unless ``LATEST`` already names it."""
    try:
        committed = read_latest(plan.output) == staging.version
    except Exception:
        committed = False
    if not committed:
        abandon_run(plan, staging)
    return Interrupted(signum, plan.output, staging.version if committed else None)


def abandon_run(plan: JobPlan, staging: StagingArea) -> None:
    """Best effort: the run's version directory and its Beam temp folders in the cache go."""
    abandon(staging)
    if plan.cache_root is not None and plan.compression_key is not None:
        remove_stale_temp_dirs(cache_key_directories(plan.cache_root, plan.key), staging.run_id)


def announce(plan: JobPlan, echo: Echo) -> None:
    """One line saying what runs where, so a wrong input or checkpoint shows before the work."""
    echo(
        f"commer: input {plan.input_pattern} ({len(plan.input_files)} file(s)); "
        f"checkpoint {plan.checkpoint_fingerprint[:12]} (k={plan.num_embeddings}, d={plan.hidden_size}, "
        f"base {plan.base_model}); runner {plan.runner}"
        + (f"; {plan.user_buckets} user buckets, one pipeline each" if plan.user_buckets > 1 else "")
    )
    for warning in plan.warnings:
        echo(f"commer: {warning}")
    if not plan.checkpoint_trained:
        echo("commer: note: this checkpoint is UNTRAINED (a placeholder); its soft prompts are not meaningful yet")


def run_buckets(
    plan: JobPlan,
    pipeline: beam.Pipeline,
    options: PipelineOptions,
    staging: StagingArea,
    started: datetime,
    echo: Echo,
) -> list[tuple[dict[str, int], bool] | None]:
    """One pipeline per user bucket, one after another, into the same staged version; their metrics."""
    bucket_metrics = []
    t0 = time.monotonic()
    for index in range(plan.user_buckets):
        bucket = UserBucket(index, plan.user_buckets)
        if index > 0:
            pipeline = beam.Pipeline(options=options)
        build(pipeline, plan, staging.for_part(bucket.tag), started, bucket)
        result = pipeline.run()
        state = result.wait_until_finish()
        if state not in (PipelineState.DONE, None):
            raise CompressError(f"pipeline of {bucket} ended in state {state}")
        bucket_metrics.append(metric_counts(result))
        pause_point("bucket_done")
        del pipeline, result  # a finished bucket's runner state must not outlive it
        if plan.user_buckets > 1:
            gc.collect()
            echo(f"commer: {bucket} done ({time.monotonic() - t0:.1f} s)")
    return bucket_metrics


def verify_and_commit(
    plan: JobPlan,
    staging: StagingArea,
    bucket_metrics: list[tuple[dict[str, int], bool] | None],
    started: datetime,
    echo: Echo,
) -> tuple[StoreManifest, list[str]]:
    """Counts from the staged files and the metrics, checked; then the manifest, then LATEST."""
    finished = datetime.now(timezone.utc)
    counts = staged_counts(staging)
    metrics, committed = summed_metric_counts(bucket_metrics)
    counts.update({name: value for name, value in metrics.items() if name not in counts})
    check_counts(counts, committed, echo)
    p = plan.params
    if counts["users"] == 0 and plan.previous is not None and p.full_snapshot and not p.allow_empty:
        raise CompressError(empty_snapshot_refusal(plan.input_pattern, plan.previous).replace(
            "holding no document", "holding no valid document"))
    if counts["users"] == 0:
        echo("commer: warning: no valid document: the store has no user (see the dead letters)")
    manifest = StoreManifest(
        checkpoint_fingerprint=plan.checkpoint_fingerprint,
        base_model=plan.base_model,
        base_model_sha256=plan.base_model_sha256,
        num_embeddings=plan.num_embeddings,
        hidden_size=plan.hidden_size,
        counts=counts,
        input_pattern=plan.input_pattern,
        runner=plan.runner,
        started_at=started,
        finished_at=finished,
        package_version=package_version(),
        previous_store=plan.previous.label if plan.previous else None,
        compression_key=plan.compression_key,
    )
    files = commit(staging, manifest, plan.params.keep_versions, expected_latest=plan.expected_latest)
    if plan.cache_root is not None and plan.compression_key is not None:  # a killed run's, once stale
        remove_stale_temp_dirs(cache_key_directories(plan.cache_root, plan.key), staging.run_id)
    return manifest, files


def cache_key_directories(cache_root: str, key) -> list[str]:
    """The cache's per-key folders: all of them on a local filesystem, else this key's."""
    from commer_core.files import is_local_uri, local_path

    if is_local_uri(cache_root):
        root = str(local_path(cache_root))
        try:
            return sorted(os.path.join(root, n) for n in os.listdir(root) if n.startswith(CACHE_DIR_PREFIX))
        except OSError:
            return []
    return [cache_directory(cache_root, key)]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("commer-pipeline")
    except PackageNotFoundError:
        return "0+unknown"


def summarize_exception(exc: BaseException) -> str:
    """One line for a user: the innermost ``SomeError: message`` line of a (worker) failure."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head and ":" in line:
            return line[:500]
    return f"{type(exc).__name__}: {lines[0][:500] if lines else ''}"
