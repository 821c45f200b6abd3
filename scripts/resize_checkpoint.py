#!/usr/bin/env python
"""Copy a ComMer checkpoint with another number of compression slots k, or a LoRA on more modules.

    python scripts/resize_checkpoint.py runs/A/checkpoint 32 runs/A-k32
    python scripts/resize_checkpoint.py runs/A/checkpoint 16 runs/A-mlp \
        --lora-targets q_proj,k_proj,v_proj,o_proj,down_proj

The LoRA and the prompt's gain carry over as they are. Every per-slot tensor (the compression
embeddings, and under ``prompt_norm`` "center" the bias and the running centre) is mapped slot by
slot: new slot j takes old slot ``j * k_old // k_new``, so a larger k repeats each slot in place
(with a little noise on the compression embeddings, so repeated slots can move apart) and a smaller
k keeps evenly spaced slots. The result is a starting point, not a trained compressor: the cost-
quality curve trains each k from it (docs/RESULTS.md) instead of a chain of trainings from scratch.
Its training metadata records the source.

``--lora-targets`` gives the copy a LoRA on more of the backbone's modules (a superset of the
source's, the same rank): the source's LoRA carries over and the new modules start as PEFT
starts every LoRA, with B = 0, so the copy compresses exactly as the source did and training
from it can use the added capacity.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from torch import nn

from commer_core.backbone import load_backbone
from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint
from commer_core.compressor import Compressor

NOISE = 0.01  # of the compression embeddings' standard deviation, on repeated slots


def slot_map(k_old: int, k_new: int) -> torch.Tensor:
    """Old slot index for every new slot: repeats in place when growing, evenly spaced when shrinking."""
    return torch.arange(k_new) * k_old // k_new


def widen_lora(source: Compressor, targets: tuple[str, ...]) -> Compressor:
    """``source`` with a LoRA on ``targets`` (a superset of its own); the added modules start at B = 0."""
    missing = sorted(set(source.config.lora.target_modules) - set(targets))
    if missing:
        raise SystemExit(f"Error: --lora-targets must keep the source's LoRA modules; {','.join(missing)} missing")
    lora = dataclasses.replace(source.config.lora, target_modules=targets)
    wider = Compressor(load_backbone(source.backbone.name, device=source.device),
                       dataclasses.replace(source.config, lora=lora))
    with torch.no_grad():
        for name, tensor in source.soft_tensors().items():
            getattr(wider, name).copy_(tensor)
    set_peft_model_state_dict(wider.peft_model, source.lora_state_dict())  # same rank, a subset of the modules
    return wider.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("k", type=int, help="number of compression slots of the copy")
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise on repeated slots")
    parser.add_argument("--lora-targets", help="comma-separated modules with a LoRA in the copy (adds to the source's)")
    args = parser.parse_args()
    compressor = load_checkpoint(args.checkpoint)
    lora_from = compressor.config.lora.target_modules
    if args.lora_targets:
        compressor = widen_lora(compressor, tuple(args.lora_targets.split(",")))
    k_old = compressor.num_embeddings
    index = slot_map(k_old, args.k)
    repeated = torch.zeros(args.k, dtype=torch.bool)
    repeated[1:] = index[1:] == index[:-1]
    with torch.no_grad():
        emb = compressor.compression_embeddings.detach()[index].clone()
        noise = torch.randn(emb.shape, generator=torch.Generator().manual_seed(args.seed)) * emb.std() * NOISE
        emb[repeated] += noise[repeated].to(emb.dtype)
        compressor.compression_embeddings = nn.Parameter(emb)
        if compressor.prompt_bias is not None:
            compressor.prompt_bias = nn.Parameter(compressor.prompt_bias.detach()[index].clone())
            compressor.prompt_center = compressor.prompt_center[index].clone()
    compressor.config = dataclasses.replace(compressor.config, num_embeddings=args.k)
    source = read_config(args.checkpoint)
    training = {**source.get("training", {}), "resized": {"source": str(args.checkpoint), "k_from": k_old,
                                                           "k": args.k, "seed": args.seed,
                                                           "lora_targets_from": list(lora_from)}}
    fingerprint = save_checkpoint(compressor, args.output, trained=bool(source.get("trained")), training=training)
    print(json.dumps({"checkpoint": str(args.output), "k": args.k, "fingerprint": fingerprint}))


if __name__ == "__main__":
    main()
