"""Two runs into one store (issue 19, defects 2 and 3), with real processes.

The CLI runs in subprocesses that stop at a named pause point (``COMMER_PAUSE_AT``) and go
on once the test creates their resume file (``COMMER_PAUSE_RESUME``), so the interleaving
is the one each test names, not a matter of timing:

* two ``--previous S --output S`` runs both stopped just before their commit, then let go
  together: exactly one commits; the other exits 1 with one ``Error: LATEST moved ...``
  line, commits nothing and leaves no version behind (before: both exited 0 and the later
  LATEST lacked the other's users);
* a run stopped between its user buckets while another run commits into the same store:
  the other run's pruning leaves its unfinished version alone (before: it was deleted and
  the run failed with 'counts do not add up').
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commer_core.store import LATEST_NAME, open_store
from pipelines.faults import MARKER_ENV, PAUSE_ENV, RESUME_ENV
from tests.helpers import job_args, run_job, write_corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = [{"user_id": f"user-{i % 3}", "doc_id": f"d{i}", "text": f"Document {i} about topic {i % 2}."} for i in range(6)]


def rows_for(user: str, n: int = 2) -> list[dict]:
    return [{"user_id": user, "doc_id": f"{user}-{i}", "text": f"{user} wrote note {i} about the harbour."}
            for i in range(n)]


def start(args: list[str], point: str, marker: Path, resume: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               **{PAUSE_ENV: point, MARKER_ENV: str(marker), RESUME_ENV: str(resume)})
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "compress", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(markers: list[Path], procs: list[subprocess.Popen], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(m.exists() for m in markers):
        for proc in procs:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"a run ended (rc {proc.returncode}) before its pause point: {err[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the runs did not reach their pause points within {timeout} s")
        time.sleep(0.1)


def finish(proc: subprocess.Popen, timeout: float = 300.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"a run did not finish within {timeout} s")
    return proc.returncode, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.fixture()
def base_store(tmp_path, tiny_checkpoint):
    corpus = write_corpus(tmp_path / "base", BASE)
    first = run_job(corpus, tmp_path / "store", tiny_checkpoint)
    return tmp_path / "store", first.version


def test_two_runs_racing_to_commit_one_wins_and_the_other_commits_nothing(base_store, tmp_path, tiny_checkpoint):
    store, v0 = base_store
    resume = tmp_path / "go"
    procs, markers = {}, {}
    for user in ("anna", "bert"):
        corpus = write_corpus(tmp_path / user, rows_for(user), n_files=1)
        markers[user] = tmp_path / f"marker-{user}"
        args = job_args(corpus, store, tiny_checkpoint, "--previous", str(store))
        procs[user] = start(args, "before_manifest", markers[user], resume)
    try:
        wait_for(list(markers.values()), list(procs.values()))
        resume.touch()  # both runs go for the commit at once
        results = {user: finish(proc) for user, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert sorted(rc for rc, _ in results.values()) == [0, 1], results
    winner = next(user for user, (rc, _) in results.items() if rc == 0)
    loser = next(user for user in results if user != winner)
    latest = (store / LATEST_NAME).read_text().strip()
    assert error_lines(results[loser][1]) == [
        f"Error: LATEST moved from {v0} to {latest} while this run was computing; nothing committed "
        "(rerun to include the other run's users)"
    ], results[loser][1][-3000:]
    # the winner's version is current; the loser left no version (and no lock) behind
    assert sorted(p.name for p in store.iterdir()) == sorted([LATEST_NAME, v0, latest])
    users = set(open_store(store).users())
    assert winner in users and loser not in users and {"user-0", "user-1", "user-2"} <= users

    # the rerun the message asks for includes both runs' users
    rerun = run_job(str(tmp_path / loser / "*.parquet"), store, tiny_checkpoint, "--previous", str(store))
    assert rerun.manifest.previous_store.endswith(f"({latest})")
    assert {winner, loser, "user-0", "user-1", "user-2"} == set(open_store(store).users())


def test_a_commit_never_prunes_a_version_another_run_is_still_writing(base_store, tmp_path, tiny_checkpoint):
    store, v0 = base_store
    slow_rows = [row for user in ("carl", "cleo", "cora", "cruz") for row in rows_for(user, 1)]
    slow_corpus = write_corpus(tmp_path / "slow", slow_rows, n_files=1)
    marker, resume = tmp_path / "marker-slow", tmp_path / "go"
    slow = start(job_args(slow_corpus, store, tiny_checkpoint, "--previous", str(store), "--user-buckets", "3"),
                 "bucket_done", marker, resume)
    try:
        wait_for([marker], [slow])  # the slow run has written its first bucket and computes the next
        in_progress = [p.name for p in store.iterdir() if p.name.startswith("v-") and p.name != v0]
        assert len(in_progress) == 1 and any((store / in_progress[0]).iterdir())
        written = sorted(p.name for p in (store / in_progress[0]).rglob("*") if p.is_file())

        fast = run_job(write_corpus(tmp_path / "fast", rows_for("fay"), n_files=1), store, tiny_checkpoint,
                       "--previous", str(store))
        assert (store / LATEST_NAME).read_text().strip() == fast.version
        assert (store / in_progress[0]).is_dir(), "the fast run's commit pruned the slow run's unfinished version"
        assert sorted(p.name for p in (store / in_progress[0]).rglob("*") if p.is_file()) == written

        resume.touch()
        rc, err = finish(slow)
    finally:
        if slow.poll() is None:
            slow.kill()
    # the slow run computed every bucket, then found LATEST moved: one clear line, nothing committed
    assert rc == 1 and "counts do not add up" not in err
    assert error_lines(err) == [
        f"Error: LATEST moved from {v0} to {fast.version} while this run was computing; nothing committed "
        "(rerun to include the other run's users)"
    ], err[-3000:]
    assert (store / LATEST_NAME).read_text().strip() == fast.version
    assert sorted(p.name for p in store.iterdir()) == sorted([LATEST_NAME, v0, fast.version])
    assert "fay" in open_store(store).users()
