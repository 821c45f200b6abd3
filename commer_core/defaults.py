"""Built-in defaults that make `commer-pipeline compress` run with no arguments."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "default-checkpoint"


def default_checkpoint_path() -> Path:
    """The checkpoint bundled with the package (for the built-in smollm2-135m backbone)."""
    return DEFAULT_CHECKPOINT


CPU_BATCH_TOKENS = 1024  # fastest of 512/1024/2048/4096 on every mix on a 2-core CPU (docs/PERFORMANCE.md)
# On an H100, 16384 came within 3-13% of 65536 on the default model and within 2% on a
# 2B model, with a quarter of the activation memory (docs/PERFORMANCE.md, GPU).
CUDA_BATCH_TOKENS = 16384
CPU_MAX_BATCH_SIZE = 64
# A GPU's batches are bounded by the token budget: a cap of 64 documents would hold short
# documents to about 3,600 tokens a pass, a quarter of the throughput measured at 16384.
CUDA_MAX_BATCH_SIZE = 2048


def _device_type(device: str) -> str:
    """``cpu`` or ``cuda`` for a device name; ``auto`` resolves on this machine."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def default_batch_tokens(device: str) -> int:
    """Forward-pass token budget when none is given: by the device the job asks for.

    On a CPU, batches that keep a layer's activations in cache beat bigger ones (about
    10% over 2048 and 4096 tokens, with less padding); a GPU wants large batches.
    ``auto`` is resolved where the job is launched: pass ``--device cuda`` (or a budget)
    when only the workers have GPUs.
    """
    return CUDA_BATCH_TOKENS if _device_type(device) == "cuda" else CPU_BATCH_TOKENS


def default_max_batch_size(device: str) -> int:
    """Most documents in one forward pass when none is given, by device (see :func:`default_batch_tokens`)."""
    return CUDA_MAX_BATCH_SIZE if _device_type(device) == "cuda" else CPU_MAX_BATCH_SIZE
