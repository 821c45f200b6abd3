"""Small builders shared by the core tests."""

from __future__ import annotations

import torch

from commer_core.backbone import Backbone
from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig, LoraSettings


def make_compressor(backbone: Backbone, *, k: int = 4, r: int = 4, perturb_lora: bool = True, seed: int = 0) -> Compressor:
    """A compressor whose LoRA actually changes the backbone (PEFT starts with B = 0)."""
    config = CompressorConfig(base_model=backbone.name, num_embeddings=k, lora=LoraSettings(r=r, dropout=0.0))
    compressor = Compressor(backbone, config, seed=seed)
    if perturb_lora:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in compressor.peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return compressor


DOCS = [
    "The cat sat on the mat and looked out of the window.",
    "Rome was not built in a day; its roads, aqueducts and laws took centuries.",
    "ok",
    "I went hiking in the Alps last summer with my sister and we saw ibex near the glacier.",
    "Quarterly revenue rose by four percent.",
]
