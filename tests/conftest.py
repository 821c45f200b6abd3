"""Shared fixtures: a tiny random backbone for speed, the real SmolLM2-135M for truth.

One compressor wraps one backbone (PEFT injects the LoRA in place), so backbone
fixtures are function-scoped; loading is fast once the built-in conversion is cached.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, os.cpu_count() or 1))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
pytest_plugins = ["tests.object_stores"]  # s3_store / gcs_store: local S3 and GCS servers


@pytest.fixture
def tiny_backbone():
    from commer_core.backbone import load_backbone

    return load_backbone("tiny-random")


@pytest.fixture
def real_backbone():
    from commer_core.backbone import load_backbone

    return load_backbone("smollm2-135m")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data fixtures not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny-random checkpoint (k=4, d=64) whose LoRA perturbs the backbone."""
    from commer_core.backbone import load_backbone
    from commer_core.checkpoint import save_checkpoint
    from tests.helpers import make_compressor

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(make_compressor(load_backbone("tiny-random")), path, trained=False)
    return path
