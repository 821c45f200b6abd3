"""Requests a service makes on an object store (counted at the local S3 / GCS server): open, get, refresh."""

from __future__ import annotations

import numpy as np
import pytest

from commer_core.storage import filesystem
from commer_core.store import open_store
from jobs.bench.serving_store import VERSION, build_store, user_id

USERS, K, D = 2_000, 4, 8


@pytest.fixture(params=["s3_store", "gcs_store"])
def bucket(request):
    return request.getfixturevalue(request.param)


def _upload(local, bucket, prefix: str) -> str:
    fs, root = filesystem(bucket.uri(prefix))
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.pipe_file(f"{root}/{path.relative_to(local)}", path.read_bytes())
    return bucket.uri(prefix)


def _requests_of(bucket, fn):
    start = len(bucket.requests)
    result = fn()
    return bucket.requests[start:], result


def test_get_is_one_ranged_read_and_refresh_reads_only_the_index(bucket, tmp_path):
    local = build_store(tmp_path / "store", USERS, K, D, files=2)
    uri = _upload(local, bucket, "store")

    sent, store = _requests_of(bucket, lambda: open_store(uri))
    assert [m for m, _ in sent] == ["GET"] * 4, sent  # LATEST, manifest, the two index files; nothing listed
    assert not any("embeddings-" in p for _, p in sent)

    sent, got = _requests_of(bucket, lambda: store.get([user_id(1234)]))
    assert len(sent) == 1 and "embeddings-" in sent[0][1], sent  # acceptance: <= 2 after open
    expected = open_store(local).get([user_id(1234)])[user_id(1234)]
    np.testing.assert_array_equal(got[user_id(1234)][0], expected[0])

    sent, got = _requests_of(bucket, lambda: store.get(["nobody"]))
    assert sent == [] and got == {}

    sent, version = _requests_of(bucket, store.latest_version)
    assert version == VERSION and len(sent) == 1 and "LATEST" in sent[0][1]

    newer = build_store(tmp_path / "newer", USERS + 1, K, D, seed=3)
    (newer / "v-bench").rename(newer / "v-newer")
    (newer / "LATEST").write_text("v-newer\n")
    _upload(newer, bucket, "store")
    sent, fresh = _requests_of(bucket, lambda: open_store(uri))
    assert fresh.version == "v-newer" and len(fresh) == USERS + 1
    assert len(sent) == 4 and not any("embeddings-" in p for _, p in sent)
