"""The local commit lock: an ``flock`` on ``OUTPUT/LATEST.lock`` (split from :mod:`pipelines.commit`).

Why a kernel lock: it is released when its holder exits or is killed, so a killed run
never leaves a lock to clear by hand. Local and POSIX network filesystems only; object
stores swap ``LATEST`` by a conditional write instead (:func:`pipelines.commit.swap_latest`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from commer_core.files import is_local_uri, local_path
from commer_core.store import LATEST_NAME

#: The commit lock's file, beside LATEST (local filesystems only).
LOCK_NAME = LATEST_NAME + ".lock"
#: How long a commit waits for another run's commit (and pruning) to release the lock.
LOCK_WAIT_SECONDS = 300.0


@contextmanager
def commit_lock(output: str, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Exclusive commit lock of the store at ``output``: ``flock`` on ``OUTPUT/LATEST.lock``.

    Local filesystems only (a no-op elsewhere: object stores swap ``LATEST`` by a conditional
    write instead, see :func:`swap_latest`). The kernel drops
    the lock when the holder exits or is killed, so there is no stale lock to detect. The
    file is removed on release; a waiter that locked a file removed meanwhile tries again
    (it checks that the path still names the inode it locked).
    """
    if not is_local_uri(output):
        yield
        return
    import fcntl

    path = os.path.join(str(local_path(output)), LOCK_NAME)
    deadline = time.monotonic() + wait_seconds
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise _commit_error(
                            f"another run has held the commit lock {path} for over {wait_seconds:.0f} s "
                            f"({_read_holder(fd)}); nothing committed"
                        ) from None
                    time.sleep(0.05)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder before us removed this file: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(timezone.utc).isoformat()}\n"
                 .encode())
        yield
    finally:
        try:
            os.unlink(path)  # before unlocking: a waiter then sees the path gone and retries
        except OSError:
            pass
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "holder unknown"
    except OSError:
        return "holder unknown"


def _commit_error(message: str) -> Exception:
    from pipelines.commit import CommitError  # the commit's error class; imported late (commit imports this)

    return CommitError(message)
