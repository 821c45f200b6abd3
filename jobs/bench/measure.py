"""The measurements of `commer-pipeline bench` beyond the compressor timings (jobs.bench.perf).

bf16 against fp32, the Beam job against commer_core, batched generation, the job at
growing sizes, and the machine and software a report names. Beam, transformers and
the checkpoint code are imported where a measurement needs them.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.bench import perf
from jobs.bench.scaling import run_sizes

PEAK_MATMUL_N = {"cpu": 2048, "cuda": 8192}  # big enough to reach the device's peak, small enough to repeat


def untrained_compressor(base_model: str, device: Any, dtype: Any, folder: str) -> tuple[Any, str]:
    """A fresh compressor (default settings), also saved as a checkpoint for the pipeline rows to load.

    A ``random:`` backbone is rebuilt from its fixed seed wherever it loads, so the
    pipeline's workers see the same weights.
    """
    from commer_core.backbone import load_backbone
    from commer_core.checkpoint import save_checkpoint
    from commer_core.compressor import Compressor
    from commer_core.config import CompressorConfig

    compressor = Compressor(load_backbone(base_model, device=device, dtype=dtype), CompressorConfig(base_model=base_model))
    path = Path(folder) / "untrained"
    save_checkpoint(compressor, path, trained=False)
    return compressor, str(path)


def timing_row(t: Any, best_peak: float) -> dict[str, float]:
    """One timing's figures; its fraction of peak is against the peak probed alongside it, when probed."""
    alongside = t.probe_gflops or best_peak
    return {"docs_per_s": t.docs_per_s, "tokens_per_s": t.tokens_per_s, "gflops": t.gflops,
            "peak_alongside_gflops": alongside, "fraction_of_peak": t.gflops / alongside,
            "fraction_of_best_peak": t.gflops / best_peak, "padding_fraction": t.padding_fraction,
            "seconds": t.seconds}


def machine_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} host cores"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def software_versions() -> str:
    """The library versions behind the figures: a new torch or transformers moves them by several percent."""
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}"


def bf16_vs_fp32(compressor: Any, docs: list[list[int]], batch_tokens: int, max_batch_size: int,
                 device: Any) -> dict[str, Any]:
    """bf16 against fp32 on the same documents: speed-up, fraction of the bf16 peak, embedding difference.

    Only where the device has native bf16 (CUDA, or a CPU with AVX512-BF16 / AMX); the
    compressor comes back in the dtype it had.
    """
    import torch

    from commer_core.backbone import native_bf16

    n = PEAK_MATMUL_N[device.type] if device.type == "cuda" else 512  # emulated bf16 on a CPU is slow
    peak16 = perf.matmul_peak_gflops(torch.bfloat16, n=n, repeats=2 if device.type == "cpu" else 5, device=device)
    peak32 = perf.matmul_peak_gflops(torch.float32, n=PEAK_MATMUL_N[device.type], device=device)
    if not native_bf16(device.type):
        return {"supported": False, "matmul_peak_gflops": peak16,
                "note": "no AVX512-BF16/AMX on this CPU: bf16 is emulated "
                        f"({peak16:.1f} GFLOP/s vs {peak32:.1f} fp32), so the compressor stays in fp32"}
    run_dtype = compressor.backbone.dtype
    time_it = lambda: perf.best_of(lambda: perf.time_compressor(  # noqa: E731
        compressor, docs, batch_tokens=batch_tokens, max_batch_size=max_batch_size), 2)
    try:
        compressor.to(torch.float32)
        ref = compressor.compress_tokenized(docs, batch_tokens=batch_tokens, max_batch_size=max_batch_size)
        t32 = time_it()
        compressor.to(torch.bfloat16)
        t16 = time_it()
        diff = (compressor.compress_tokenized(docs, batch_tokens=batch_tokens, max_batch_size=max_batch_size) - ref)
    finally:
        compressor.to(run_dtype)
    return {"supported": True, "matmul_peak_gflops": peak16, "fp32_matmul_peak_gflops": peak32,
            "speedup_vs_fp32": t16.docs_per_s / t32.docs_per_s, "fraction_of_bf16_peak": t16.gflops / peak16,
            "fp32_fraction_of_fp32_peak": t32.gflops / peak32, "max_abs_diff": float(diff.abs().max()),
            "mean_abs_diff": float(diff.abs().mean()),
            "relative_diff": float(diff.norm() / ref.norm()), "docs": len(docs)}


