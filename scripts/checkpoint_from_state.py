#!/usr/bin/env python
"""Save a training run's resume state (its trainables at the last saved step) as a checkpoint.

    python scripts/checkpoint_from_state.py runs/F runs/F-step160

For a run stopped before its last step (a session's time ran out): `train` writes
``checkpoint/`` only at the end and ``best/`` only at dev checks, while ``state/`` is saved
every ``--save-every`` steps. The checkpoint records the step and the run's config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from commer_core.training import TrainConfig, build_method, make_optimizer, save_method
from commer_core.training.state import load_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a training output folder holding state/")
    parser.add_argument("output", type=Path, help="where to write the checkpoint")
    args = parser.parse_args()
    meta = json.loads((args.run / "state" / "state.json").read_text())
    config = TrainConfig.from_dict(meta["config"])
    method = build_method(config)
    saved = load_state(args.run / "state", method, make_optimizer(method, config))
    method.eval()
    fingerprint = save_method(method, args.output, training={"step": saved["step"], "config": meta["config"],
                                                             "from_state_of": str(args.run)})
    print(json.dumps({"checkpoint": str(args.output), "step": saved["step"], "fingerprint": fingerprint}))


if __name__ == "__main__":
    main()
