"""The Markdown tables of docs/RESULTS.md (personalization gap first) and, with --plots, the figures, from `evaluate` outputs.

    python scripts/results_table.py runs/perltqa/eval-dev --plots docs/results/perltqa-dev

Several outputs (evaluate runs split across cores) are joined into one table and one set of
figures; they must have scored the same examples at each number of documents (examples_digest).

    python scripts/results_table.py runs/eval-dev runs/eval-test --paired pt-k4-raw12 commer-k16

compares two methods example by example instead, pooled over every output given (e.g. a dev and a
test split): the second's minus the first's nats per token with a paired bootstrap 95% interval.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from commer_core.evaluation import (  # noqa: E402
    format_personalization,
    paired_difference,
    format_pivot,
    gap_rows,
    plot_cost_quality,
    plot_docs_scaling,
    plot_personalization_gap,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("results", type=Path, nargs="+", help="`evaluate --output` folders")
parser.add_argument("--plots", default=None,
                    help="redraw the figures as PREFIX-personalization-gap.png, PREFIX-cost-vs-quality.png, "
                         "PREFIX-ppl-vs-docs.png")
parser.add_argument("--title", default="", help="figure title prefix")
parser.add_argument("--paired", nargs=2, metavar=("FIRST", "SECOND"), default=None,
                    help="only compare two labels example by example (SECOND minus FIRST), pooled over the outputs")
args = parser.parse_args()


def print_paired(folders: list[Path], first: str, second: str) -> None:
    """SECOND minus FIRST in nats per token per number of documents; exits naming the labels if none pair up."""
    records = [r for f in folders for r in json.loads((f / "results.json").read_text())["records"]]
    try:
        diffs = paired_difference(records, first, second)
    except ValueError as err:
        sys.exit(f"{err}; labels in these outputs: {sorted({r['label'] for r in records})}")
    print(f"{second} minus {first}, nats per token (> 0: {first} better), paired bootstrap 95% interval:\n")
    print(f"| docs | examples | difference | 95% interval | {first} better |\n|---|---|---|---|---|")
    for n_docs, d in diffs.items():
        print(f"| {n_docs} | {d.examples} | {d.gap:+.3f} | [{d.low:+.3f}, {d.high:+.3f}] | {d.own_better:.0%} |")


def load_rows(folders: list[Path]) -> list[dict]:
    """Every folder's summary rows, a row two folders share once; exits naming the folders if they
    scored different examples or disagree on a label's score."""
    rows, digests, seen = [], {}, {}
    for folder in folders:
        for row in json.loads((folder / "results.json").read_text())["summary"]:
            first = digests.setdefault(row["n_docs"], (row["examples_digest"], folder))
            if first[0] != row["examples_digest"]:
                sys.exit(f"{folder}/results.json and {first[1]}/results.json scored different examples at "
                         f"{row['n_docs']} documents (examples_digest {row['examples_digest'][:8]} vs {first[0][:8]})")
            key = (row["label"], row["n_docs"])
            if key in seen:
                earlier, where = seen[key]
                if abs(earlier["perplexity"] - row["perplexity"]) > 1e-6 * earlier["perplexity"]:
                    sys.exit(f"{folder}/results.json and {where}/results.json both have {row['label']} at "
                             f"{row['n_docs']} documents with different perplexities "
                             f"({row['perplexity']:.3f} vs {earlier['perplexity']:.3f}): rename one label")
                continue  # the same measurement twice (e.g. a baseline every run scores)
            seen[key] = (row, folder)
            rows.append(row)
    return rows


if args.paired:
    print_paired(args.results, *args.paired)
    sys.exit(0)
rows = load_rows(args.results)
print(f"{rows[0]['n_examples']} examples per cell; from " + ", ".join(f"{f}/results.json" for f in args.results) + "\n")
if gap_rows(rows):
    print("Personalization gap (other-user minus own, nats per token; paired bootstrap 95% interval):\n")
    print(format_personalization(rows) + "\n")
else:
    print("(no personalization gap in these results: evaluated with --no-swap or before it existed)\n")
print(format_pivot(rows))
if args.plots:
    if gap_rows(rows):
        plot_personalization_gap(rows, f"{args.plots}-personalization-gap.png", title=f"{args.title}personalization gap")
    plot_cost_quality(rows, f"{args.plots}-cost-vs-quality.png", title=f"{args.title}cost vs quality")
    if len({r["n_docs"] for r in rows}) > 1:  # one number of documents: no curve to draw
        plot_docs_scaling(rows, f"{args.plots}-ppl-vs-docs.png", title=f"{args.title}perplexity vs documents")
