"""Requests per lookup against a local S3 server (moto), for ``bench --serving``.

A store in an object store is billed and delayed per request; this counts, at the server,
the requests ``open_store``, ``get`` and ``PersonalizedLM.refresh``'s check make. Needs the
test extra (``moto[server]``, ``s3fs``); without it the row is skipped with a note.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from commer_core.store import LATEST_NAME

_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def counting_s3() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A moto S3 server on a free 127.0.0.1 port whose requests are logged; (endpoint, log)."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server.start()
    log: list[tuple[str, str]] = []
    wsgi = server._server  # werkzeug's server: count around its WSGI app
    app = wsgi.app
    wsgi.app = lambda environ, start: log.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))) or app(
        environ, start)
    saved = {k: os.environ.get(k) for k in (*_CREDENTIALS, "AWS_ENDPOINT_URL")}
    os.environ.update(_CREDENTIALS, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        server.stop()


def _count(log: list, fn: Callable[[], Any]) -> tuple[int, Any]:
    start = len(log)
    result = fn()
    return len(log) - start, result


def s3_requests(store_dir: Path, users: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Requests of open, single/missing/batch-32 get and an unchanged refresh check on a copy of ``store_dir``."""
    try:
        import boto3
        import s3fs  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"no S3 test server ({exc.name} is not installed: pip install 'commer-pipeline[test]')"}
    from commer_core.store import open_store
    from jobs.bench.serving_store import user_id

    say(f"bench: serving: requests per lookup on a local S3 server ({users:,} users) ...")
    with counting_s3() as (endpoint, log):
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="commer-bench")
        client = boto3.client("s3", endpoint_url=endpoint)
        for path in sorted(p for p in store_dir.rglob("*") if p.is_file()):
            client.upload_file(str(path), "commer-bench", f"store/{path.relative_to(store_dir)}")
        opened, store = _count(log, lambda: open_store("s3://commer-bench/store"))
        single = [_count(log, lambda i=i: store.get([user_id(i * 7919 % users)]))[0] for i in range(20)]
        missing = _count(log, lambda: store.get(["absent-user"]))[0]
        batch = _count(log, lambda: store.get([user_id(i * 104729 % users) for i in range(32)]))[0]
        unchanged = _count(log, store.latest_version)[0]
        methods = sorted({m for m, _ in log})
    return {"users": users, "open": opened, "single_max": max(single), "single_min": min(single), "missing": missing,
            "batch32": batch, "refresh_unchanged": unchanged, "methods": methods, "latest": LATEST_NAME}