def pipeline_vs_core(ckpt: str, mix: str, texts: list[str], batch_tokens: int, say: Any, rounds: int = 2,
              device: str = "cpu") -> dict[str, Any]:
    """The full Beam job on the same documents (10 per user), in-process and with 2 worker processes.

    Each variant (commer_core: load the checkpoint and compress the texts, tokenization
    included; the job in-process; the job with 2 workers) runs on the first quarter of
    the texts and on all of them, the variants taking turns, ``rounds`` times (the fastest
    run of each is kept). The difference gives its steady-state throughput
    (``marginal_docs_per_s``, what a nightly run over millions of documents sees) and its
    fixed start-up cost (process start, model loads), reported apart.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from commer_core.checkpoint import load_checkpoint
    from pipelines.compress import CompressParams, run_job

    sizes = (max(1, len(texts) // 4), len(texts))

    def core(subset: list[str]) -> None:
        reference = load_checkpoint(ckpt, device=device)
        reference.merge_lora()
        reference.compress_texts(subset, batch_tokens=batch_tokens)

    out: dict[str, Any] = {"docs": len(texts), "mix": mix, "sizes": list(sizes), "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {}
        for n in sizes:
            corpora[n] = Path(tmp) / f"corpus-{n}.parquet"
            rows = [{"user_id": f"u{i // 10:05d}", "doc_id": f"d{i}", "text": t} for i, t in enumerate(texts[:n])]
            pq.write_table(pa.Table.from_pylist(rows), corpora[n])

        def job(beam_args: list[str]) -> Any:
            return lambda subset: run_job(
                CompressParams(input=str(corpora[len(subset)]), output=tempfile.mkdtemp(dir=tmp),
                               checkpoint=ckpt, batch_tokens=batch_tokens, device=device, progress_every=0,
                               overwrite=True),
                beam_args, echo=lambda _m: None)

        variants = {"core_with_load": core, "in_process": job([]),
                    "multi_process": job(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])}
        best = {name: {n: math.inf for n in sizes} for name in variants}
        for round_ in range(1, rounds + 1):  # interleaved: a shared machine's drift hits every variant alike
            say(f"bench: pipeline comparison, round {round_} of {rounds}: commer_core, in-process, 2 workers "
                f"at {sizes[0]} and {sizes[1]} documents ...")
            for n in sizes:
                for name, fn in variants.items():
                    start = time.perf_counter()
                    fn(texts[:n])
                    best[name][n] = min(best[name][n], time.perf_counter() - start)
        for name in variants:
            seconds = [best[name][n] for n in sizes]
            marginal = (sizes[1] - sizes[0]) / max(seconds[1] - seconds[0], 1e-9)
            out[name] = {"docs_per_s": sizes[1] / seconds[1], "seconds": seconds[1], "marginal_docs_per_s": marginal,
                         "startup_seconds": max(seconds[1] - sizes[1] / marginal, 0.0)}
    for name in ("core_with_load", "in_process", "multi_process"):
        out[name]["vs_core"] = out[name]["marginal_docs_per_s"] / out["core_with_load"]["marginal_docs_per_s"]
    return out


def scaling_runs(checkpoint: str | None, batch_tokens: int, say: Any) -> dict[str, Any]:
    """Job time and peak RSS at growing sizes (see jobs.bench.scaling); tiny-random when no checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:
            from commer_core.backbone import load_backbone
            from commer_core.checkpoint import save_checkpoint
            from commer_core.compressor import Compressor
            from commer_core.config import CompressorConfig

            checkpoint = str(Path(tmp) / "tiny-random")
            save_checkpoint(Compressor(load_backbone("tiny-random"), CompressorConfig(base_model="tiny-random")),
                            checkpoint, trained=False)
            model = "tiny-random (d=64, 2 layers)"
        else:
            model = "the bundled checkpoint"
        out = run_sizes(checkpoint, [1_000, 10_000, 100_000], [1, 100, 10_000], 10_000, batch_tokens, say)
    out["model"] = model
    return out


def generation_speed(compressor: Any, n_requests: int = 32, new_tokens: int = 16) -> dict[str, Any]:
    """Requests/s and tokens/s of batched generation, half the rows personalized."""
    from commer_core.generator import Generator

    gen = Generator(compressor)
    prompt = compressor.compress_texts(["I like hiking and tea."]).mean(0)
    prefixes = [prompt if i % 2 else None for i in range(n_requests)]
    inputs = [f"Write a short note number {i}:" for i in range(n_requests)]
    out: dict[str, Any] = {"requests": n_requests, "max_new_tokens": new_tokens}
    for batch in (1, 8, 32):
        start = time.perf_counter()
        tokens = 0
        for s in range(0, n_requests, batch):
            ids = gen.generate_ids(prefixes[s : s + batch], inputs[s : s + batch], max_new_tokens=new_tokens)
            tokens += sum(len(x) for x in ids)
        seconds = time.perf_counter() - start
        out[f"batch_{batch}"] = {"requests_per_s": n_requests / seconds, "tokens_per_s": tokens / seconds}
    return out
