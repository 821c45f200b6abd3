#!/usr/bin/env python
"""Make a trained ComMer checkpoint the bundled default, with what made it recorded in its config.

    python scripts/bundle_checkpoint.py runs/D/best --record record.json

The checkpoint is re-saved (fp32 safetensors, fresh checksums) into
``commer_core/assets/default-checkpoint`` with ``training`` replaced by the JSON in
``--record`` (data, commands, figures), so the shipped artifact says how to reproduce it.
Refuses a checkpoint whose files take more than ``--max-mb`` (the repository stays small).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint
from commer_core.defaults import DEFAULT_CHECKPOINT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a trained ComMer checkpoint directory")
    parser.add_argument("--record", type=Path, required=True, help="JSON object stored as the config's 'training'")
    parser.add_argument("--output", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--max-mb", type=float, default=8.0)
    args = parser.parse_args()
    record = json.loads(args.record.read_text())
    if not isinstance(record, dict):
        raise SystemExit(f"Error: {args.record} must hold a JSON object")
    if not read_config(args.checkpoint).get("trained"):
        raise SystemExit(f"Error: {args.checkpoint} is not a trained checkpoint")
    compressor = load_checkpoint(args.checkpoint)
    save_checkpoint(compressor, args.output, trained=True, training=record)
    size = sum(f.stat().st_size for f in args.output.rglob("*") if f.is_file()) / 2**20
    if size > args.max_mb:
        raise SystemExit(f"Error: {args.output} takes {size:.1f} MB, over --max-mb {args.max_mb}")
    print(json.dumps({"output": str(args.output), "megabytes": round(size, 2)}))


if __name__ == "__main__":
    main()
