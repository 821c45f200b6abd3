"""A compress run killed with SIGKILL at any step leaves the previous store readable and unchanged.

The CLI runs in a subprocess with ``COMMER_PAUSE_AT`` set to one of the job's pause
points (writing the first embeddings shard, before the version's manifest, before
``LATEST``); once it reports it is there, the test kills it with SIGKILL, checks the
store byte for byte, and then runs the job again, which must succeed and clean up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from commer_core.store import LATEST_NAME, open_store
from pipelines.commit import LOCK_NAME
from pipelines.faults import MARKER_ENV, PAUSE_ENV, PAUSE_POINTS
from tests.helpers import job_args, run_job, write_corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
ROWS = [{"user_id": f"user-{i % 5}", "doc_id": f"d{i}", "text": f"Document number {i} about topic {i % 3}."}
        for i in range(20)]


def snapshot(store_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under the store directory."""
    return {
        str(path.relative_to(store_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(store_dir.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def committed(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("crash")
    corpus = write_corpus(root / "corpus", ROWS)
    result = run_job(corpus, root / "store", tiny_checkpoint)
    return root, corpus, result


def kill_at(point: str, args: list[str], marker: Path, timeout: float = 240.0) -> None:
    env = dict(os.environ, **{PAUSE_ENV: point, MARKER_ENV: str(marker)})
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "compress", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the job ended (rc {proc.returncode}) before reaching {point}: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the job did not reach {point} within {timeout} s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("point", PAUSE_POINTS)
def test_sigkill_leaves_the_previous_store_and_the_next_run_succeeds(committed, tiny_checkpoint, tmp_path, point):
    root, corpus, first = committed
    store = tmp_path / "store"
    shutil.copytree(first.output, store)
    before = snapshot(store)
    expected = open_store(store)
    expected_rows = expected.get(expected.users())

    changed = write_corpus(tmp_path / "corpus", [dict(r, text=r["text"] + " Edited.") for r in ROWS])
    kill_at(point, job_args(changed, store, tiny_checkpoint, "--overwrite"), tmp_path / "marker")

    after = snapshot(store)
    assert {name: digest for name, digest in after.items() if name in before} == before  # nothing touched
    assert all(name == LOCK_NAME or name.startswith("v-") and not name.startswith(first.version)
               for name in set(after) - set(before))  # a lock file only if killed holding the (flock) lock
    reopened = open_store(store)
    assert reopened.version == first.version and reopened.manifest == expected.manifest
    rows = reopened.get(reopened.users())
    assert all(np.array_equal(rows[u][0], expected_rows[u][0]) for u in expected_rows)

    killed = sorted(set(p.name for p in store.iterdir()) - {LATEST_NAME, first.version})
    again = run_job(changed, store, tiny_checkpoint, "--overwrite")  # the killed run's commit lock is no obstacle
    assert (store / LATEST_NAME).read_text().strip() == again.version
    # the new and the previous version remain; the killed run's directory too while it is under a day old
    # (it may as well be a concurrent run's), unless it had its manifest (killed before LATEST): then it is
    # an older committed version beyond --keep-versions
    kept = [] if point == "before_latest" else killed
    assert sorted(p.name for p in store.iterdir()) == sorted([LATEST_NAME, first.version, again.version, *kept])


def test_stale_beam_temp_folders_in_versions_and_the_cache_are_removed_live_ones_kept(tmp_path, tiny_checkpoint):
    """Issue 19, defect 8: a killed run's ``beam-temp-*`` folders (in a version directory, in the
    cache) are removed by a later commit once older than STALE_UNCOMMITTED_SECONDS; a younger one
    may be a concurrent run's live temp folder and stays. Before: they were never removed."""
    from pipelines.commit import STALE_UNCOMMITTED_SECONDS

    corpus = write_corpus(tmp_path / "corpus", ROWS)
    store, cache = tmp_path / "store", tmp_path / "cache"
    first = run_job(corpus, store, tiny_checkpoint, "--doc-cache", str(cache))
    (key_dir,) = [p for p in cache.iterdir() if p.is_dir()]
    old = time.time() - STALE_UNCOMMITTED_SECONDS - 3600
    planted = {}
    for name, parent, age in [("stale-version", store / first.version, old), ("live-version", store / first.version, None),
                              ("stale-cache", key_dir, old), ("live-cache", key_dir, None)]:
        folder = parent / f"beam-temp-{name}-0123456789abcdef"
        folder.mkdir()
        (folder / "shard.parquet").write_bytes(b"partial")
        if age is not None:
            for path in (folder / "shard.parquet", folder):
                os.utime(path, (age, age))
        planted[name] = folder
    again = run_job(corpus, store, tiny_checkpoint, "--previous", str(store), "--doc-cache", str(cache))
    assert (store / LATEST_NAME).read_text().strip() == again.version
    assert not planted["stale-version"].exists() and not planted["stale-cache"].exists()
    assert planted["live-version"].exists() and planted["live-cache"].exists()
    # a run's own temp folders go whatever their age (its failure path uses this)
    from pipelines.commit import remove_stale_temp_dirs

    mine = key_dir / "beam-temp-part-20260101T000000-cafebabe-1-0123"
    mine.mkdir()
    assert remove_stale_temp_dirs([str(key_dir)], "20260101T000000-cafebabe") == [str(mine)]
    assert planted["live-cache"].exists()
