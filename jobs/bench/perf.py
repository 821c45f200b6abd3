"""Measuring compression speed against the machine's own limits (the timings of `commer-pipeline bench`).

Throughput is reported as ratios taken in one run (against a naive baseline and
against a matmul peak probed in the same process, same dtype), because absolute
times on shared machines drift.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from commer_core.compressor import Compressor, plan_batches

MIXES = ("tweet", "article", "lognormal")
MAX_MIX_TOKENS = 512  # the bench compresses documents at their mix's length, not a checkpoint's truncation


@dataclass(frozen=True)
class Timing:
    """One measured method over one document set."""

    seconds: float
    docs: int
    tokens: int  # real (unpadded) tokens including the k compression slots
    computed_tokens: int  # tokens actually run, padding included
    flops: float
    probe_gflops: float | None = None  # matmul peak probed between this timing's batches (see MatmulProbe)

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / max(self.computed_tokens, 1)


def matmul_peak_gflops(
    dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5, device: str | torch.device = "cpu"
) -> float:
    """Best-of-N GFLOP/s of an n^3 matmul: the ceiling a dense forward can approach."""
    probe = MatmulProbe(dtype, n, device)
    best = math.inf
    for _ in range(repeats):
        seconds = probe.seconds
        probe()
        best = min(best, probe.seconds - seconds)
    return 2 * n**3 / best / 1e9


class MatmulProbe:
    """One n^3 matmul at a time, run between a timing's batches: a peak measured alongside it.

    On a shared machine the speed of the whole box drifts by tens of percent within
    seconds (neighbours, clocks). A peak probed once, or the best of a few probes, is
    then compared with a timing taken under other conditions; probes interleaved with
    the timed batches see the same conditions, so their ratio measures the code alone.
    On a GPU each probe waits for the device before and after its matmul.
    """

    def __init__(self, dtype: torch.dtype = torch.float32, n: int = 2048, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.a = torch.randn(n, n, dtype=dtype, device=self.device)
        self.b = torch.randn(n, n, dtype=dtype, device=self.device)
        self.flops = 0.0
        self.seconds = 0.0
        self.a @ self.b  # warm-up: library load, kernel choice
        synchronize(self.device)

    def __call__(self) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        self.a @ self.b
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.flops += 2 * self.a.shape[0] ** 3

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds else math.nan


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a host clock read afterwards covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Dense bf16 tensor-core peaks from NVIDIA's datasheets, in GFLOP/s: MFU's usual yardstick.
DATASHEET_BF16_GFLOPS = {"H100 80GB HBM3": 989_400.0, "H100 PCIe": 756_500.0, "H100 NVL": 835_500.0,
                         "H200": 989_400.0, "A100": 312_000.0}


def datasheet_peak_gflops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The card's published dense bf16 peak, where this table knows the card; else None."""
    if device.type != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in DATASHEET_BF16_GFLOPS.items() if key in name), None)


def make_documents(mix: str, n: int, vocab_size: int, *, seed: int = 0, lo: int = 20, hi: int = 500) -> list[list[int]]:
    """Token-id documents whose lengths follow a mix: tweet (20-60), article (200-400), lognormal (lo-hi)."""
    rng = np.random.default_rng(seed)
    if mix == "tweet":
        lengths = rng.integers(20, 61, n)
    elif mix == "article":
        lengths = rng.integers(200, 401, n)
    elif mix == "lognormal":
        lengths = np.clip(np.exp(rng.normal(math.log(90), 0.8, n)), lo, hi).astype(int)
    else:
        raise ValueError(f"unknown document mix {mix!r}; choose one of {MIXES}")
    # ids from the common part of the vocabulary: realistic embeddings, no special tokens
    return [rng.integers(100, min(vocab_size, 20000), int(length)).tolist() for length in lengths]


