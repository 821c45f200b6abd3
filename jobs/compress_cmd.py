"""``commer-pipeline compress``: the nightly Beam job, Parquet corpora -> embedding store.

With no arguments it runs the embedded default (generated sample corpus, bundled
checkpoint, DirectRunner) into ``./commer-output``. Arguments after ``--`` (and any
option this command does not know) are Beam pipeline options, passed through as is.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import click

from jobs.errors import cli_errors, expected_errors, verbosity
from pipelines.options import OptionSpec, option_specs

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


def _is_direct(beam_args: list[str]) -> bool:
    """True unless the Beam options name a runner whose workers are not this machine's processes."""
    from pipelines.plan import is_local_runner

    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            return is_local_runner(arg.split("=", 1)[1])
        if arg == "--runner" and i + 1 < len(beam_args):
            return is_local_runner(beam_args[i + 1])
    return True


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _click_option(spec: OptionSpec) -> Callable[[Callable], Callable]:
    """``spec`` as a Click option (the argparse twin is :func:`pipelines.options.argument_parser`)."""
    if spec.kind is bool:
        decls = [f"{flag}/--no-{flag[2:]}" for flag in spec.flags] if spec.negatable else list(spec.flags)
        return click.option(*decls, spec.name, is_flag=True, default=spec.default, help=spec.help)
    if spec.choices:
        kind: Any = click.Choice(list(spec.choices))
    elif spec.kind is int:
        kind = click.IntRange(min=spec.minimum) if spec.minimum is not None else int
    else:
        kind = str
    return click.option(*spec.flags, spec.name, type=kind, default=spec.default, metavar=spec.metavar, help=spec.help)


def compress_options(command: Callable) -> Callable:
    """Every option of :class:`pipelines.options.CompressParams`, in declaration order."""
    for spec in reversed(option_specs()):
        command = _click_option(spec)(command)
    return command


@click.command(
    "compress",
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
    epilog=_EPILOG,
)
@compress_options
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
@cli_errors
def compress(beam_args: tuple[str, ...], **options: Any) -> None:
    """Compress every user's documents and mean-pool them into one k x d soft prompt per user.

    Reads Parquet rows (user, doc id, text), dead-letters bad rows with a reason, compresses
    each document with the checkpoint's compressor (Beam RunInference), averages per user and
    writes a new version OUTPUT/v-<run>/ (embeddings-*, documents-*, dead_letter-*.parquet,
    then _MANIFEST.json), then points OUTPUT/LATEST at it. Exit status 0 only when the store
    was committed; a failed or killed run leaves the previous version current.
    """
    with _quiet_imports():
        from pipelines.compress import CompressParams, run_job
        from pipelines.interrupts import Interrupted, interrupt_on_signals, received
        from pipelines.model_handler import quiet_transformers

    quiet_transformers()
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    beam_args = list(beam_args)
    if not verbose:
        # Beam's own warnings (unparseable worker args, key coders, ...) are not for end users, nor
        # its workers' error logs: apache_beam.runners.common logs every failing bundle's traceback
        # at ERROR before the launcher prints the one `Error:` line. -v brings them back. SDK
        # worker subprocesses get the same quiet level.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        if _is_direct(beam_args) and not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
            beam_args.append("--default_sdk_harness_log_level=CRITICAL")
    params = CompressParams(**options)
    if params.input is None:
        _echo("commer: no --input given: running the embedded default on a generated sample corpus")
    with interrupt_on_signals():  # Ctrl-C / SIGTERM: one line, exit 130 / 143 (pipelines/interrupts.py)
        result = None
        try:
            try:
                result = run_job(params, beam_args, echo=_echo)
            except Exception as exc:
                if isinstance(exc, expected_errors()):
                    raise  # @cli_errors: one Error: line
                # A runner's own failure (a worker's exception, a remote job's state) is still one
                # line: the traceback with -v.
                if verbosity() > 0:
                    logging.getLogger(__name__).exception("compress failed")
                raise click.ClickException(
                    f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)"
                ) from exc
            _summary(result)
        except Interrupted as exc:
            _echo(exc.line())
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # before the run staged anything, or after it returned committed
            stopped = Interrupted(received() or signal.SIGINT, result.output if result else "",
                                  result.version if result else None)
            _echo(stopped.line())
            sys.exit(stopped.exit_code)


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
