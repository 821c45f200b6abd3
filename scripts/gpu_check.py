"""The compressor's CUDA path against its CPU path, on the same random weights.

Run on a machine with a GPU (see docs/PERFORMANCE.md, "GPU"): builds
``random:smollm2-135m`` on the CPU, compresses documents there in fp32, moves the
same compressor to CUDA and compresses again in fp32 and bf16, and compresses each
document alone on CUDA to check that a document's compression does not depend on its
batch. Prints the differences and exits non-zero when one is out of bounds.
"""

from __future__ import annotations

import sys

import torch

from commer_core.backbone import load_backbone
from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig
from jobs.bench import perf

BOUNDS = {"cuda fp32 vs cpu fp32": 1e-3, "cuda bf16 vs cpu fp32": 5e-2, "cuda bf16 alone vs batched": 5e-2}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    compressor = Compressor(load_backbone("random:smollm2-135m", device="cpu", dtype=torch.float32),
                            CompressorConfig(base_model="random:smollm2-135m"))
    docs = perf.make_documents("lognormal", 64, len(compressor.tokenizer), seed=3)
    reference = compressor.compress_tokenized(docs, batch_tokens=2048)
    compressor.to("cuda")
    results = {"cuda fp32 vs cpu fp32": relative(compressor.compress_tokenized(docs, batch_tokens=8192), reference)}
    compressor.to(torch.bfloat16)
    batched = compressor.compress_tokenized(docs, batch_tokens=8192)
    alone = torch.cat([compressor.compress_tokenized([d]) for d in docs])
    results["cuda bf16 vs cpu fp32"] = relative(batched, reference)
    results["cuda bf16 alone vs batched"] = relative(alone, batched)
    failed = False
    for name, value in results.items():
        ok = value <= BOUNDS[name] and value == value
        failed |= not ok
        print(f"gpu_check: {name}: relative difference {value:.2e} (bound {BOUNDS[name]:.0e}) {'ok' if ok else 'FAIL'}")
    print(f"gpu_check: device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
