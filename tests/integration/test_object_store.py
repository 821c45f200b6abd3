"""The compress job and every reader of its store on s3:// and gs://, against real local servers.

S3 is moto's server, reached by the job only through Beam options (``--s3_endpoint_url``
...: ``AWS_ENDPOINT_URL`` is removed while the job runs), which the launcher gives to
Beam's filesystems and maps to fsspec for itself. GCS is gcp-storage-emulator, reached
by Beam's own GCS filesystem (google-cloud-storage) and by gcsfs through
``STORAGE_EMULATOR_HOST``. On each: input, checkpoint, output and ``--doc-cache`` in the
bucket; a full run, then an incremental ``--previous`` run that takes documents from the
cache and prunes the first version; the store equal to a local run of the same input;
``inspect`` (a separate process) and ``generate`` reading it from the URI; DuckDB reading
the committed version's embeddings and ``n_docs`` through the same fsspec filesystem.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from commer_core import storage
from commer_core.store import LATEST_NAME, open_store
from tests.helpers import job_args, run_job, write_corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRST = [{"user_id": f"user-{i % 3}", "doc_id": f"d{i}", "text": f"Note {i} about the harbour and topic {i % 2}."}
         for i in range(9)]
NEW_USER = [{"user_id": "zoe", "doc_id": f"z{i}", "text": f"Zoe wrote about kites, day {i}."} for i in range(2)]


@pytest.fixture(params=["s3_store", "gcs_store"])
def bucket(request):
    return request.getfixturevalue(request.param)


def upload(local: Path, remote: str) -> None:
    fs, path = storage.filesystem(remote)
    fs.put(str(local).rstrip("/") + "/", path + "/", recursive=True)


def run_on(bucket, *args: str):
    """The job in this process on a TestPipeline carrying the bucket's Beam options."""
    from pipelines.compress import run  # first: the package quiets Beam's import-time notice

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline

    return run([*args, *bucket.beam_args], test_pipeline=TestPipeline(options=PipelineOptions(bucket.beam_args)))


@pytest.mark.slow  # two jobs on the object store and one local: 40-90 s on a loaded 2-core machine
def test_compress_incremental_cache_prune_and_readers_on_an_object_store(bucket, tmp_path, tiny_checkpoint,
                                                                         monkeypatch):
    upload(Path(write_corpus(tmp_path / "first", FIRST)).parent, bucket.uri("first"))
    tonight = write_corpus(tmp_path / "tonight", FIRST[0::2] + NEW_USER, n_files=1)  # part-0 of FIRST, and zoe
    upload(Path(tonight).parent, bucket.uri("tonight"))
    upload(tiny_checkpoint, bucket.uri("ckpt"))
    store, cache, ckpt = bucket.uri("store"), bucket.uri("cache"), bucket.uri("ckpt")
    first = run_first(bucket, tmp_path, tiny_checkpoint)  # (its uploads reach the server by the environment)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # S3: the job gets the endpoint from Beam options only
    assert first.counts["users"] == 3 and first.counts["compressed"] == 9
    second = run_on(bucket, *job_args(bucket.uri("tonight", "*.parquet"), store, ckpt, "--doc-cache", cache,
                                      "--previous", store, "--keep-versions", "1"))
    counts = second.counts
    assert (counts["documents_from_cache"], counts["compressed"], counts["users_new"]) == (5, 2, 1), counts
    assert second.manifest.previous_store == f"{store} ({first.version})"
    keys = bucket.keys("store")
    assert f"store/{LATEST_NAME}" in keys and not any(first.version in k for k in keys), keys  # pruned
    assert f"store/{second.version}/_MANIFEST.json" in keys
    if bucket.scheme == "gs":  # each LATEST write carries its precondition (the emulator does not enforce it)
        writes = [path for method, path in bucket.requests if method == "POST" and "name=store/LATEST&" in path]
        assert len(writes) == 2 and writes[0].endswith("ifGenerationMatch=0"), writes
        assert int(writes[1].rsplit("ifGenerationMatch=", 1)[1]) > 0, writes

    # outside Beam, a new process configured by the environment alone reads the store
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    storage.configure(None)
    reference = open_store(run_job(tonight, tmp_path / "local", tiny_checkpoint).output)
    remote = open_store(store)
    assert remote.version == second.version and remote.users() == reference.users()
    for user, (emb, n_docs) in reference.get(reference.users()).items():
        got, got_n = remote.get([user])[user]
        assert got_n == n_docs and np.abs(got - emb).max() < 1e-5, user
    # head and the whole small tables, read in this thread over fsspec (commer_core/store.py says why)
    assert remote.head(2).column("user_id").to_pylist() == remote.head(5).column("user_id").to_pylist()[:2]
    assert set(remote.head(10).column("user_id").to_pylist()) == set(reference.users())
    keys = [("user_id", "ascending"), ("doc_id", "ascending")]
    assert remote.documents().sort_by(keys).equals(reference.documents().sort_by(keys))
    assert remote.dead_letters().num_rows == reference.dead_letters().num_rows
    check_readers(bucket, store, second.version, remote, tiny_checkpoint)


