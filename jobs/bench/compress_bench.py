"""The compressor benchmark of ``commer-pipeline bench``, step by step (the command parses, this measures).

All figures of one report come from one run on the same documents, so ratios hold even
when the machine's absolute speed drifts. On CUDA the same run measures the bf16 path
against the card's measured and published matmul peaks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.bench import measure, perf
from jobs.bench.measure import PEAK_MATMUL_N

DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16"}
BF16_DOCS = 512  # bf16 against fp32 on the first mix's first documents (fp32 is slow on a GPU)


@dataclass
class CompressBench:
    """What one run measures with: the compressor, its device and dtype, the token budgets."""

    compressor: Any
    ckpt: str
    dev: Any
    run_dtype: Any
    budgets: list[int]
    max_batch: int
    say: Callable[[str], None]
    peaks: list[float] = field(default_factory=list)
    sweeps: dict[str, dict[int, Any]] = field(default_factory=dict)

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[str(self.run_dtype).removeprefix("torch.")]

    def peak(self) -> float:
        """A standalone matmul probe; every one is kept (the run's best is the stricter yardstick)."""
        value = perf.matmul_peak_gflops(self.run_dtype, n=PEAK_MATMUL_N[self.dev.type], device=self.dev)
        self.peaks.append(value)
        return value

    def probe(self) -> Any:
        """On a CPU each timing carries the peak probed between its own batches (the same machine state)."""
        return perf.MatmulProbe(self.run_dtype, PEAK_MATMUL_N[self.dev.type], self.dev) if self.dev.type == "cpu" \
            else None

    def fastest_budget(self, mix: str) -> int:
        return min(self.sweeps[mix], key=lambda b: self.sweeps[mix][b].seconds)


def setup(device: str, dtype: str, batch_tokens: tuple[int, ...], max_batch_size: int | None,
          checkpoint: str | None, base_model: str | None, workdir: str, say: Callable[[str], None]) -> CompressBench:
    """Load the compressor (a checkpoint, or an untrained one on ``base_model``) on the chosen device and dtype."""
    import torch

    from commer_core.backbone import quiet_transformers, resolve_device
    from commer_core.checkpoint import load_checkpoint
    from commer_core.defaults import default_batch_tokens, default_checkpoint_path, default_max_batch_size

    quiet_transformers()
    torch.set_num_threads(os.cpu_count() or 1)
    dev = resolve_device(device)
    run_dtype = torch.bfloat16 if dtype == "bfloat16" or (dtype == "auto" and dev.type == "cuda") else torch.float32
    if base_model:
        compressor, ckpt = measure.untrained_compressor(base_model, dev, run_dtype, workdir)
    else:
        ckpt = str(checkpoint or default_checkpoint_path())
        compressor = load_checkpoint(ckpt, device=dev, dtype=run_dtype)
    return CompressBench(compressor, ckpt, dev, run_dtype, sorted(set(batch_tokens)) or [default_batch_tokens(dev.type)],
                         max_batch_size or default_max_batch_size(dev.type), say)


def report_head(b: CompressBench, label: str, n_docs: int) -> dict[str, Any]:
    """The report's fixed fields, with the first peak probe."""
    peak = b.peak()
    b.say(f"bench: matmul peak {b.dtype_name} {peak:.1f} GFLOP/s on {measure.machine_name(b.dev)}")
    return {"machine": measure.machine_name(b.dev), "software": measure.software_versions(), "device": b.dev.type,
            "dtype": b.dtype_name, "threads": os.cpu_count() or 1, "checkpoint": label,
            "model": b.compressor.backbone.name, "matmul_n": PEAK_MATMUL_N[b.dev.type], "docs_per_mix": n_docs,
            "batch_tokens": b.budgets[0] if len(b.budgets) == 1 else b.budgets, "max_batch_size": b.max_batch,
            "matmul_peak_gflops": peak, "mixes": {}, "datasheet_peak_gflops": perf.datasheet_peak_gflops(b.dev, b.run_dtype)}


def documents(b: CompressBench, mixes: tuple[str, ...], n_docs: int, seed: int = 1) -> dict[str, list[list[int]]]:
    """Token ids per mix: real text at the mix's own lengths, whatever the checkpoint truncates at."""
    from commer_core.compressor import tokenize_documents

    out = {}
    for mix in mixes:
        ids = perf.make_documents(mix, n_docs, len(b.compressor.tokenizer), seed=seed)
        texts = [b.compressor.tokenizer.decode(x) for x in ids]
        out[mix] = [d.ids for d in tokenize_documents(b.compressor.tokenizer, texts, perf.MAX_MIX_TOKENS)]
    return out


def naive_loop(b: CompressBench, docs_by_mix: dict[str, list[list[int]]], naive_docs: int | None) -> dict[str, Any]:
    naive = {}
    for mix, docs in docs_by_mix.items():
        docs = docs[:naive_docs] if naive_docs else docs
        b.say(f"bench: {mix}: naive loop over {len(docs)} documents ...")
        naive[mix] = perf.time_naive(b.compressor, docs, probe=b.probe())
    return naive


def bf16_check(b: CompressBench, docs_by_mix: dict[str, list[list[int]]]) -> dict[str, Any]:
    first = next(iter(docs_by_mix))
    return measure.bf16_vs_fp32(b.compressor, docs_by_mix[first][:BF16_DOCS], b.fastest_budget(first), b.max_batch,
                                b.dev)


def time_core(b: CompressBench, docs_by_mix: dict[str, list[list[int]]], compile_layers: bool,
              report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """commer_core batched (every token budget; fastest kept), then with compiled layers if asked."""
    variants: dict[str, dict[str, Any]] = {"core": {}, "core_compiled": {}} if compile_layers else {"core": {}}
    b.sweeps = {mix: {} for mix in docs_by_mix}
    first = next(iter(docs_by_mix))
    for variant, timings in variants.items():
        if variant == "core_compiled":
            report["bf16"] = bf16_check(b, docs_by_mix)  # eager, before compiling: a dtype change recompiles
            b.say("bench: compiling the decoder layers (torch.compile) ...")
            b.compressor.compile_layers()
            b.compressor.compress_tokenized(docs_by_mix[first][:8], batch_tokens=b.budgets[0])
        for mix, docs in docs_by_mix.items():
            for budget in b.budgets if variant == "core" else [b.fastest_budget(mix)]:
                b.say(f"bench: {mix}: commer_core batched, {budget} tokens per pass"
                      f"{', compiled layers' if variant == 'core_compiled' else ''} ...")
                b.peak()
                timing = perf.best_of(lambda: perf.time_compressor(
                    b.compressor, docs, batch_tokens=budget, max_batch_size=b.max_batch, probe=b.probe()), 2)
                if variant == "core":
                    b.sweeps[mix][budget] = timing
            timings[mix] = b.sweeps[mix][b.fastest_budget(mix)] if variant == "core" else timing
    return variants


def summarize(b: CompressBench, report: dict[str, Any], naive: dict[str, Any], variants: dict[str, dict[str, Any]]) -> None:
    """Per-mix rows against the run's best peak, and the report's headline figures."""
    peak = max(b.peaks)
    report.update(matmul_peak_gflops=peak, matmul_peak_samples=list(b.peaks), compiled="core_compiled" in variants)
    b.say(f"bench: matmul peak {b.dtype_name}, best of {len(b.peaks)} measurements: {peak:.1f} GFLOP/s")
    for mix in naive:
        rows = {"naive": measure.timing_row(naive[mix], peak),
                **{v: measure.timing_row(t[mix], peak) for v, t in variants.items()}}
        rows["core"]["batch_tokens"] = b.fastest_budget(mix)
        report["mixes"][mix] = {**rows, "core_vs_naive": variants["core"][mix].docs_per_s / naive[mix].docs_per_s}
        if len(b.budgets) > 1:
            report["mixes"][mix]["sweep"] = {str(k): measure.timing_row(t, peak) for k, t in b.sweeps[mix].items()}
    mixes = report["mixes"].values()
    first = next(iter(mixes))
    report.update(naive_docs_per_s=first["naive"]["docs_per_s"], core_docs_per_s=first["core"]["docs_per_s"],
                  core_fraction_of_peak=min(m["core"]["fraction_of_peak"] for m in mixes),
                  core_fraction_of_best_peak=min(m["core"]["fraction_of_best_peak"] for m in mixes),
                  padding_fraction=report["mixes"].get("lognormal", first)["core"]["padding_fraction"])
    sheet = report["datasheet_peak_gflops"]
    if sheet:
        report["core_mfu"] = min(m["core"]["gflops"] for m in mixes) / sheet
    if "core_compiled" in variants:
        report["core_compiled_docs_per_s"] = first["core_compiled"]["docs_per_s"]
        report["core_compiled_fraction_of_peak"] = min(m["core_compiled"]["fraction_of_peak"] for m in mixes)
        if sheet:
            report["core_compiled_mfu"] = min(m["core_compiled"]["gflops"] for m in mixes) / sheet


def pipeline_rows(b: CompressBench, report: dict[str, Any], mix: str, n_docs: int) -> None:
    """The Beam job in-process and with 2 worker processes against commer_core, on ``mix``."""
    ids = perf.make_documents(mix, n_docs, len(b.compressor.tokenizer), seed=2)
    texts = [b.compressor.tokenizer.decode(x) for x in ids]
    report["pipeline"] = measure.pipeline_vs_core(b.ckpt, mix, texts, b.budgets[0], b.say, device=b.dev.type)
    report.update(pipeline_docs_per_s=report["pipeline"]["in_process"]["marginal_docs_per_s"],
                  pipeline_mp_docs_per_s=report["pipeline"]["multi_process"]["marginal_docs_per_s"])
