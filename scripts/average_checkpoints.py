#!/usr/bin/env python
"""Average ComMer checkpoints that share an ancestor (a "model soup") into one ordinary checkpoint.

    python scripts/average_checkpoints.py runs/IC/checkpoint runs/IE/checkpoint runs/IH/checkpoint \\
        --center-corpus runs/synth12/prep/corpus/train.parquet --output runs/SOUP

Why: runs fine-tuned from one checkpoint with other data or settings sit in one basin; the mean
of their weights often generalizes better than any of them, at no training cost. Every trained
tensor (compression embeddings, the prompt's gain and bias, each LoRA matrix) is the weighted
mean. The ``center`` norm's centre is not a trained weight but a running mean of the hidden rows
the weights produce: by default it is the weighted mean of the sources' centres (first-order right
for weights this close); with ``--center-corpus`` (a user corpus, e.g. the training users'
documents) it is refitted as the exact mean row of the averaged weights. The result records its
sources and how the centre was made.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from commer_core.checkpoint import (
    ADAPTER_DIR,
    ADAPTER_FILE,
    EMBEDDINGS_FILE,
    fingerprint,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from commer_core.data.examples import sample_corpus_texts


def weighted_mean(dicts: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Key-wise weighted mean of tensor dicts with the same keys and shapes (weights sum to 1)."""
    keys = set(dicts[0])
    for d in dicts[1:]:
        if set(d) != keys:
            raise SystemExit(f"Error: the checkpoints hold different tensors ({sorted(keys ^ set(d))[:3]})")
    return {k: sum(w * d[k].double() for w, d in zip(weights, dicts)).float() for k in sorted(keys)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="two or more trained ComMer checkpoint directories")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+", help="one per checkpoint (normalized); default equal")
    parser.add_argument("--center-corpus", type=Path, help="user-corpus Parquet whose documents refit the centre "
                        "(default: the weighted mean of the sources' centres)")
    parser.add_argument("--center-docs", type=int, default=4096, help="documents drawn from --center-corpus")
    parser.add_argument("--seed", type=int, default=0, help="draws the --center-docs documents")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        raise SystemExit("Error: give at least two checkpoints to average")
    weights = args.weights or [1.0] * len(args.checkpoints)
    if len(weights) != len(args.checkpoints) or min(weights) < 0 or sum(weights) <= 0:
        raise SystemExit(f"Error: --weights needs {len(args.checkpoints)} non-negative numbers, not all 0")
    weights = [w / sum(weights) for w in weights]

    configs = [read_config(c) for c in args.checkpoints]  # verifies every file's checksum
    for path, config in zip(args.checkpoints[1:], configs[1:]):
        for part in ("compressor", "base_model"):
            if config[part] != configs[0][part]:
                raise SystemExit(f"Error: {path} differs from {args.checkpoints[0]} in '{part}'; "
                                 "only checkpoints of one architecture and backbone can be averaged")
    soft = weighted_mean([load_file(c / EMBEDDINGS_FILE) for c in args.checkpoints], weights)
    adapter = weighted_mean([load_file(c / ADAPTER_DIR / ADAPTER_FILE) for c in args.checkpoints], weights)

    compressor = load_checkpoint(args.checkpoints[0])
    with torch.no_grad():
        for name, target in compressor.soft_tensors().items():
            target.copy_(soft[name])
    set_peft_model_state_dict(compressor.peft_model, adapter)
    center: dict[str, object] | str | None = None
    if compressor.prompt_center is not None:
        center = "weighted mean of the sources' centres"
        if args.center_corpus is not None:
            texts = sample_corpus_texts(args.center_corpus, args.center_docs, args.seed)
            center = {"corpus": str(args.center_corpus), "docs": compressor.fit_center(texts), "seed": args.seed}
    training = {
        "average_of": [{"checkpoint": str(c), "fingerprint": fingerprint(c), "weight": w}
                       for c, w in zip(args.checkpoints, weights)],
        "center": center,
        "sources": [config.get("training", {}) for config in configs],
    }
    print(json.dumps({"checkpoint": str(args.output), "center": center,
                      "fingerprint": save_checkpoint(compressor, args.output, trained=True, training=training)}))


if __name__ == "__main__":
    main()
