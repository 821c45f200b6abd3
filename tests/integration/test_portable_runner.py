"""The compress job on Beam's PortableRunner with an EXTERNAL SDK worker pool, as Flink and Spark run Python.

The job server is the embedded one (``--job_endpoint=embed``, in the launcher: this test
process, through the CLI); the SDK workers are processes of a separate ``worker_pool_main``
that this module starts (its workers run ``python`` from PATH, so this interpreter's bin
folder goes first) and kills with its process group when the module is done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from commer_core.store import LATEST_NAME, open_store
from jobs.cli import cli
from tests.helpers import job_args, run_job, write_corpus, write_corrupt_parquet
from tests.integration.test_pipeline_compress import PLANTED, TEXTS, corpus_rows

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
POOL_START_SECONDS = 60.0
TOLERANCE = 1e-4  # portable vs DirectRunner store, max abs difference of any embedding value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the pool's own process group (its SDK workers are in it too)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + POOL_START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the worker pool exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the worker pool did not listen on {port} within {POOL_START_SECONDS} s")


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory, request) -> str:
    """``localhost:P`` of a running SDK worker pool (a separate process group, killed at the end)."""
    port = free_port()
    log = tmp_path_factory.mktemp("pool") / "worker_pool.log"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(lambda: stop_process_group(proc))
    wait_listening(proc, port, log)
    return f"localhost:{port}"


def portable_options(pool: str) -> list[str]:
    return ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
            f"--environment_config={pool}"]


def compress_cli(args: list[str]) -> Result:
    """``commer-pipeline compress ARGS`` in this process (a subprocess would import torch again: ~15 s here)."""
    return CliRunner().invoke(cli, ["compress", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_checkpoint, worker_pool):
    """The same corpus through the DirectRunner (in process) and the portable runner (CLI)."""
    root = tmp_path_factory.mktemp("portable")
    corpus = write_corpus(root / "corpus", corpus_rows())
    direct = run_job(corpus, root / "direct", tiny_checkpoint)
    portable = compress_cli(job_args(corpus, root / "portable", tiny_checkpoint, "--", *portable_options(worker_pool)))
    assert portable.exit_code == 0, portable.output[-3000:]
    return root, direct, portable


def max_store_difference(a_uri: str, b_uri: str) -> float:
    """Largest |a - b| over every user's embedding; the users and their n_docs must match exactly."""
    a, b = open_store(a_uri), open_store(b_uri)
    got_a, got_b = a.get(a.users()), b.get(b.users())
    assert sorted(got_a) == sorted(got_b) == sorted(TEXTS)
    assert {u: n for u, (_, n) in got_a.items()} == {u: n for u, (_, n) in got_b.items()}
    return max(float(np.max(np.abs(got_a[u][0] - got_b[u][0]))) for u in got_a)


def test_portable_store_equals_the_direct_runner_store(runs):
    root, direct, _ = runs
    assert max_store_difference(direct.output, str(root / "portable")) <= TOLERANCE
    index = {(r["user_id"], r["doc_id"]) for r in open_store(root / "portable").documents().to_pylist()}
    assert index == {(r["user_id"], r["doc_id"]) for r in open_store(direct.output).documents().to_pylist()}


def test_portable_run_counts_dead_letters_and_commits_like_the_direct_runner(runs):
    root, direct, portable = runs
    store = open_store(root / "portable")
    assert store.manifest.runner == "PortableRunner"
    assert (root / "portable" / LATEST_NAME).read_text().strip() == store.version
    counts = store.manifest.counts
    for name in ("rows_read", "documents", "compressed", "dead_letters", "dead_lettered", "users", "truncated"):
        assert counts[name] == direct.counts[name], name  # the workers' metrics reached the launcher
    assert counts["rows_read"] == counts["documents"] + counts["dead_letters"] == len(corpus_rows())
    reasons = sorted(r["reason"] for r in store.dead_letters().to_pylist())
    assert len(reasons) == len(PLANTED)
    assert reasons == sorted(r["reason"] for r in open_store(direct.output).dead_letters().to_pylist())
    assert "Traceback" not in portable.output
    assert f"committed {root / 'portable'} version {store.version}" in portable.output
    assert f"rows read     {len(corpus_rows())} (= documents + dead letters)" in portable.output


def test_a_failed_portable_run_prints_one_error_line_and_keeps_latest(runs, tiny_checkpoint, worker_pool, caplog):
    root, _, _ = runs
    store = root / "portable"
    before = sorted(os.listdir(store))
    latest = (store / LATEST_NAME).read_text()
    corpus = write_corpus(root / "broken", corpus_rows()[:3], n_files=1)
    write_corrupt_parquet(root / "broken" / "zz-broken.parquet")  # a valid footer: fails in a worker
    failed = compress_cli(job_args(corpus, store, tiny_checkpoint, "--overwrite",
                                   "--", *portable_options(worker_pool)))
    assert failed.exit_code == 1
    errors = [line for line in failed.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "zz-broken.parquet, row group 0" in errors[0], failed.output[-3000:]
    assert "Traceback" not in failed.output
    # the portable runner relays the job's failure (a worker traceback) to the root logger; without -v
    # it is held back like every apache_beam log line (pipelines/runners.py), so no handler sees it
    relayed = [r for r in caplog.records if "Traceback" in r.getMessage()]
    assert not relayed, relayed[0].getMessage()[:500]
    assert sorted(os.listdir(store)) == before and (store / LATEST_NAME).read_text() == latest
