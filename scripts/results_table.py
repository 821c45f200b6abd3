"""The compact Markdown table (and, with --plots, the two figures) of docs/RESULTS.md from an `evaluate` output.

    python scripts/results_table.py runs/perltqa/eval-dev --plots docs/results/perltqa-dev
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from commer_core.evaluation import format_pivot, plot_cost_quality, plot_docs_scaling  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("results", type=Path, help="an `evaluate --output` folder")
parser.add_argument("--plots", default=None, help="redraw the figures as PREFIX-cost-vs-quality.png, PREFIX-ppl-vs-docs.png")
parser.add_argument("--title", default="", help="figure title prefix")
args = parser.parse_args()
rows = json.loads((args.results / "results.json").read_text())["summary"]
print(f"{rows[0]['n_examples']} examples per cell; from {args.results}/results.json\n")
print(format_pivot(rows))
if args.plots:
    plot_cost_quality(rows, f"{args.plots}-cost-vs-quality.png", title=f"{args.title}cost vs quality")
    plot_docs_scaling(rows, f"{args.plots}-ppl-vs-docs.png", title=f"{args.title}perplexity vs documents")
