"""Pytest fixtures: real S3 (moto) and GCS (gcp-storage-emulator) servers on free 127.0.0.1 ports.

Why real servers: the job, the store reader and the commit's compare-and-swap talk HTTP
to a bucket; only a server shows what crosses the wire (listing, conditional writes,
the options that reach each client). Started once per session, in this process (a thread
each), so subprocesses reach them too; each test gets a fresh bucket.

* ``s3_store`` -> :class:`ObjectStore` for a new ``s3://`` bucket. Outside Beam it is reached
  through the environment (``AWS_ENDPOINT_URL`` and test credentials, set for the test);
  Beam gets ``beam_args`` (``--s3_endpoint_url`` ...), which the job maps to fsspec.
* ``gcs_store`` -> the same for ``gs://``: ``STORAGE_EMULATOR_HOST`` (read by Beam's GCS client,
  google-cloud-storage and gcsfs alike) is set for the test.
* ``ObjectStore.requests`` lists ``(method, path)`` of every request the server answered since
  the fixture started (both servers), for tests that count or look for requests.

Registered for every test by ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

S3_KEY = S3_SECRET = "test"
S3_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ObjectStore:
    """One fresh bucket on a local server."""

    scheme: str  # "s3" or "gs"
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    env: dict[str, str]  # what reaches the server outside Beam (already set in this test's environment)
    beam_args: list[str]  # Beam pipeline options that reach it
    _log: list[tuple[str, str]] = field(repr=False, default_factory=list)
    _start: int = 0

    @property
    def root(self) -> str:
        """``s3://BUCKET`` / ``gs://BUCKET``."""
        return f"{self.scheme}://{self.bucket}"

    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request answered since this fixture started (every bucket's)."""
        return list(self._log[self._start:])

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix`` (through fsspec, as configured here)."""
        from commer_core.storage import filesystem

        fs, root = filesystem(self.uri(prefix) if prefix else self.root)
        fs.invalidate_cache()
        base = f"{self.bucket}/"
        return sorted(p[len(base):] for p in fs.find(root))


class _S3Server:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.log: list[tuple[str, str]] = []
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        port = int(self.endpoint.rsplit(":", 1)[1])
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server.start()
        wsgi = self._server._server  # werkzeug's server: count requests around its WSGI app
        app: Callable[..., Any] = wsgi.app

        def counting(environ: dict, start_response: Callable) -> Any:
            self.log.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
            return app(environ, start_response)

        wsgi.app = counting

    def new_bucket(self) -> str:
        import boto3

        name = f"commer-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                     region_name=S3_REGION).create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self._server.stop()


class _CountRequests(logging.Handler):
    """The emulator logs each request at INFO as ``"METHOD /path HTTP/1.1" status -``."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        parts = record.getMessage().strip('"').split()
        if len(parts) >= 2 and parts[0].isupper():
            self.log.append((parts[0], parts[1]))


class _GcsServer:
    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        self.log: list[tuple[str, str]] = []
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        emulator_log = logging.getLogger("gcp_storage_emulator")
        emulator_log.setLevel(logging.INFO)
        emulator_log.propagate = False  # its per-response warnings are not test output
        emulator_log.addHandler(_CountRequests(self.log))
        self._server = create_server("127.0.0.1", port, in_memory=True)
        self._server.start()

    def new_bucket(self) -> str:
        from gcp_storage_emulator.handlers import buckets

        name = f"commer-{uuid.uuid4().hex[:12]}"
        buckets.create_bucket(name, self._server._storage)
        return name

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def _s3_server() -> Iterator[_S3Server]:
    server = _S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _gcs_server() -> Iterator[_GcsServer]:
    server = _GcsServer()
    yield server
    server.stop()


@pytest.fixture
def s3_store(_s3_server: _S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """A fresh ``s3://`` bucket on the session's moto server; the environment points fsspec at it."""
    from commer_core import storage

    env = {"AWS_ENDPOINT_URL": _s3_server.endpoint, "AWS_ACCESS_KEY_ID": S3_KEY,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": S3_REGION}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    beam_args = [f"--s3_endpoint_url={_s3_server.endpoint}", f"--s3_access_key_id={S3_KEY}",
                 f"--s3_secret_access_key={S3_SECRET}", f"--s3_region_name={S3_REGION}"]
    previous = storage.configure(None)
    yield ObjectStore("s3", _s3_server.endpoint, _s3_server.new_bucket(), env, beam_args, _s3_server.log,
                      len(_s3_server.log))
    storage.configure(previous)


@pytest.fixture
def gcs_store(_gcs_server: _GcsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """A fresh ``gs://`` bucket on the session's GCS emulator; ``STORAGE_EMULATOR_HOST`` points every client at it."""
    from commer_core import storage

    env = {"STORAGE_EMULATOR_HOST": _gcs_server.endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    previous = storage.configure(None)
    yield ObjectStore("gs", _gcs_server.endpoint, _gcs_server.new_bucket(), env, [], _gcs_server.log,
                      len(_gcs_server.log))
    storage.configure(previous)
