"""Which Beam runners this job can run on, decided at launch before anything is read or written.

Why a module of its own: the answer is about Beam, not about this job's data. Beam 2.77's
DaskRunner runs the job *wrongly* rather than failing (reproduced on a local scheduler with
two workers, ../shared/NOTES.md section 7), so it is refused by name in any spelling. A
PortableRunner job on the embedded job server (``--job_endpoint=embed``) runs in this
process and calls its EXTERNAL SDK worker pool from here, so a pool that is not listening is
reported at launch in one line instead of as a gRPC dump, and the job's messages that the
portable runner relays to the root logger obey the ``apache_beam`` logger's level (which
the CLI raises unless ``-v``), like every other Beam log line.
"""

from __future__ import annotations

import logging
import os
import re
import socket

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions
from apache_beam.transforms.environments import ExternalEnvironment
from apache_beam.version import __version__ as BEAM_VERSION

from pipelines.errors import CompressError

#: Why a runner cannot run this job (key: :func:`runner_key`); verified on Beam 2.77.
REFUSED_RUNNERS = {
    "dask": (
        "its DaskRunner merges a step's tagged outputs (dead letters would receive valid documents), "
        "drops elements emitted in finish_bundle (BatchElements' last batch; file sinks write empty shards), "
        "computes only the last sink and reports no metrics (the launcher checks row counts with them)"
    ),
}
SUPPORTED_RUNNERS = "DirectRunner, PortableRunner (Flink, Spark) or DataflowRunner (docs/RUNNERS.md)"
_BEAM_LOGGER = "apache_beam"
_CONNECT_SECONDS = 5.0


def runner_key(runner: object) -> str:
    """A ``--runner`` value (short name, class name, dotted path) or runner object as one key.

    ``DaskRunner``, ``dask``, ``Dask_Runner`` and
    ``apache_beam.runners.dask.dask_runner.DaskRunner`` are all ``dask``.
    """
    name = runner if isinstance(runner, str) else type(runner).__name__
    key = re.sub(r"[^a-z0-9]", "", name.rsplit(".", 1)[-1].lower())
    return key[: -len("runner")] if key.endswith("runner") and key != "runner" else key


def requested_runner(options: PipelineOptions, pipeline: beam.Pipeline | None = None) -> object | None:
    """The ``--runner`` option, else the runner object of a pipeline built by the caller."""
    runner = options.view_as(StandardOptions).runner
    return runner if runner is not None else getattr(pipeline, "runner", None)


def refusal(runner: object) -> str | None:
    """The one-line reason ``runner`` cannot run this job, or None when it may."""
    reason = REFUSED_RUNNERS.get(runner_key(runner))
    if reason is None:
        return None
    shown = runner if isinstance(runner, str) else type(runner).__name__
    return (f"--runner={shown} is refused: on Apache Beam {BEAM_VERSION} {reason}; "
            f"run on {SUPPORTED_RUNNERS}")


def prepare_runner(options: PipelineOptions, pipeline: beam.Pipeline | None = None) -> None:
    """Refuse a runner that cannot run this job; check an embedded portable job's worker pool.

    Raises :class:`CompressError` (one line) before the launcher reads any input.
    """
    runner = requested_runner(options, pipeline)
    if runner is None:
        return
    reason = refusal(runner)
    if reason is not None:
        raise CompressError(reason)
    if runner_key(runner) == "portable":
        check_embedded_worker_pool(options.view_as(PortableOptions))
        relay_job_messages_at_beam_level()


def check_embedded_worker_pool(portable: PortableOptions) -> None:
    """With ``--job_endpoint=embed`` and an EXTERNAL environment, the worker pool must answer from here.

    Only then: a remote job server's workers reach the pool from their own hosts, not from
    the launcher (a Flink task manager's ``localhost:50000`` sidecar, say).
    """
    if portable.job_endpoint != "embed" or (portable.environment_type or "").upper() != "EXTERNAL":
        return
    try:
        address = ExternalEnvironment.from_options(portable).url
    except ValueError as exc:
        raise CompressError(f"--environment_config: {exc}") from exc
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit():
        raise CompressError(f"--environment_config={address!r}: expected HOST:PORT of an SDK worker pool")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_SECONDS).close()
    except OSError as exc:
        raise CompressError(
            f"no SDK worker pool answers at {address} ({exc.strerror or exc}); start one there with "
            f"`python -m apache_beam.runners.worker.worker_pool_main --service_port={port}`"
        ) from exc


class _BeamRootRecords(logging.Filter):
    """Drops records Beam logs on the *root* logger below the ``apache_beam`` logger's level.

    The portable runner relays its job's messages with ``logging.log`` (root), so a failed
    bundle's whole traceback would print before the CLI's one ``Error:`` line.
    """

    _BEAM_DIR = os.path.dirname(beam.__file__) + os.sep

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self._BEAM_DIR):
            return True
        return record.levelno >= logging.getLogger(_BEAM_LOGGER).getEffectiveLevel()


def relay_job_messages_at_beam_level() -> None:
    """Install :class:`_BeamRootRecords` on the root logger once (the process's logging is global)."""
    root = logging.getLogger()
    if not any(isinstance(f, _BeamRootRecords) for f in root.filters):
        root.addFilter(_BeamRootRecords())
