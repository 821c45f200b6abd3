"""Guards an operator expects, and one `Error:` line meaning one line (issue 19, defects 5 and 9).

The CLI runs in a subprocess, as cron runs it, so stderr is exactly what an operator sees.
Without ``-v`` a failed run prints its progress lines (``commer: ...``) and one ``Error:``
line, nothing else: before, a worker failure (corrupt pages, a missing adapter file, an
uncreatable output) printed 17-38 lines of Beam's worker traceback first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from commer_core.store import LATEST_NAME, open_store
from tests.helpers import job_args, run_job, write_corpus, write_corrupt_parquet

REPO_ROOT = Path(__file__).resolve().parents[2]
ROWS = [{"user_id": f"user-{i % 3}", "doc_id": f"d{i}", "text": f"Document {i} about topic {i % 2}."} for i in range(6)]


def cli(*args: str, timeout: float = 300.0, prelude: str = "") -> tuple[int, list[str]]:
    """Exit status and the stderr lines of ``commer-pipeline compress ARGS`` in a subprocess
    (``prelude``: Python run in it first)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("COMMER_PAUSE_AT", "COMMER_PAUSE_MARKER", "COMMER_PAUSE_RESUME"):
        env.pop(name, None)
    main = f"{prelude}\nimport sys\nfrom jobs.cli import cli\nsys.argv[0] = 'commer-pipeline'\ncli()"
    proc = subprocess.run([sys.executable, "-c", main, "compress", *args], cwd=REPO_ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def one_error_line(lines: list[str]) -> str:
    """The one line that is not a ``commer:`` progress line; fails when there are others."""
    others = [line for line in lines if not line.startswith("commer:")]
    assert len(others) == 1 and others[0].startswith("Error: "), "\n".join(lines)
    return others[0]


# -- defect 5: one line -------------------------------------------------------------------------
def test_an_output_that_cannot_be_created_is_refused_at_launch_in_one_line(tmp_path, tiny_checkpoint):
    corpus = write_corpus(tmp_path / "corpus", ROWS)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    output = blocker / "store"
    rc, lines = cli(*job_args(corpus, output, tiny_checkpoint))
    assert rc == 1
    error = one_error_line(lines)
    assert error.startswith(f"Error: --output {output}") and "cannot" in error, error
    assert not any(line.startswith("commer: input") for line in lines)  # refused before the announce line


def test_an_unwritable_output_is_refused_by_the_probe(tmp_path, tiny_checkpoint, monkeypatch):
    """Root ignores chmod, so the probe's write is made to fail the way a read-only mount fails."""
    import pipelines.plan as plan
    from pipelines.options import CompressParams
    from pipelines.plan import CompressError

    output = tmp_path / "store"
    output.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(output)) and flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(plan.os, "open", read_only)
    with pytest.raises(CompressError, match=r"--output .*store.* is not writable.*Read-only file system"):
        plan.check_output_writable(str(output))
    assert list(output.iterdir()) == []
    del CompressParams


def test_a_missing_adapter_file_fails_in_one_line(tmp_path, tiny_checkpoint):
    corpus = write_corpus(tmp_path / "corpus", ROWS)
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, checkpoint)
    adapter = checkpoint / "adapter" / "adapter_model.safetensors"
    # gone after the launch check verified it (a checkpoint replaced on a shared disk): the workers fail
    prelude = (
        "import logging, os\nlogging.disable(logging.WARNING)  # Beam's import-time chatter, as the CLI hides it\n"
        "import pipelines.plan as plan\nlogging.disable(logging.NOTSET)\n"
        "verified = plan.load_checkpoint_config\n"
        f"def verify_then_lose(uri):\n    found = verified(uri)\n    os.unlink({str(adapter)!r})\n    return found\n"
        "plan.load_checkpoint_config = verify_then_lose"
    )
    rc, lines = cli(*job_args(corpus, tmp_path / "store", checkpoint), prelude=prelude)
    assert rc == 1
    assert "adapter" in one_error_line(lines)


