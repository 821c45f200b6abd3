#!/usr/bin/env python
"""Does the own stored prompt lose where the user and the partner write alike?

    python scripts/style_overlap.py runs/pc30-IC-fresh60 runs/pc30-IC-fresh61 ...

For ``personalization-check`` outputs on users made by ``commer_core.synthetic`` (ids
``u<seed>-<split>-<index>``), rebuilds each example's user and deranged partner from the seed and
counts the style features both draw from the same family (:func:`commer_core.synthetic.shared_families`),
then prints the own-better share and the mean gap per count, pooled over all outputs given. Where
partners share most families, only facts and exact wordings tell them apart: the share at high
counts is what a compressor that carries only style loses. ``--pairs N`` adds the mean count over
N random pairs of the reports' users (how alike any two of them are, beside the derangement's pairs).
"""

from __future__ import annotations

import argparse
import functools
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from commer_core.synthetic import Persona, make_personas, persona_of, shared_families
from pool_personalization import read_report  # this folder: scripts/


# one rebuild per user: persona_of regenerates every persona before the one asked for
_persona = functools.cache(persona_of)


def overlap_rows(report: dict[str, Any]) -> list[tuple[int, float]]:
    """(families shared with the partner, other minus own nats per token) for every example of one report."""
    try:
        return [(shared_families(_persona(row["user_id"]), _persona(row["other_user_id"])),
                 row["other_nats"] - row["own_nats"]) for row in report["per_example"]]
    except ValueError as err:
        raise SystemExit(f"Error: {report.get('data')}: {err}; this script reads synthetic users only") from err


def summary(gaps: Sequence[float]) -> tuple[int, float, float]:
    """(examples, own-better share, mean gap) of some examples' gaps."""
    return len(gaps), sum(d > 0 for d in gaps) / len(gaps), sum(gaps) / len(gaps)


def by_overlap(rows: Sequence[tuple[int, float]]) -> dict[int, tuple[int, float, float]]:
    """shared families -> :func:`summary` of its examples."""
    groups: dict[int, list[float]] = defaultdict(list)
    for shared, gap in rows:
        groups[shared].append(gap)
    return {n: summary(g) for n, g in sorted(groups.items())}


def mean_pair_overlap(personas: Sequence[Persona], pairs: int, seed: int = 0) -> float:
    """The mean number of shared families over ``pairs`` random pairs of distinct users."""
    rng, users = random.Random(seed), list(personas)
    return sum(shared_families(*rng.sample(users, 2)) for _ in range(pairs)) / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="+", type=Path, help="personalization-check --output folders")
    parser.add_argument("--pairs", type=int, default=0, help="also print the mean overlap of this many random "
                        "pairs of all the reports' users (0: off)")
    args = parser.parse_args()
    reports = [read_report(path) for path in args.outputs]
    rows = [row for report in reports for row in overlap_rows(report)]
    print("| families shared with the partner | examples | own better | mean gap |\n|---|---|---|---|")
    for shared, (n, share, gap) in by_overlap(rows).items():
        print(f"| {shared} | {n} | {share:.1%} | {gap:+.3f} |")
    n, share, gap = summary([d for _, d in rows])
    print(f"| all | {n} | {share:.1%} | {gap:+.3f} |")
    if args.pairs:
        users = {(p := _persona(row["user_id"])).user: p for report in reports for row in report["per_example"]}
        print(f"mean families shared by {args.pairs} random pairs of these users: "
              f"{mean_pair_overlap(list(users.values()), args.pairs):.2f}")


if __name__ == "__main__":
    main()
