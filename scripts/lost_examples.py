#!/usr/bin/env python
"""Which examples does the own stored prompt lose, and does their target name what only the user's documents hold?

    python scripts/lost_examples.py runs/pc-RB-fresh5 runs/pc-RB-fresh6 runs/pc-RB-fresh7 [--list]

A share of "own better" under the bar says how often the prompt fails, not why. This sorts every
example of ``personalization-check`` outputs by the words of its target that its input does not
already give away (lower-case words, runs of "!", hashtags) into:

  own-only      some of them occur in the user's own documents and none only in the partner's
  both          some occur only in the own documents, some only in the partner's
  partner-only  some occur only in the partner's documents, none only in the own
  none          none occurs in one profile and not the other

and prints the own-better share of each class over all the outputs given. Raw documents can copy
an "own-only" word (a pet's name, a food); the stored prompt has to carry it through k vectors, so
this class is where a prompt that does not carry literal words loses. ``--list`` prints each lost
example with its distinctive words. Each output's data is read back from its report.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.personalization_cmd import load_examples
from pool_personalization import read_report  # this folder: scripts/

CLASSES = ("own-only", "both", "partner-only", "none")
_WORD = re.compile(r"[a-z]+|!+|#\w+")


def words(text: str) -> set[str]:
    """The words the classes are built from: lower-case letters, runs of "!", hashtags."""
    return set(_WORD.findall(text.lower()))


def profile_words(texts: Iterable[str]) -> set[str]:
    """Every word of a user's documents."""
    return set().union(*(words(t) for t in texts))


@dataclass(frozen=True)
class Distinctive:
    """The target's words (not in its input) found in one profile and not the other."""

    own: frozenset[str]
    partner: frozenset[str]

    @property
    def kind(self) -> str:
        """One of :data:`CLASSES`."""
        if self.own:
            return "both" if self.partner else "own-only"
        return "partner-only" if self.partner else "none"


def distinctive(target: str, input_text: str, own: set[str], partner: set[str]) -> Distinctive:
    """What the target says that only one of the two profiles could have told the model."""
    new = words(target) - words(input_text)
    return Distinctive(frozenset(new & (own - partner)), frozenset(new & (partner - own)))


def classify(report: dict[str, Any]) -> list[tuple[dict[str, Any], Distinctive, str]]:
    """(per-example row, its distinctive words, target) for every example of one report."""
    examples = load_examples(Path(report["data"]), report["split"], None)
    by_id = {e.example_id: e for e in examples}
    docs = {e.user_id: profile_words(d.text for d in e.documents) for e in examples}
    out = []
    for row in report["per_example"]:
        example = by_id[row["example_id"]]
        found = distinctive(example.target, example.input, docs[row["user_id"]], docs[row["other_user_id"]])
        out.append((row, found, example.target))
    return out


def own_better_by_class(rows: Sequence[tuple[dict[str, Any], Distinctive, str]]) -> dict[str, tuple[int, int]]:
    """class -> (examples, examples where the own prompt scores strictly lower nats per token)."""
    total, won = Counter(), Counter()
    for row, found, _ in rows:
        total[found.kind] += 1
        won[found.kind] += row["own_nats"] < row["other_nats"]
    return {kind: (total[kind], won[kind]) for kind in CLASSES if total[kind]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="+", type=Path, help="personalization-check --output folders")
    parser.add_argument("--list", action="store_true", help="print every lost example with its distinctive words")
    args = parser.parse_args()
    rows = [row for path in args.outputs for row in classify(read_report(path))]
    print("| target's distinctive words | examples | own better |\n|---|---|---|")
    for kind, (n, won) in own_better_by_class(rows).items():
        print(f"| {kind} | {n} | {won / n:.1%} |")
    if args.list:
        for row, found, target in rows:
            if row["own_nats"] >= row["other_nats"]:
                margin = row["other_nats"] - row["own_nats"]
                print(f"{row['example_id']}\t{margin:+.3f}\t{found.kind}\town:{','.join(sorted(found.own))}"
                      f"\tpartner:{','.join(sorted(found.partner))}\t{target}")


if __name__ == "__main__":
    main()
