"""Runner checks at launch (pipelines/runners.py), through the CLI: refused before anything is read or written."""

from __future__ import annotations

import logging
import os
import socket

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
from click.testing import CliRunner

from jobs.cli import cli
from pipelines.runners import _BeamRootRecords, check_embedded_worker_pool, refusal, runner_key
from tests.helpers import job_args, write_corpus

DASK_SPELLINGS = [
    ("--runner=DaskRunner",),
    ("--runner=dask",),
    ("--runner", "Dask"),
    ("--runner=apache_beam.runners.dask.dask_runner.DaskRunner",),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    rows = [{"user_id": "u", "doc_id": f"d{i}", "text": f"Document number {i}."} for i in range(3)]
    return write_corpus(tmp_path_factory.mktemp("runners") / "corpus", rows, n_files=1)


def compress(corpus: str, output, checkpoint, *beam_args: str):
    return CliRunner().invoke(cli, ["compress", *job_args(corpus, output, checkpoint, "--", *beam_args)],
                              catch_exceptions=False)


def error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("runner_args", DASK_SPELLINGS, ids=lambda a: a[-1])
def test_dask_is_refused_at_launch_naming_the_defects_and_the_beam_version(corpus, tmp_path, tiny_checkpoint,
                                                                           runner_args):
    result = compress(corpus, tmp_path / "store", tiny_checkpoint, *runner_args)
    line = error_line(result)
    assert f"--runner={runner_args[-1].split('=')[-1]} is refused" in line
    assert f"Apache Beam {beam.__version__}" in line
    for defect in ("tagged outputs", "finish_bundle", "only the last sink", "no metrics"):
        assert defect in line, defect
    assert "commer: input" not in result.output  # refused before the launch checks read anything
    assert not (tmp_path / "store").exists()
    unknown = compress(corpus, tmp_path / "store", tiny_checkpoint, "--runner=NoSuchRunner")
    assert result.exit_code == unknown.exit_code == 1  # as any other bad option value


def test_runner_spellings_fold_to_one_key():
    assert {runner_key(a[-1].split("=")[-1]) for a in DASK_SPELLINGS} == {"dask"}
    assert runner_key("DirectRunner") == runner_key("direct") == "direct"
    assert runner_key("apache_beam.runners.portability.portable_runner.PortableRunner") == "portable"
    for runner in ("DirectRunner", "PortableRunner", "FlinkRunner", "SparkRunner", "DataflowRunner", "FnApiRunner"):
        assert refusal(runner) is None, runner


def test_an_embedded_portable_job_without_a_worker_pool_fails_in_one_line(corpus, tmp_path, tiny_checkpoint):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = compress(corpus, tmp_path / "store", tiny_checkpoint, "--runner=PortableRunner", "--job_endpoint=embed",
                      "--environment_type=EXTERNAL", f"--environment_config=localhost:{port}")
    line = error_line(result)
    assert result.exit_code == 1
    assert f"no SDK worker pool answers at localhost:{port}" in line
    assert f"worker_pool_main --service_port={port}" in line
    assert not os.path.exists(tmp_path / "store")


def test_a_remote_job_servers_worker_pool_is_not_probed_from_the_launcher():
    """``localhost`` in a Flink or Spark job names the task manager's host: nothing to check here."""
    options = PipelineOptions(["--job_endpoint=flink-jobserver:8099", "--environment_type=EXTERNAL",
                               "--environment_config=localhost:1"])
    check_embedded_worker_pool(options.view_as(PortableOptions))  # would raise if it probed port 1 here


def test_beam_records_on_the_root_logger_follow_the_apache_beam_level(monkeypatch):
    beam_file = os.path.join(os.path.dirname(beam.__file__), "runners", "portability", "portable_runner.py")
    relayed = logging.LogRecord("root", logging.ERROR, beam_file, 540, "Traceback ...", None, None)
    ours = logging.LogRecord("root", logging.ERROR, __file__, 1, "ours", None, None)
    keep = _BeamRootRecords()
    monkeypatch.setattr(logging.getLogger("apache_beam"), "level", logging.CRITICAL)
    assert not keep.filter(relayed) and keep.filter(ours)
    monkeypatch.setattr(logging.getLogger("apache_beam"), "level", logging.NOTSET)  # -v: Beam logs shown
    assert keep.filter(relayed)
