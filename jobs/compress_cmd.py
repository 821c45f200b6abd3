"""``commer-pipeline compress``: the nightly Beam job, Parquet corpora -> embedding store.

With no arguments it runs the embedded default (generated sample corpus, bundled
checkpoint, DirectRunner) into ``./commer-output``. Arguments after ``--`` (and any
option this command does not know) are Beam pipeline options, passed through as is.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections import Counter
from contextlib import contextmanager

import click

_EPILOG = """\b
Examples:
  commer-pipeline compress
  commer-pipeline compress --input 'data/corpus-*.parquet' --output out/store
  commer-pipeline compress --input gs://b/corpus/*.parquet --output gs://b/store -- \\
      --runner=DataflowRunner --project=P --region=us-central1 --temp_location=gs://b/tmp
  commer-pipeline compress ... -- --direct_running_mode=multi_processing --direct_num_workers=2
See docs/RUNNERS.md for Dataflow (GPU), Spark and Flink command lines.
"""


@contextmanager
def _quiet_imports():
    """Beam logs an 'apitools not found' warning at import time; hide import chatter unless -v."""
    root = logging.getLogger()
    level = root.level
    if level >= logging.WARNING:
        root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


_LOCAL_RUNNERS = ("DirectRunner", "direct", "FnApiRunner")


def _is_direct(beam_args: list[str]) -> bool:
    """True unless the Beam options name a runner other than the DirectRunner."""
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1] in _LOCAL_RUNNERS
        if arg == "--runner" and i + 1 < len(beam_args):
            return beam_args[i + 1] in _LOCAL_RUNNERS
    return True


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command(
    "compress",
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
    epilog=_EPILOG,
)
@click.option("--input", "input_", metavar="PATTERN", default=None,
              help="Parquet file pattern or directory, on any Beam filesystem (default: a generated sample corpus).")
@click.option("--output", default="./commer-output", show_default=True, metavar="URI",
              help="Store directory (local, gs://, s3://). Each run adds a version and points OUTPUT/LATEST at "
                   "it on success; a committed store is only replaced with --overwrite or updated with --previous.")
@click.option("--checkpoint", default=None, metavar="DIR", help="Compressor checkpoint (default: the bundled one).")
@click.option("--base-model", default=None, metavar="ID", help="Backbone to load (default: the checkpoint's).")
@click.option("--user-column", default="user_id", show_default=True)
@click.option("--doc-id-column", default="doc_id", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option("--max-doc-tokens", type=click.IntRange(min=1), default=None, metavar="N",
              help="Truncate documents at N tokens (default: the checkpoint's).")
@click.option("--batch-tokens", type=click.IntRange(min=1), default=None, metavar="N",
              help="Padded-token budget of one forward pass [default: 1024 on CPU, the fastest measured on a "
                   "2-core CPU; 16384 with CUDA, measured on an H100].")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="Most documents in one forward pass [default: 64 on CPU, 2048 with CUDA].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA (bf16) when the worker has one, else CPU (fp32).")
@click.option("--share-model/--no-share-model", default=False, show_default=True,
              help="One model per worker machine shared by its SDK processes (Beam large_model).")
@click.option("--compile/--no-compile", "compile_model", default=False, show_default=True,
              help="torch.compile the decoder layers in each worker (10-30 s start-up per process; CPU workers "
                   "need a C++ compiler). No reliable gain measured on CPU; on an H100 it made a 2B model's "
                   "compression 18-23% faster (docs/PERFORMANCE.md).")
@click.option("--progress-every", type=click.IntRange(min=0), default=32, show_default=True, metavar="N",
              help="Log a progress line every N documents per worker process (0: off).")
@click.option("--store-ranges", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
              help="User-id ranges the store is clustered into (more: less memory per write step).")
@click.option("--user-buckets", type=click.IntRange(min=1), default=None, metavar="N",
              help="Compress the users in N hash buckets, one pipeline after another, into the same version: "
                   "bounds the memory of the in-process DirectRunner, which holds every shuffle in memory. "
                   "Default: one bucket per 20,000 rows (input + previous store's documents) on the DirectRunner, "
                   "1 on distributed runners.")
@click.option("--previous", default=None, metavar="STORE",
              help="Update this store incrementally: compress only documents it does not cover yet (same checkpoint "
                   "required). Users absent from --input keep their row. Usually the same as --output.")
@click.option("--full-snapshot", is_flag=True, default=False,
              help="With --previous: --input holds every user; users absent from it are dropped.")
@click.option("--doc-cache", default=None, metavar="DIR",
              help="Per-document compression cache (Parquet, keyed by document and checkpoint): edits and "
                   "deletions are recomputed from it without the model; tonight's compressions are added.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace a committed store at --output.")
@click.option("--keep-versions", type=click.IntRange(min=1), default=2, show_default=True, metavar="N",
              help="Committed versions kept under --output (older ones are removed after the commit).")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
def compress(input_, output, checkpoint, base_model, user_column, doc_id_column, text_column, max_doc_tokens,
             batch_tokens, max_batch_size, device, share_model, compile_model, progress_every, store_ranges, user_buckets, previous,
             full_snapshot, doc_cache, overwrite, keep_versions, beam_args):
    """Compress every user's documents and mean-pool them into one k x d soft prompt per user.

    Reads Parquet rows (user, doc id, text), dead-letters bad rows with a reason, compresses
    each document with the checkpoint's compressor (Beam RunInference), averages per user and
    writes a new version OUTPUT/v-<run>/ (embeddings-*, documents-*, dead_letter-*.parquet,
    then _MANIFEST.json), then points OUTPUT/LATEST at it. Exit status 0 only when the store
    was committed; a failed or killed run leaves the previous version current.
    """
    with _quiet_imports():
        from commer_core.backbone import BackboneError
        from commer_core.checkpoint import CheckpointError
        from pipelines.commit import CommitError
        from pipelines.compress import CompressError, CompressParams, run_job
        from pipelines.model_handler import quiet_transformers
        from schemas import SchemaError

    quiet_transformers()
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    beam_args = list(beam_args)
    if not verbose:
        # Beam's own warnings (unparseable worker args, key coders, ...) are not for end users;
        # -v brings them back. SDK worker subprocesses get the same quiet level.
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
        if _is_direct(beam_args) and not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
            beam_args.append("--default_sdk_harness_log_level=ERROR")
    try:
        params = CompressParams(
            input=input_,
            output=output,
            checkpoint=checkpoint,
            base_model=base_model,
            user_column=user_column,
            doc_id_column=doc_id_column,
            text_column=text_column,
            max_doc_tokens=max_doc_tokens,
            batch_tokens=batch_tokens,
            max_batch_size=max_batch_size,
            device=device,
            share_model=share_model,
            compile_model=compile_model,
            progress_every=progress_every,
            store_ranges=store_ranges,
            user_buckets=user_buckets,
            previous=previous,
            full_snapshot=full_snapshot,
            doc_cache=doc_cache,
            overwrite=overwrite,
            keep_versions=keep_versions,
        )
        if input_ is None:
            _echo("commer: no --input given: running the embedded default on a generated sample corpus")
        result = run_job(params, beam_args, echo=_echo)
    except (CompressError, CommitError, SchemaError, CheckpointError, BackboneError, ValueError) as exc:
        if verbose:
            logging.getLogger(__name__).exception("compress failed")
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        _echo("commer: interrupted; nothing was committed")
        sys.exit(130)
    except Exception as exc:  # anything else: still one line, the traceback only with -vv
        if verbose:
            logging.getLogger(__name__).exception("compress failed")
        raise click.ClickException(
            f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)"
        ) from None
    _summary(result)


def _summary(result) -> None:
    counts = result.counts
    reasons = _dead_letter_reasons(result.output)
    width = 14
    lines = [
        f"commer: committed {result.output} version {result.version} (LATEST updated last)",
        f"  {'users':<{width}}{counts['users']}",
        f"  {'documents':<{width}}{counts['documents']}"
        + (f" ({counts['truncated']} truncated)" if counts.get("truncated") else ""),
        f"  {'dead letters':<{width}}{counts['dead_letters']}"
        + (" (" + "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3)) + ")" if reasons else ""),
    ]
    users = [f"{counts[f'users_{n}']} {n}" for n in ("new", "updated", "unchanged", "recomputed", "carried", "dropped")
             if counts.get(f"users_{n}")]
    if users or counts.get("documents_from_cache"):
        lines.append(
            f"  {'incremental':<{width}}users: {', '.join(users) or 'none'}; documents: "
            f"{counts.get('compressed', 0)} compressed, {counts.get('documents_reused', 0)} reused from "
            f"the previous store, {counts.get('documents_from_cache', 0)} from the cache"
        )
    if "rows_read" in counts:
        carried = f" - {counts['documents_carried']} carried over" if counts.get("documents_carried") else ""
        lines.append(f"  {'rows read':<{width}}{counts['rows_read']} (= documents{carried} + dead letters)")
    lines.append(
        f"  {'throughput':<{width}}{result.docs_per_second:.2f} docs/s "
        f"({counts['documents']} documents in {result.pipeline_seconds:.1f} s of pipeline, start-up included)"
    )
    if counts.get("inference_ms"):
        lines.append(
            f"  {'model time':<{width}}{counts['inference_ms'] / 1000:.1f} s in RunInference "
            f"({counts['documents'] / (counts['inference_ms'] / 1000):.2f} docs/s), "
            f"{counts.get('model_load_ms', 0) / 1000:.1f} s loading the model"
        )
    lines.append(f"Inspect it with: commer-pipeline inspect {result.output}")
    _echo("\n".join(lines))


def _dead_letter_reasons(output: str) -> Counter:
    try:
        from commer_core.store import open_store

        table = open_store(output).dead_letters()
        return Counter(table.column("reason").to_pylist())
    except Exception:  # the summary must not fail a committed run
        return Counter()
