"""commer_core.perf: what the benchmark counts and how it pairs timings with the matmul peak."""

from __future__ import annotations

import pytest

from commer_core import perf
from commer_core.compressor import plan_batches
from tests.helpers import make_compressor


def test_flops_count_the_decoder_without_lora_or_lm_head(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    c = tiny_backbone.model.config
    d, kv = c.hidden_size, c.num_key_value_heads * (d_head := c.hidden_size // c.num_attention_heads)
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * c.intermediate_size + 2 * d  # q, o, k, v, MLP, 2 norms
    params = c.num_hidden_layers * per_layer + d  # + the final norm
    assert d_head * c.num_attention_heads == d
    expected = 2 * params * 10 + 4 * c.num_hidden_layers * 10 * 10 * d
    assert perf.forward_flops(compressor, [10]) == expected


def test_timing_with_a_probe_runs_one_matmul_per_batch(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    docs = [[5 + i] * n for i, n in enumerate([3, 9, 30, 31, 60, 7])]
    probe = perf.MatmulProbe(n=64)
    timing = perf.time_compressor(compressor, docs, batch_tokens=128, probe=probe)
    batches = list(plan_batches([len(x) for x in docs], compressor.num_embeddings, 128))
    assert len(batches) > 1
    assert probe.flops == 2 * 64**3 * len(batches)
    assert timing.probe_gflops == pytest.approx(probe.gflops) and timing.probe_gflops > 0
    assert timing.docs == len(docs) and timing.tokens == sum(len(x) + compressor.num_embeddings for x in docs)
    assert timing.computed_tokens >= timing.tokens and timing.seconds > 0