def test_a_worker_failure_is_one_line_without_v_and_a_traceback_with_it(tmp_path, tiny_checkpoint):
    corpus_dir = tmp_path / "corpus"
    write_corpus(corpus_dir, ROWS)
    write_corrupt_parquet(corpus_dir / "part-9.parquet")
    rc, lines = cli(*job_args(str(corpus_dir / "*.parquet"), tmp_path / "store", tiny_checkpoint))
    assert rc == 1
    assert "part-9.parquet" in one_error_line(lines)
    assert not (tmp_path / "store" / LATEST_NAME).exists()


# -- defect 9: guards ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_store(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("guards")
    result = run_job(write_corpus(root / "corpus", ROWS), root / "store", tiny_checkpoint)
    return Path(result.output), result.version


def empty_corpus(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("user_id", pa.string()), ("doc_id", pa.string()), ("text", pa.string())])
    pq.write_table(schema.empty_table(), directory / "part-0.parquet")
    return str(directory / "*.parquet")


def test_a_full_snapshot_of_an_empty_input_is_refused_unless_allowed(base_store, tmp_path, tiny_checkpoint):
    from pipelines.plan import CompressError

    first, version = base_store
    store = tmp_path / "store"
    shutil.copytree(first, store)
    corpus = empty_corpus(tmp_path / "empty")
    with pytest.raises(CompressError, match="--allow-empty"):
        run_job(corpus, store, tiny_checkpoint, "--previous", str(store), "--full-snapshot")
    assert (store / LATEST_NAME).read_text().strip() == version
    assert sorted(p.name for p in store.iterdir() if p.name.startswith("v-")) == [version]
    result = run_job(corpus, store, tiny_checkpoint, "--previous", str(store), "--full-snapshot", "--allow-empty")
    assert open_store(store).version == result.version and open_store(store).users() == []
    assert open_store(store).get(["user-0", "nobody"]) == {} and len(open_store(store)) == 0  # an empty index answers


def test_a_string_timestamp_column_does_not_block_the_job(tmp_path, tiny_checkpoint):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [dict(row, timestamp="yesterday") for row in ROWS]
    pq.write_table(pa.Table.from_pylist(rows), corpus / "part-0.parquet")
    echoed: list[str] = []
    from apache_beam.testing.test_pipeline import TestPipeline

    from pipelines.options import parse_args
    from pipelines.run import run_job as run_params

    params, beam_args = parse_args(job_args(str(corpus / "*.parquet"), tmp_path / "store", tiny_checkpoint))
    result = run_params(params, beam_args, test_pipeline=TestPipeline(), echo=echoed.append)
    assert result.counts["users"] == 3 and result.counts["dead_letters"] == 0
    assert any("warning" in line and "'timestamp'" in line and "not read" in line for line in echoed), echoed


def test_a_hive_partitioned_directory_gets_a_hint(tmp_path, tiny_checkpoint):
    from pipelines.plan import CompressError

    root = tmp_path / "corpus"
    write_corpus(root / "date=2026-11-30", ROWS)
    with pytest.raises(CompressError, match=r"no file matches.*subfolders.*--input '.*corpus/\*\*/\*\.parquet'"):
        run_job(str(root), tmp_path / "store", tiny_checkpoint)


def test_a_fifo_named_parquet_is_refused_by_name_without_opening_it(tmp_path, tiny_checkpoint):
    from pipelines.plan import CompressError

    corpus = tmp_path / "corpus"
    write_corpus(corpus, ROWS)
    os.mkfifo(corpus / "part-9.parquet")
    rc, lines = cli(*job_args(str(corpus / "*.parquet"), tmp_path / "store", tiny_checkpoint), timeout=60)
    assert rc == 1
    error = one_error_line(lines)
    assert "part-9.parquet" in error and "not a regular file" in error, error
    del CompressError
