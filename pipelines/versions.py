"""A store's version directories: which exist, which are committed, pruning, and leftover temp folders.

Split from :mod:`pipelines.commit` (which commits a version and imports these): what may be
removed, and when, is decided here. A version without a manifest, or a ``beam-temp-*`` folder,
may be a concurrent run's work in progress: it is removed only once nothing has been written
into it for :data:`STALE_UNCOMMITTED_SECONDS`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from apache_beam.io.filesystems import FileSystems

from commer_core.files import is_local_uri, local_path
from commer_core.store import MANIFEST_NAME, VERSION_PREFIX

log = logging.getLogger(__name__)


#: An uncommitted (manifest-less) version directory is removed by another run's pruning only
#: once nothing was written into it for this long (its name's start time and its files' times):
#: younger, it may be a concurrent run still computing. Generous on purpose: a leftover costs
#: space only; a run that spends longer than this between two writes must use another --output.
STALE_UNCOMMITTED_SECONDS = 24 * 3600


def match_files(pattern: str) -> list[str]:
    """Paths matching a Beam filesystem pattern, sorted ([] when nothing matches)."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # Beam raises BeamIOError when nothing matches on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


@dataclass(frozen=True)
class VersionInfo:
    """A ``v-*`` directory: committed (holds a manifest)? and when it was last written (epoch seconds)."""

    committed: bool
    last_written: float | None  # newest of its name's start time and its files' times; None: unknown


def version_started(name: str) -> float | None:
    """The start time a version's name carries (``v-YYYYmmddTHHMMSS-...``, UTC), None if it has none."""
    stamp = name[len(VERSION_PREFIX):].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def scan_versions(output: str) -> dict[str, VersionInfo]:
    """Every ``v-*`` directory under ``output`` holding a file (at any depth: Beam's temp files too)."""
    prefix = output.rstrip("/") + "/"
    committed: dict[str, bool] = {}
    written: dict[str, float | None] = {}
    try:
        metadata = FileSystems.match([FileSystems.join(output, VERSION_PREFIX + "*", "**")])[0].metadata_list
    except Exception:
        metadata = []
    for meta in metadata:
        relative = meta.path[len(prefix):] if meta.path.startswith(prefix) else meta.path
        name, _, rest = relative.partition("/")
        if not name.startswith(VERSION_PREFIX) or not rest:
            continue
        committed[name] = committed.get(name, False) or rest == MANIFEST_NAME
        times = [t for t in (written.get(name, version_started(name)), getattr(meta, "last_updated_in_seconds", None))
                 if t is not None]
        written[name] = max(times) if times else None
    for name in committed:
        written.setdefault(name, version_started(name))
    return {name: VersionInfo(committed[name], written[name]) for name in committed}


def list_versions(output: str) -> dict[str, bool]:
    """``{version name: committed?}`` of the ``v-*`` directories under ``output``."""
    return {name: info.committed for name, info in scan_versions(output).items()}


def prune_versions(output: str, current: str, keep_versions: int, previous: str | None = None,
                   now: float | None = None) -> list[str]:
    """Remove committed versions older than ``current`` beyond the ``keep_versions - 1`` most recent,
    and uncommitted versions nothing was written into for :data:`STALE_UNCOMMITTED_SECONDS`.

    ``previous`` (what LATEST named before this commit) is the first one kept; a version
    that has a manifest but was never made LATEST (a run killed just before) comes after
    it. Committed versions newer than ``current`` are never touched. A version without a
    manifest is another run's work in progress until it has been idle for a day (or a
    failed run's leftover): it is never removed younger, whatever its name, so a concurrent
    run's version survives this run's commit. Best effort: leftovers only cost space,
    since readers follow LATEST.
    """
    now = time.time() if now is None else now
    versions = scan_versions(output)
    older = sorted((v for v, info in versions.items() if v < current and info.committed), reverse=True)
    if previous in older:
        older.remove(previous)
        older.insert(0, previous)
    removed = older[max(keep_versions - 1, 0):]
    removed += sorted(
        v for v, info in versions.items()
        if v != current and not info.committed and info.last_written is not None
        and now - info.last_written > STALE_UNCOMMITTED_SECONDS
    )
    for version in removed:
        _delete_tree(FileSystems.join(output, version))
    return sorted(removed)


#: Beam's file sinks write into ``<folder of the prefix>/beam-temp-<prefix>-<uuid>/`` and remove it
#: on success; a killed run leaves it behind (in its version directory, or in the cache).
TEMP_DIR_PREFIX = "beam-temp-"


def _temp_dirs(parents: list[str]) -> dict[str, float | None]:
    """``{beam-temp-* folder directly under one of parents: when last written (epoch s; None: unknown)}``."""
    found: dict[str, float | None] = {}
    for parent in parents:
        if is_local_uri(parent):
            root = str(local_path(parent))
            try:
                names = [n for n in os.listdir(root) if n.startswith(TEMP_DIR_PREFIX)]
            except OSError:
                continue
            for name in names:
                path = os.path.join(root, name)
                times = []
                for folder, _, files in os.walk(path):
                    for entry in [folder, *(os.path.join(folder, f) for f in files)]:
                        try:
                            times.append(os.stat(entry).st_mtime)
                        except OSError:
                            pass
                found[path] = max(times) if times else None
            continue
        base = parent.rstrip("/") + "/"
        try:
            metadata = FileSystems.match([FileSystems.join(parent, TEMP_DIR_PREFIX + "*", "**")])[0].metadata_list
        except Exception:
            continue
        for meta in metadata:
            name = meta.path[len(base):].split("/", 1)[0] if meta.path.startswith(base) else ""
            if name.startswith(TEMP_DIR_PREFIX):
                stamp = getattr(meta, "last_updated_in_seconds", None)
                path = base + name
                found[path] = max(t for t in (found.get(path), stamp) if t is not None) if (
                    found.get(path) is not None or stamp is not None) else None
    return found


def remove_stale_temp_dirs(parents: list[str], run_id: str | None = None, now: float | None = None) -> list[str]:
    """Remove Beam's ``beam-temp-*`` folders directly under ``parents`` (store versions, cache
    directories) that belong to run ``run_id`` (its id is in their path: its version directory, or
    its cache shards' prefix) or that nothing was written into for :data:`STALE_UNCOMMITTED_SECONDS`.

    A younger one may be a concurrent run's live temp folder: never touched. Best effort.
    """
    now = time.time() if now is None else now
    removed = []
    for path, written in sorted(_temp_dirs(parents).items()):
        mine = bool(run_id) and run_id in path
        if mine or (written is not None and now - written > STALE_UNCOMMITTED_SECONDS):
            _delete_tree(path)
            removed.append(path)
    return removed


def _delete_tree(root: str) -> None:
    root = root.rstrip("/")
    try:
        if is_local_uri(root):  # a real directory; file:// stripped (Beam has no filesystem for that scheme)
            path = str(local_path(root))
            if FileSystems.exists(path):
                FileSystems.delete([path])
        elif match_files(root + "/**"):  # object stores: a trailing slash deletes the whole prefix
            FileSystems.delete([root + "/"])
    except Exception as exc:  # leftovers are harmless: readers follow LATEST
        log.warning("could not remove %s: %s", root, exc)
