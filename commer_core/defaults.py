"""Built-in defaults that make `commer-pipeline compress` run with no arguments."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "default-checkpoint"


def default_checkpoint_path() -> Path:
    """The checkpoint bundled with the package (for the built-in smollm2-135m backbone)."""
    return DEFAULT_CHECKPOINT