def run_first(bucket, tmp_path: Path, checkpoint: Path):
    """The first version, with its cache: on GCS a run on the bucket; on S3 a local run uploaded.

    Why: Beam's S3 filesystem builds a new boto3 session and client for every call (about 50 a
    run, 0.6 s each on a loaded 2-core machine), so each S3 run costs 40-60 s here; the
    incremental run below is the one on S3 (it reads the previous version and the cache from
    the bucket, writes, commits and prunes there), and the first run's path (no LATEST yet:
    If-None-Match) is the GCS case's and tests/unit/test_storage.py's.
    """
    args = ("--doc-cache", bucket.uri("cache"))
    if bucket.scheme != "s3":
        return run_on(bucket, *job_args(bucket.uri("first", "*.parquet"), bucket.uri("store"), bucket.uri("ckpt"), *args))
    first = run_job(str(tmp_path / "first" / "*.parquet"), tmp_path / "first-store", checkpoint,
                    "--doc-cache", str(tmp_path / "first-cache"))
    upload(tmp_path / "first-store", bucket.uri("store"))
    upload(tmp_path / "first-cache", bucket.uri("cache"))
    return first


def check_readers(bucket, store: str, version: str, remote, checkpoint: Path) -> None:
    """``inspect`` as a separate process, ``generate`` in this one, DuckDB over fsspec: all from the URI."""
    inspect = subprocess.run([sys.executable, "-m", "jobs.cli", "inspect", store, "--user", "zoe"], cwd=REPO_ROOT,
                             env={**os.environ, **bucket.env}, capture_output=True, text=True, timeout=120)
    assert inspect.returncode == 0, inspect.stderr[-2000:]
    assert f"store {store} (version {version}, from LATEST)" in inspect.stdout and "zoe: n_docs=2" in inspect.stdout
    assert "apitools" not in inspect.stderr + inspect.stdout

    from jobs.cli import cli

    result = CliRunner().invoke(cli, ["generate", "--store", store, "--checkpoint", str(checkpoint), "--user", "zoe",
                                      "--input", "Write a title:", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output  # the user's stored prompt was found (unknown users exit 1)

    import duckdb

    fs, _ = storage.filesystem(store)
    con = duckdb.connect()
    con.register_filesystem(fs)
    rows = con.sql(f"SELECT user_id, n_docs, embedding FROM read_parquet('{store}/{version}/embeddings-*.parquet') "
                   "ORDER BY user_id").fetchall()
    stored = remote.get(remote.users())
    assert [r[0] for r in rows] == sorted(stored)
    for user, n_docs, embedding in rows:
        assert n_docs == stored[user][1]
        assert np.array_equal(np.asarray(embedding, dtype=np.float32), stored[user][0].reshape(-1))


def test_a_remote_checkpoint_loads_through_the_storage_layer(s3_store, tiny_checkpoint, tmp_path, monkeypatch):
    from commer_core.checkpoint import CheckpointError, fingerprint, local_checkpoint, read_config

    monkeypatch.setenv("COMMER_HOME", str(tmp_path / "home"))
    upload(tiny_checkpoint, s3_store.uri("ckpt"))
    assert read_config(s3_store.uri("ckpt")) == read_config(tiny_checkpoint)
    assert fingerprint(s3_store.uri("ckpt")) == fingerprint(tiny_checkpoint)
    copy = local_checkpoint(s3_store.uri("ckpt"))
    assert copy.parent == tmp_path / "home" / "checkpoints"
    seen = len(s3_store.requests)
    assert local_checkpoint(s3_store.uri("ckpt")) == copy  # the copy is reused: only checksums.json is read again
    assert {path.rsplit("/", 2)[-2:][-1] for _, path in s3_store.requests[seen:]} == {"checksums.json"}

    monkeypatch.setenv("COMMER_HOME", str(tmp_path / "other-home"))  # copies are kept by fingerprint: a fresh one
    fs, path = storage.filesystem(s3_store.uri("bad"))
    fs.put(str(tiny_checkpoint).rstrip("/") + "/", path + "/", recursive=True)
    fs.pipe_file(path + "/commer_config.json", b"{}")
    with pytest.raises(CheckpointError, match=r"checkpoint s3://.*/bad: .*commer_config.json was altered"):
        read_config(s3_store.uri("bad"))


def test_importing_the_job_prints_no_beam_import_notice():
    """With google-cloud-storage installed, importing Beam logs 'apitools not found ...' on the root logger;
    the job's package drops that notice (pipelines/__init__.py), so the CLI never shows it."""
    code = "import logging; logging.basicConfig(); import pipelines.inputs, apache_beam.io.gcp.gcsfilesystem"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "apitools" not in done.stderr + done.stdout, done.stderr[-2000:]
