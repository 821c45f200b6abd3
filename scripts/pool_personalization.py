#!/usr/bin/env python
"""The product-path personalization gap of one checkpoint on several user sets, each and pooled.

    python scripts/pool_personalization.py runs/pc-E2-fresh5 runs/pc-E2-fresh6 runs/pc-E2-fresh7

One set of 64 examples cannot settle an 85% own-better bar (a share's 95% interval is about +-9
points), so the issue-17 bar is read over several held-out user sets together. Each argument is a
``personalization-check`` output (or its ``personalization.json``); the pooled row recomputes the gap,
its paired bootstrap interval and the own-better share over all their examples with
:func:`commer_core.personalization.pooled_gap` (the same code as each set's own figure, and as the
bundled checkpoint's whole-bar test).
Refuses outputs of different checkpoints, document selections or derangement seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from commer_core.personalization import Gap, pooled_gap

# what must agree between outputs for their examples to be pooled (one checkpoint, scored alike)
SETTINGS = ("checkpoint", "docs_per_user", "selection", "seed")


def read_report(path: Path) -> dict[str, Any]:
    """A personalization-check report, from its output folder or the JSON file itself."""
    file = path / "personalization.json" if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"Error: {file} not found (give a personalization-check --output folder)")
    report = json.loads(file.read_text())
    if not report.get("per_example"):
        raise SystemExit(f"Error: {file} has no per_example rows (rerun it with the current personalization-check)")
    return report


def line(name: str, gap: Gap) -> str:
    """One Markdown table row, the columns RESULTS.md's product-path tables use."""
    return (f"| {name} | {gap.examples} | {gap.gap:+.3f} | [{gap.low:+.3f}, {gap.high:+.3f}] | "
            f"{gap.own_better:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", type=Path, nargs="+", help="personalization-check output folders")
    args = parser.parse_args()
    reports = [read_report(path) for path in args.outputs]
    for path, report in zip(args.outputs[1:], reports[1:]):
        differ = [key for key in SETTINGS if report.get(key) != reports[0].get(key)]
        if differ:
            raise SystemExit(f"Error: {path} was scored with other {', '.join(differ)} than {args.outputs[0]}")
    print("| user set | examples | gap (nats/token) | 95% interval | own better |\n|---|---|---|---|---|")
    for path, report in zip(args.outputs, reports):
        print(line(str(path), pooled_gap([report])))
    if len(reports) > 1:
        print(line("**pooled**", pooled_gap(reports)))


if __name__ == "__main__":
    main()
