"""Named pause points, so crash and concurrency tests can stop the job at an exact step.

With ``COMMER_PAUSE_AT=<name>`` in its environment, a process reaching
``pause_point(<name>)`` touches ``$COMMER_PAUSE_MARKER`` (when set) and sleeps: until
killed, or, with ``COMMER_PAUSE_RESUME=<file>``, until that file exists, and then goes on
(a point reached again after that does not stop). Unset, a pause point is a dictionary
lookup: nothing else.
"""

from __future__ import annotations

import os
import time

PAUSE_ENV = "COMMER_PAUSE_AT"
MARKER_ENV = "COMMER_PAUSE_MARKER"
RESUME_ENV = "COMMER_PAUSE_RESUME"
#: Where the job can be paused: writing the first embeddings shard, after every shard is
#: written but before the version's manifest, after the manifest but before ``LATEST``.
PAUSE_POINTS = ("write_shard", "before_manifest", "before_latest")
#: More points for the concurrency and interrupt tests: after each user bucket's pipeline has
#: finished; after ``LATEST`` names the new version (still under the commit lock); while the
#: CLI imports a command (before any run exists).
SYNC_POINTS = ("bucket_done", "after_latest", "command_import")


def pause_point(name: str) -> None:
    """Stop here (for a crash test) when ``COMMER_PAUSE_AT`` names this point."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        with open(marker, "w") as fh:
            fh.write(f"{name} {os.getpid()}\n")
    resume = os.environ.get(RESUME_ENV)
    while not (resume and os.path.exists(resume)):  # until killed, or told to go on
        time.sleep(0.05 if resume else 60)
