"""commer_core.storage: one fsspec configuration, Beam options mapped to it, conditional writes on a real S3 server."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from commer_core import storage


def test_beam_s3_options_map_to_s3fs_storage_options():
    mapped = storage.beam_storage_options({
        "s3_endpoint_url": "http://127.0.0.1:9", "s3_access_key_id": "AK", "s3_secret_access_key": "SK",
        "s3_session_token": "T", "s3_region_name": "eu-west-1", "s3_verify": "/ca.pem", "s3_disable_ssl": True,
        "project": "p", "runner": "DirectRunner", "s3_api_version": None,
    })
    assert mapped == {
        "s3": {"endpoint_url": "http://127.0.0.1:9", "key": "AK", "secret": "SK", "token": "T", "use_ssl": False,
               "client_kwargs": {"region_name": "eu-west-1", "verify": "/ca.pem"}},
        "gs": {"project": "p"},
    }
    assert storage.beam_storage_options({"s3_disable_ssl": False, "runner": "X"}) == {}


def test_configured_options_override_defaults_and_merge_nested_ones():
    previous = storage.configure({"s3": {"client_kwargs": {"region_name": "eu-west-1"}, "use_listings_cache": True}})
    try:
        assert storage.storage_options("s3") == {"use_listings_cache": True, "client_kwargs": {"region_name": "eu-west-1"}}
        assert storage.storage_options("gs") == {"cache_timeout": 0}
    finally:
        storage.configure(previous)
    assert storage.protocol("/tmp/x") == storage.protocol("file:///tmp/x") == "file"
    assert storage.protocol("s3a://b/k") == "s3" and storage.protocol("gcs://b/k") == "gs"


def test_local_paths_get_arrow_s_own_filesystem_and_atomic_writes(tmp_path):
    fs, path = storage.arrow_filesystem(f"file://{tmp_path}")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
    storage.write_bytes(str(tmp_path / "a" / "b.txt"), b"hello")
    assert storage.read_bytes(str(tmp_path / "a" / "b.txt")) == b"hello"
    with pytest.raises(storage.StorageError, match="no conditional writes on file://"):
        storage.write_if(str(tmp_path / "a" / "b.txt"), b"x", None)


def test_an_unknown_scheme_is_one_storage_error_naming_the_uri():
    with pytest.raises(storage.StorageError, match="nosuch://b/k"):
        storage.arrow_filesystem("nosuch://b/k")


def test_s3_conditional_write_lets_exactly_one_of_two_writers_holding_one_token_win(s3_store):
    latest = s3_store.uri("store", "LATEST")
    assert storage.read_versioned(latest) == (None, None)
    storage.write_if(latest, b"v-1\n", None)  # If-None-Match: *
    with pytest.raises(storage.PreconditionFailed, match="changed since it was read"):
        storage.write_if(latest, b"v-other\n", None)
    data, token = storage.read_versioned(latest)
    assert data == b"v-1\n" and token
    storage.write_if(latest, b"v-2\n", token)  # the first writer holding the token wins ...
    with pytest.raises(storage.PreconditionFailed):
        storage.write_if(latest, b"v-3\n", token)  # ... the second, holding the same token, loses
    assert storage.read_versioned(latest)[0] == b"v-2\n"
    puts = [r for r in s3_store.requests if r[0] == "PUT" and r[1].endswith("/store/LATEST")]
    assert len(puts) == 4  # every attempt reached the server: the refusals are S3's, not a client-side check


def test_s3_through_arrow_reads_what_fsspec_wrote(s3_store):
    storage.write_bytes(s3_store.uri("dir", "f.bin"), b"\x00\x01")
    fs, path = storage.arrow_filesystem(s3_store.uri("dir"))
    assert [i.base_name for i in fs.get_file_info(pafs.FileSelector(path))] == ["f.bin"]
    with fs.open_input_stream(f"{path}/f.bin") as fh:
        assert fh.read() == b"\x00\x01"


def test_a_changed_endpoint_in_the_environment_gets_a_new_filesystem(monkeypatch):
    """fsspec caches filesystems by their options: the endpoint the environment names must be one of
    them, or a process whose AWS_ENDPOINT_URL changed keeps talking to the old server (found when a
    benchmark's S3 server had stopped and the tests' server took over)."""
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    first, _ = storage.filesystem("s3://bucket/a")
    assert storage.storage_options("s3")["endpoint_url"] == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    second, _ = storage.filesystem("s3://bucket/a")
    assert second is not first and storage.storage_options("s3")["endpoint_url"] == "http://127.0.0.1:2"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:3")
    assert storage.storage_options("gs")["endpoint_url"] == "http://127.0.0.1:3"
