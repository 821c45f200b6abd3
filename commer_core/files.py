"""Local file primitives written once: atomic replace of a file or a directory, and URIs.

Why: artifacts here (checkpoints, training state, converted models, Parquet outputs)
are read by other processes while a writer may be killed at any moment. Each writer
therefore builds its output under a temporary name beside the target (same directory,
so the same filesystem and ``rename`` is atomic) and renames it into place; a reader
sees the old complete version or the new complete version, never a half-written one.

Scope: process crashes (kill, OOM, Ctrl-C). Nothing here calls ``fsync``, so a power
loss may still lose the newest write. Only local paths; object stores (``gs://``,
``s3://``) replace single objects atomically on their own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_FILE_SCHEME = "file://"
#: Suffix of the previous version of a directory while :func:`replace_dir` swaps it.
ASIDE_SUFFIX = ".old"

PathLike = str | os.PathLike[str]


# -- URIs ---------------------------------------------------------------------------


def is_local_uri(uri: PathLike) -> bool:
    """True for plain paths and ``file://`` URIs; False for ``gs://``, ``s3://``, ``hf://`` ..."""
    text = os.fspath(uri)
    return "://" not in text or text.startswith(_FILE_SCHEME)


def local_path(uri: PathLike) -> Path:
    """The filesystem path of a local URI (``file://`` stripped, ``~`` expanded).

    Raises ValueError for a remote URI: callers decide first with :func:`is_local_uri`.
    """
    text = os.fspath(uri)
    if not is_local_uri(text):
        raise ValueError(f"{text!r} is not a local path")
    return Path(text.removeprefix(_FILE_SCHEME)).expanduser()


# -- files --------------------------------------------------------------------------


def _temp_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path``: same filesystem, skipped by ``*.parquet`` globs."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename.

    For writers that want a file name (``pq.write_table``, ``ParquetWriter``). If the
    body raises, ``path`` is untouched and the temporary file is removed. The file is
    created by the writer, so it gets the usual umask permissions (not mkstemp's 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see the old content or all of the new one."""
    with atomic_output(path) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text."""
    return atomic_write_bytes(path, text.encode(encoding))


# -- directories --------------------------------------------------------------------


@contextmanager
def staging_dir(target: PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """A fresh empty directory beside ``target``, removed on exit unless it was moved into place.

    Build the new content in it, then hand it to :func:`replace_dir` or :func:`publish_dir`
    inside the ``with`` block. ``mode`` (e.g. ``0o755``) widens mkdtemp's private 0700.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if mode is not None:
            os.chmod(staging, mode)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def aside_path(target: PathLike) -> Path:
    """Where :func:`replace_dir` keeps the previous version of ``target`` during the swap."""
    target = Path(target)
    return target.with_name(target.name + ASIDE_SUFFIX)


def recover_dir(target: PathLike) -> bool:
    """Undo an interrupted :func:`replace_dir`; True if ``target`` was restored.

    If a crash left ``target`` missing and its previous version aside, move that back.
    If ``target`` exists, a leftover aside copy is stale and is deleted.
    """
    target = Path(target)
    aside = aside_path(target)
    if not aside.exists():
        return False
    if target.exists():
        shutil.rmtree(aside, ignore_errors=True)
        return False
    os.rename(aside, target)
    return True


def replace_dir(staging: PathLike, target: PathLike) -> None:
    """Put the directory ``staging`` at ``target``, never deleting the old ``target`` first.

    Steps: (1) rename the old ``target`` to ``target.old``; (2) rename ``staging`` to
    ``target``; (3) delete ``target.old``. A crash
      - before (1) or after (2) leaves a complete ``target`` (after (2): plus a stale
        ``target.old``, deleted by the next call or :func:`recover_dir`);
      - between (1) and (2) leaves no ``target`` but the old version intact at
        ``target.old``; :func:`recover_dir` (called first by this function) moves it back.
    If (2) fails with an exception, the old version is moved back before it propagates.
    One writer per ``target`` at a time; concurrent writers use :func:`publish_dir`.
    """
    staging, target = Path(staging), Path(target)
    recover_dir(target)
    if not target.exists():
        os.rename(staging, target)
        return
    aside = aside_path(target)
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def publish_dir(staging: PathLike, target: PathLike, *, marker: str) -> Path:
    """Move ``staging`` to ``target`` unless another process already published it; return ``target``.

    For caches that several workers may fill at once (a converted model, a downloaded
    checkpoint): the first rename wins, the others keep the winner's copy. ``marker``
    is a file that only a complete ``target`` holds; without it a failed rename raises.
    """
    staging, target = Path(staging), Path(target)
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / marker).exists():
            raise
    return target