def forward_flops(compressor: Compressor, seq_lens: Sequence[int]) -> float:
    """2 x the decoder's non-embedding parameters x tokens, plus attention (QK^T and AV: 4 x L^2 x d per layer).

    Counts what compression needs: no LM head (the naive loop runs one, uncounted), and
    not the LoRA's own parameters, which the compress workers fold into the weights (the
    naive loop runs them unfolded, about 1% more work than counted).
    """
    config = compressor.backbone.model.config
    decoder = compressor.peft_model.get_base_model().get_decoder()
    embedding = decoder.get_input_embeddings().weight.numel()
    params = sum(p.numel() for name, p in decoder.named_parameters() if "lora_" not in name) - embedding
    layers, d = config.num_hidden_layers, config.hidden_size
    return float(sum(2 * params * length + 4 * layers * length * length * d for length in seq_lens))


def time_compressor(
    compressor: Compressor,
    docs: Sequence[Sequence[int]],
    *,
    batch_tokens: int,
    max_batch_size: int = 64,
    probe: MatmulProbe | None = None,
) -> Timing:
    """commer_core's batched path: length-sorted token-budget batches, as ``compress_tokenized`` runs them.

    With a ``probe``, one matmul runs after every batch, outside the timed work, and the
    Timing carries the peak those probes saw.
    """
    k = compressor.num_embeddings
    batches = list(plan_batches([len(d) for d in docs], k, batch_tokens, max_batch_size))
    computed = sum(len(b) * (max(len(docs[i]) for i in b) + k) for b in batches)
    compressor.compress_tokenized(docs[: min(4, len(docs))], batch_tokens=batch_tokens)  # warm-up
    if probe is None:  # compress_tokenized ends with a copy to the host, so the clock covers GPU work
        start = time.perf_counter()
        compressor.compress_tokenized(docs, batch_tokens=batch_tokens, max_batch_size=max_batch_size)
        return _timing(compressor, docs, time.perf_counter() - start, computed)
    out = torch.empty(len(docs), k, compressor.hidden_size)  # the copy-out compress_tokenized does, timed too
    seconds = 0.0
    with torch.inference_mode():
        for batch in batches:
            start = time.perf_counter()
            out[batch] = compressor([docs[i] for i in batch]).float().cpu()
            seconds += time.perf_counter() - start
            probe()
    return replace(_timing(compressor, docs, seconds, computed), probe_gflops=probe.gflops)


def time_naive(compressor: Compressor, docs: Sequence[Sequence[int]], *, probe: MatmulProbe | None = None) -> Timing:
    """What a user writes first: one document at a time through the full causal LM, LM head included.

    With a ``probe``, one matmul runs after every document, outside the timed work.
    """
    k = compressor.num_embeddings
    model = compressor.peft_model
    slots = compressor.compression_embeddings.detach()
    embed = model.get_input_embeddings()

    def one(ids: Sequence[int]) -> torch.Tensor:
        x = torch.cat([embed(torch.tensor([list(ids)], device=slots.device))[0], slots.to(embed.weight.dtype)])[None]
        out = model(inputs_embeds=x, output_hidden_states=True)
        return compressor.scale_prompt(out.hidden_states[-1][0, -k:]).float().cpu()  # to the host, as batched

    with torch.inference_mode():
        one(docs[0])
        seconds = 0.0
        for ids in docs:
            start = time.perf_counter()
            one(ids)
            seconds += time.perf_counter() - start
            if probe is not None:
                probe()
    timing = _timing(compressor, docs, seconds, sum(len(d) + k for d in docs))
    return timing if probe is None else replace(timing, probe_gflops=probe.gflops)


def _timing(compressor: Compressor, docs: Sequence[Sequence[int]], seconds: float, computed: int) -> Timing:
    """FLOPs count useful work only (real tokens): padding shows up as a lower fraction of peak."""
    k = compressor.num_embeddings
    lengths = [len(d) + k for d in docs]
    return Timing(seconds, len(docs), sum(lengths), computed, forward_flops(compressor, lengths))


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB.

    Linux's ``VmHWM`` when available: ``ru_maxrss`` survives ``exec``, so a child started
    by a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return own / 2**20


def best_of(fn: Callable[[], Timing], repeats: int) -> Timing:
    """Fastest of several runs: the least disturbed by other load on a shared machine."""
    return min((fn() for _ in range(max(1, repeats))), key=lambda t: t.seconds)
