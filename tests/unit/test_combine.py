"""pipelines/combine.py: the per-user mean-pool CombineFn, its accumulator coder and user keys."""

from __future__ import annotations

import copy

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from commer_core.merge import MeanPool
from pipelines.combine import MeanPoolCoder, MeanPoolCombineFn, user_key


def _allclose_pairs(expected, atol=1e-6):
    """equal_to for (key, (array, count)) elements, arrays compared with numpy.allclose."""

    def equals_fn(e, a):
        return e[0] == a[0] and e[1][1] == a[1][1] and np.allclose(e[1][0], a[1][0], atol=atol)

    return equal_to(expected, equals_fn=equals_fn)


def test_combine_fn_matches_commer_core_mean_pool():
    rng = np.random.default_rng(0)
    docs = {"a": rng.normal(size=(5, 2, 3)).astype(np.float32), "b": rng.normal(size=(1, 2, 3)).astype(np.float32)}
    expected = []
    for user, arrays in docs.items():
        pool = MeanPool.empty(2, 3)
        for x in arrays:
            pool.add(x)
        expected.append((user, (pool.mean(), len(arrays))))
    elements = [(user, x) for user, arrays in docs.items() for x in arrays]
    with BeamTestPipeline() as p:
        out = p | beam.Create(elements) | "MeanPoolPerUser" >> beam.CombinePerKey(MeanPoolCombineFn(2, 3))
        assert_that(out, _allclose_pairs(expected))


def test_merge_accumulators_mutates_only_the_first():
    fn = MeanPoolCombineFn(2, 2)
    accs = [fn.add_input(fn.create_accumulator(), np.full((2, 2), float(i), np.float32)) for i in range(1, 4)]
    before = [copy.deepcopy(a) for a in accs]
    merged = fn.merge_accumulators(accs)
    assert merged is accs[0]
    for a, b in zip(accs[1:], before[1:]):
        assert a.count == b.count and np.array_equal(a.total, b.total)
    mean, n = fn.extract_output(merged)
    assert n == 3 and mean.dtype == np.float32 and np.allclose(mean, 2.0)
    assert fn.merge_accumulators([]).count == 0
    with pytest.raises(ValueError, match="shape"):
        fn.add_input(fn.create_accumulator(), np.zeros((3, 2)))


def test_accumulator_coder_round_trips_float64_exactly():
    pool = MeanPool(np.random.default_rng(1).normal(size=(3, 4)), 7)
    coder = MeanPoolCombineFn(3, 4).get_accumulator_coder()
    assert isinstance(coder, MeanPoolCoder) and coder.is_deterministic()
    back = coder.decode(coder.encode(pool))
    assert back.count == 7 and back.total.dtype == np.float64 and np.array_equal(back.total, pool.total)
    back.total += 1  # decoded accumulators must be writable (add_input mutates them)


def test_user_keys_must_be_plain_str():
    assert user_key("u1") == "u1"
    with pytest.raises(TypeError, match="plain str"):
        user_key(np.str_("u1"))
    with pytest.raises(TypeError):
        user_key(1)


def test_a_user_with_100k_documents_pools_into_one_fixed_size_accumulator():
    """The per-user mean is a (sum, count) combine: no step holds a user's documents.

    100,000 documents through the CombineFn as a runner drives it (lifted: partial
    accumulators per "worker", encoded across the shuffle, merged): the accumulator stays
    one float64 k x d sum and a count, its encoding the same size at 10 documents and at
    100,000, and the mean is exact for these integer-valued documents.
    """
    k, d, n, workers = 4, 8, 100_000, 7
    fn, coder = MeanPoolCombineFn(k, d), MeanPoolCombineFn(k, d).get_accumulator_coder()
    docs = [np.full((k, d), float(v), np.float32) for v in range(97)]  # document i is docs[i % 97]
    partials = [fn.create_accumulator() for _ in range(workers)]
    sizes = set()
    for i in range(n):
        w = i % workers
        partials[w] = fn.add_input(partials[w], docs[i % 97])
        if i in (9, n - 1):
            sizes.add(len(coder.encode(partials[w])))
    shuffled = [coder.decode(coder.encode(acc)) for acc in partials]
    merged = fn.merge_accumulators(shuffled)
    mean, count = fn.extract_output(merged)
    assert count == n and merged.total.shape == (k, d) and merged.total.dtype == np.float64
    assert sizes == {len(coder.encode(fn.create_accumulator()))}  # size independent of the document count
    expected = sum(i % 97 for i in range(n)) / n
    assert mean.shape == (k, d) and np.allclose(mean, expected, rtol=0, atol=1e-5)
