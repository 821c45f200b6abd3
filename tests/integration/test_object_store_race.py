"""Two real processes racing to commit into one s3:// store (issue 19, defect 2, object-store half).

Both runs start from the same committed version (``--overwrite``: each computes only its own
users, which keeps the S3 work small; ``--previous`` runs take the same commit path) and stop
just before they replace
``LATEST`` (``COMMER_PAUSE_AT=before_latest``): each has already read ``LATEST``, found it
unchanged and written its manifest, so a check-then-write commit would let both exit 0 and
the later one would silently drop the other's users. Then one is let go and commits; then
the other, whose only guard left is the conditional write (``If-Match`` on the ETag it
read), must fail with one line, commit nothing and leave no version behind. The local-store
half is tests/integration/test_concurrency.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from commer_core import storage
from commer_core.store import LATEST_NAME, open_store
from pipelines.faults import MARKER_ENV, PAUSE_ENV, RESUME_ENV
from tests.helpers import job_args, run_job, write_corpus
from tests.integration.test_concurrency import error_lines, finish, rows_for, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = [{"user_id": f"user-{i % 3}", "doc_id": f"d{i}", "text": f"Document {i} about topic {i % 2}."} for i in range(6)]


def start(args: list[str], env: dict[str, str], marker: Path, resume: Path) -> subprocess.Popen:
    env = {**os.environ, **env, "OMP_NUM_THREADS": "1",
           PAUSE_ENV: "before_latest", MARKER_ENV: str(marker), RESUME_ENV: str(resume)}
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "compress", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # two compress processes on S3 at once: 60-120 s on a loaded 2-core machine
def test_two_processes_racing_on_s3_one_commits_the_other_fails_and_commits_nothing(s3_store, tmp_path,
                                                                                      tiny_checkpoint):
    base = run_job(write_corpus(tmp_path / "base", BASE), tmp_path / "base-store", tiny_checkpoint)
    store = s3_store.uri("store")
    fs, path = storage.filesystem(store)
    fs.put(str(tmp_path / "base-store") + "/", path + "/", recursive=True)  # the committed base, on S3
    seeded = len(s3_store.requests)
    v0 = base.version
    # the runs reach S3 through their Beam options only (mapped to fsspec for LATEST's compare-and-swap)
    env = {name: value for name, value in s3_store.env.items() if name != "AWS_ENDPOINT_URL"}
    procs, markers, resumes = {}, {}, {}
    for user in ("anna", "bert"):
        corpus = write_corpus(tmp_path / user, rows_for(user), n_files=1)
        markers[user], resumes[user] = tmp_path / f"marker-{user}", tmp_path / f"go-{user}"
        args = job_args(corpus, store, tiny_checkpoint, "--overwrite", "--", *s3_store.beam_args)
        procs[user] = start(args, env, markers[user], resumes[user])
    try:
        wait_for(list(markers.values()), list(procs.values()))
        resumes["anna"].touch()
        anna = finish(procs["anna"])
        resumes["bert"].touch()
        bert = finish(procs["bert"])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert anna[0] == 0, anna[1][-3000:]
    latest = storage.read_bytes(f"{store}/{LATEST_NAME}").decode().strip()
    assert latest != v0 and latest in anna[1]
    assert bert[0] == 1 and error_lines(bert[1]) == [
        f"Error: LATEST moved from {v0} to {latest} while this run was computing; nothing committed "
        "(rerun to include the other run's users)"
    ], bert[1][-3000:]
    versions = sorted({key.split("/")[1] for key in s3_store.keys("store") if key.count("/") > 1})
    assert versions == sorted([v0, latest])  # bert's version (manifest included) is gone
    users = set(open_store(store).users())
    assert users == {"anna"}  # the winner's version; nothing of the loser's
    refused = [r for r in s3_store.requests[seeded:] if r[0] == "PUT" and r[1].endswith(f"/store/{LATEST_NAME}")]
    assert len(refused) == 2  # both conditional writes reached S3; S3 refused the second
