"""pipelines/user_buckets.py: users split into stable hash buckets, and how many buckets a run gets."""

from __future__ import annotations

import pytest


def test_user_buckets_partition_users_stably_and_size_automatically():
    from pipelines.user_buckets import ROWS_PER_BUCKET, UserBucket, auto_bucket_count

    users = [f"user-{i}" for i in range(1000)] + ["", "ü-ñ", "\udcff"]
    owners = {u: [i for i in range(7) if UserBucket(i, 7).contains(u)] for u in users}
    assert all(len(found) == 1 for found in owners.values())  # every user in exactly one bucket
    sizes = [sum(found == [i] for found in owners.values()) for i in range(7)]
    assert min(sizes) > 100  # spread: about 143 each
    assert owners == {u: [i for i in range(7) if UserBucket(i, 7).contains(u)] for u in users}  # stable
    assert [UserBucket(i, 3).contains(None) for i in range(3)] == [True, False, False]  # bad ids: bucket 0
    assert UserBucket(0, 1).contains(b"\xff") and UserBucket(0, 1).tag == "" and UserBucket(2, 3).tag == "b0002"
    with pytest.raises(ValueError):
        UserBucket(3, 3)
    assert auto_bucket_count(ROWS_PER_BUCKET, "DirectRunner") == 1
    assert auto_bucket_count(ROWS_PER_BUCKET + 1, "DirectRunner") == 2
    assert auto_bucket_count(10**9, "DataflowRunner") == 1
