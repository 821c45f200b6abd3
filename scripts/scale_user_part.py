#!/usr/bin/env python
"""Copy a centred ComMer checkpoint with its prompt's user part scaled by a factor.

    python scripts/scale_user_part.py runs/K/best 1.5 runs/K-x1.5

Under ``prompt_norm`` "center" a prompt row is ``gain * rms_normalise(h - centre) + bias``: the
first term is the user's own part, the bias what every user shares. Multiplying the gain by
``factor`` turns the user part up (or down) without training; the scaled checkpoint is an
ordinary checkpoint, so the compress job and serving apply the same scale. Its training
metadata records the source and the factor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("factor", type=float, help="multiplies the user part (the centred norm's gain)")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    compressor = load_checkpoint(args.checkpoint)
    if compressor.prompt_bias is None:
        raise SystemExit(f"{args.checkpoint}: prompt_norm {compressor.config.prompt_norm!r} has no user part "
                         "apart from a shared bias; only 'center' checkpoints can be scaled")
    with torch.no_grad():
        compressor.prompt_gain.mul_(args.factor)
    source = read_config(args.checkpoint)
    training = {**source.get("training", {}), "user_part_scale": {"source": str(args.checkpoint), "factor": args.factor}}
    fingerprint = save_checkpoint(compressor, args.output, trained=bool(source.get("trained")), training=training)
    print(json.dumps({"checkpoint": str(args.output), "factor": args.factor, "fingerprint": fingerprint}))


if __name__ == "__main__":
    main()
