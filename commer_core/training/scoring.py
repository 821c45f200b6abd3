"""Scoring examples under a method: summed NLL and target tokens, and the perplexity formula."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from commer_core.backbone import native_bf16
from commer_core.generator import perplexity
from commer_core.training.examples import PreparedExample
from commer_core.training.methods import Method


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on ``device`` when ``enabled``, else a no-op context.

    Warns (once per process) where the device has no native bf16: there the flag slows every
    step down many times over instead of speeding it up.
    """
    if not enabled:
        return contextlib.nullcontext()
    if not native_bf16(device.type):
        _warn_emulated_bf16()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _warn_emulated_bf16() -> None:
    warnings.warn("--bf16 on a CPU without AVX512-BF16 or AMX: torch emulates bfloat16 there and its matmuls run "
                  "tens of times slower than float32; drop --bf16 on this machine", RuntimeWarning, stacklevel=3)


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size``, in order."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def score_examples(
    method: Method, examples: Sequence[PreparedExample], *, batch_size: int = 8, bf16: bool = False
) -> list[tuple[float, int]]:
    """(summed NLL, target tokens) per example under ``method``, in eval mode."""
    method.eval()
    out: list[tuple[float, int]] = []
    for batch in batches(examples, batch_size):
        with autocast(method.generator.device, bf16):
            prefixes = method.prefixes(batch)
            nll, counts = method.generator.target_nll(prefixes, [e.input for e in batch], [e.target for e in batch])
        out.extend((float(a), int(b)) for a, b in zip(nll.float().cpu(), counts.cpu()))
    return out


def corpus_perplexity(scores: Sequence[tuple[float, int]]) -> float:
    """exp(total NLL / total target tokens): the token-weighted perplexity of a set."""
    return perplexity(sum(nll for nll, _ in scores), sum(n for _, n in scores))
