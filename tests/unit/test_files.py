"""commer_core.files: atomic file and directory replacement, crash windows included, and URIs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commer_core import files
from commer_core.files import (
    aside_path,
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    is_local_uri,
    local_path,
    publish_dir,
    recover_dir,
    replace_dir,
    staging_dir,
)


def _make_dir(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "data.txt").write_text(content)
    return path


def _fail_renames(monkeypatch: pytest.MonkeyPatch, failing_calls: set[int]) -> list[tuple[str, str]]:
    """Make the n-th ``os.rename`` calls (1-based) raise, as a crash at that point would stop them."""
    real_rename = os.rename
    calls: list[tuple[str, str]] = []

    def rename(src: str, dst: str) -> None:
        calls.append((str(src), str(dst)))
        if len(calls) in failing_calls:
            raise OSError(f"simulated failure of rename #{len(calls)}")
        real_rename(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    return calls


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("uri, local", [
    ("relative/store", True), ("/abs/store", True), ("~/store", True), ("file:///abs/store", True),
    (Path("/abs/store"), True), ("gs://bucket/store", False), ("s3://bucket/store", False),
    ("hf://org/model", False),
])
def test_is_local_uri(uri, local):
    assert is_local_uri(uri) is local


def test_local_path_strips_file_scheme_and_expands_home():
    assert local_path("file:///abs/store") == Path("/abs/store")
    assert local_path("/abs/store") == Path("/abs/store")
    assert local_path("~/store") == Path.home() / "store"
    with pytest.raises(ValueError, match="not a local path"):
        local_path("gs://bucket/store")


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "LATEST"
    atomic_write_text(target, "v-1\n")
    atomic_write_bytes(target, b"v-2\n")
    assert target.read_text() == "v-2\n"
    assert _leftovers(target.parent) == []


def test_atomic_output_keeps_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "train.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_keeps_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "LATEST"
    target.write_text("old")

    def fail(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_uses_umask_permissions_not_mkstemp_0600(tmp_path):
    target = atomic_write_text(tmp_path / "f.json", "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_replace_dir_installs_new_and_replaces_old(tmp_path):
    target = tmp_path / "checkpoint"
    replace_dir(_make_dir(tmp_path / "s1", "one"), target)
    assert (target / "data.txt").read_text() == "one"
    replace_dir(_make_dir(tmp_path / "s2", "two"), target)
    assert (target / "data.txt").read_text() == "two"
    assert not aside_path(target).exists() and not (tmp_path / "s2").exists()


def test_replace_dir_failure_on_second_rename_keeps_old_target(tmp_path, monkeypatch):
    target = _make_dir(tmp_path / "state", "old")
    staging = _make_dir(tmp_path / "staging", "new")
    calls = _fail_renames(monkeypatch, {2})
    with pytest.raises(OSError, match="rename #2"):
        replace_dir(staging, target)
    assert [dst for _, dst in calls[:2]] == [str(aside_path(target)), str(target)]
    assert (target / "data.txt").read_text() == "old"  # rolled back: the old version is in place
    assert not aside_path(target).exists()
    assert (staging / "data.txt").read_text() == "new"  # the caller's staging_dir cleans it up


def test_crash_between_the_renames_keeps_old_version_and_recovers(tmp_path, monkeypatch):
    target = _make_dir(tmp_path / "state", "old")
    staging = _make_dir(tmp_path / "staging", "new")
    _fail_renames(monkeypatch, {2, 3})  # the swap and the rollback both fail: as if the process died there
    with pytest.raises(OSError):
        replace_dir(staging, target)
    monkeypatch.undo()
    assert not target.exists()
    assert (aside_path(target) / "data.txt").read_text() == "old"  # never deleted
    assert recover_dir(target) is True
    assert (target / "data.txt").read_text() == "old" and not aside_path(target).exists()


def test_replace_dir_after_a_crash_between_the_renames_recovers_first(tmp_path):
    target = tmp_path / "state"
    _make_dir(aside_path(target), "old")  # what a crash between rename 1 and 2 leaves
    replace_dir(_make_dir(tmp_path / "staging", "new"), target)
    assert (target / "data.txt").read_text() == "new"
    assert not aside_path(target).exists()


def test_stale_aside_after_a_crash_before_cleanup_is_removed(tmp_path):
    target = _make_dir(tmp_path / "state", "current")
    _make_dir(aside_path(target), "older")  # a crash after rename 2, before the delete
    assert recover_dir(target) is False
    assert not aside_path(target).exists()
    assert (target / "data.txt").read_text() == "current"


def test_staging_dir_is_beside_target_and_removed_unless_moved(tmp_path):
    target = tmp_path / "models" / "tiny"
    with staging_dir(target, mode=0o755) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".tiny-")
        assert staging.stat().st_mode & 0o777 == 0o755
    assert not staging.exists()
    with staging_dir(target) as staging:
        (staging / "config.json").write_text("{}")
        replace_dir(staging, target)
    assert (target / "config.json").exists() and _leftovers(target.parent) == []


def test_publish_dir_first_writer_wins(tmp_path):
    target = tmp_path / "model"
    first = _make_dir(tmp_path / "a", "first")
    (first / "config.json").write_text("{}")
    assert publish_dir(first, target, marker="config.json") == target
    second = _make_dir(tmp_path / "b", "second")
    assert publish_dir(second, target, marker="config.json") == target
    assert (target / "data.txt").read_text() == "first"


def test_publish_dir_raises_when_target_is_incomplete(tmp_path):
    target = _make_dir(tmp_path / "model", "partial")  # no marker: not a finished copy
    with pytest.raises(OSError):
        publish_dir(_make_dir(tmp_path / "a", "new"), target, marker="config.json")
