"""Splitting a run's users into hash buckets that are compressed one after another.

The in-process DirectRunner keeps every shuffle in memory, and this job's shuffles
(the duplicate check, the per-user float64 sums, the store's user ranges) grow with
the number of users: about 40 KB per user with the tiny model, 150 KB with the
default one. Running the users bucket by bucket, each bucket a pipeline of its own
that writes into the same version directory, bounds that memory by the largest
bucket instead of the whole corpus. Distributed runners shuffle outside the workers'
memory and run one bucket.

A user's bucket depends only on its id (a string, used as read), so a user's documents,
its row in a previous store and its cached compressions always meet in the same bucket.
Rows are dropped by the reader, on Arrow tables, before they become Python objects.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

ROWS_PER_BUCKET = 10_000  # input rows (plus previous-store documents) per in-process bucket


@dataclass(frozen=True)
class UserBucket:
    """Bucket ``index`` of ``count``; the only bucket when ``count`` is 1."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"bucket {self.index} of {self.count} does not exist")

    def contains(self, user_id: object) -> bool:
        """Whether this bucket owns ``user_id``; ids that are not text (rows to dead-letter) go to bucket 0."""
        if self.count == 1:
            return True
        if not isinstance(user_id, str):
            return self.index == 0
        return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % self.count == self.index

    def contains_key(self, element: tuple) -> bool:
        """For ``(user_id, ...)`` pairs and ``((user_id, doc_id, sha), value)`` cache entries."""
        key = element[0]
        return self.contains(key[0] if isinstance(key, tuple) else key)

    @property
    def tag(self) -> str:
        """A file-name part that keeps buckets' output files apart ("" for a single bucket)."""
        return "" if self.count == 1 else f"b{self.index:04d}"

    def __str__(self) -> str:
        return f"user bucket {self.index + 1}/{self.count}"


def auto_bucket_count(rows: int, runner: str) -> int:
    """Buckets for ``rows`` rows to process: bounded memory on the in-process runner, 1 elsewhere."""
    if runner != "DirectRunner":
        return 1
    return max(1, math.ceil(rows / ROWS_PER_BUCKET))
