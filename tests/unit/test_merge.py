import numpy as np
import pytest
import torch

from commer_core.merge import MeanPool, concat_pool, mean_pool


@pytest.fixture
def docs():
    return np.random.default_rng(0).normal(size=(7, 3, 5)).astype(np.float32) * 40


def test_mean_is_order_invariant(docs):
    a = MeanPool.empty(3, 5)
    b = MeanPool.empty(3, 5)
    for x in docs:
        a.add(x)
    for x in docs[::-1]:
        b.add(x)
    np.testing.assert_allclose(a.mean(), b.mean(), atol=1e-5)
    np.testing.assert_allclose(a.mean(), docs.astype(np.float64).mean(0), atol=1e-5)


def test_incremental_merge_equals_the_full_mean(docs):
    full = MeanPool.empty(3, 5)
    for x in docs:
        full.add(x)
    yesterday = MeanPool.empty(3, 5)
    for x in docs[:4]:
        yesterday.add(x)
    stored_mean, stored_count = yesterday.mean(), yesterday.count
    tonight = MeanPool.from_mean(stored_mean, stored_count)
    for x in docs[4:]:
        tonight.add(x)
    assert tonight.count == full.count
    np.testing.assert_allclose(tonight.mean(), full.mean(), atol=1e-4)


def test_merging_partial_pools_and_removing_a_document(docs):
    left, right = MeanPool.empty(3, 5), MeanPool.empty(3, 5)
    for x in docs[:3]:
        left.add(x)
    for x in docs[3:]:
        right.add(x)
    merged = left.merge(right)
    merged.add(docs[0], weight=-1)
    np.testing.assert_allclose(merged.mean(), docs[1:].astype(np.float64).mean(0), atol=1e-5)


def test_empty_pool_has_no_mean_and_cannot_go_negative():
    pool = MeanPool.empty(2, 2)
    with pytest.raises(ValueError):
        pool.mean()
    with pytest.raises(ValueError):
        pool.add(np.zeros((2, 2)), weight=-1)


def test_torch_merges_match_shapes_and_the_numpy_pool(docs):
    t = torch.from_numpy(docs)
    assert mean_pool(t).shape == (3, 5)
    assert concat_pool(t).shape == (21, 5)
    pool = MeanPool.empty(3, 5)
    for x in docs:
        pool.add(x)
    np.testing.assert_allclose(mean_pool(t).numpy(), pool.mean(), atol=1e-4)
