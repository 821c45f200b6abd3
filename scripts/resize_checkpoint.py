#!/usr/bin/env python
"""Copy a ComMer checkpoint with another number of compression slots k, to start training at that k.

    python scripts/resize_checkpoint.py runs/A/checkpoint 32 runs/A-k32

The LoRA and the prompt's gain carry over as they are. Every per-slot tensor (the compression
embeddings, and under ``prompt_norm`` "center" the bias and the running centre) is mapped slot by
slot: new slot j takes old slot ``j * k_old // k_new``, so a larger k repeats each slot in place
(with a little noise on the compression embeddings, so repeated slots can move apart) and a smaller
k keeps evenly spaced slots. The result is a starting point, not a trained compressor: the cost-
quality curve trains each k from it (docs/RESULTS.md) instead of a chain of trainings from scratch.
Its training metadata records the source.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint

NOISE = 0.01  # of the compression embeddings' standard deviation, on repeated slots


def slot_map(k_old: int, k_new: int) -> torch.Tensor:
    """Old slot index for every new slot: repeats in place when growing, evenly spaced when shrinking."""
    return torch.arange(k_new) * k_old // k_new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("k", type=int, help="number of compression slots of the copy")
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise on repeated slots")
    args = parser.parse_args()
    compressor = load_checkpoint(args.checkpoint)
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
                                                           "k": args.k, "seed": args.seed}}
    fingerprint = save_checkpoint(compressor, args.output, trained=bool(source.get("trained")), training=training)
    print(json.dumps({"checkpoint": str(args.output), "k": args.k, "fingerprint": fingerprint}))


if __name__ == "__main__":
    main()
