#!/usr/bin/env python
"""Copy a centred ComMer checkpoint with its prompt's user part scaled by a factor.

    python scripts/scale_user_part.py runs/K/best 1.5 runs/K-x1.5
    python scripts/scale_user_part.py runs/CL/checkpoint 0.5 runs/CL-x0.5c \
        --recenter-corpus runs/synth10/prep/corpus/train.parquet

Under ``prompt_norm`` "center" a prompt row is ``gain * rms_normalise(h - centre) + bias``: the
first term is the user's own part, the bias what every user shares. Multiplying the gain by
``factor`` turns the user part up (or down) without training; the scaled checkpoint is an
ordinary checkpoint, so the compress job and serving apply the same scale. Its training
metadata records the source and the factor.

The user part's mean over users is not zero, so it also moves every user's prompt by one shared
offset. With ``--recenter-corpus`` (a user corpus, e.g. the training users' documents) the bias
is shifted after the scaling so the (scaled) user part averages to zero over documents drawn from
it: the mean prompt is then the bias the checkpoint had, e.g. the prompt-tuning prompt its shared
part was frozen at (``Compressor.recenter_user_part``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint
from commer_core.data.examples import sample_corpus_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("factor", type=float, help="multiplies the user part (the centred norm's gain)")
    parser.add_argument("output", type=Path)
    parser.add_argument("--recenter-corpus", type=Path, help="user-corpus Parquet over whose documents the scaled "
                        "user part is made to average to zero (the bias absorbs its mean)")
    parser.add_argument("--recenter-docs", type=int, default=4096, help="documents drawn from --recenter-corpus")
    parser.add_argument("--seed", type=int, default=0, help="seed of the documents' draw")
    args = parser.parse_args()
    compressor = load_checkpoint(args.checkpoint)
    if compressor.prompt_bias is None:
        raise SystemExit(f"{args.checkpoint}: prompt_norm {compressor.config.prompt_norm!r} has no user part "
                         "apart from a shared bias; only 'center' checkpoints can be scaled")
    with torch.no_grad():
        compressor.prompt_gain.mul_(args.factor)
    scale: dict[str, object] = {"source": str(args.checkpoint), "factor": args.factor}
    if args.recenter_corpus is not None:
        texts = sample_corpus_texts(args.recenter_corpus, args.recenter_docs, args.seed)
        scale["recentred"] = {"corpus": str(args.recenter_corpus), "docs": compressor.recenter_user_part(texts),
                              "seed": args.seed}
    source = read_config(args.checkpoint)
    training = {**source.get("training", {}), "user_part_scale": scale}
    fingerprint = save_checkpoint(compressor, args.output, trained=bool(source.get("trained")), training=training)
    print(json.dumps({"checkpoint": str(args.output), **scale, "fingerprint": fingerprint}))


if __name__ == "__main__":
    main()
