"""scripts/results_table.py: several evaluate outputs joined into one table, only if they scored the same examples."""

from __future__ import annotations

import json

from tests.helpers import run_script


def _results(folder, label: str, ppl: float, digest: str) -> None:
    folder.mkdir()
    row = {"label": label, "method": "prompt_tuning", "k": 16, "budget": 0, "n_docs": 8, "n_examples": 32,
           "perplexity": ppl, "prompt_tokens": 16, "examples_digest": digest, "rouge1": None, "rougeL": None,
           "gap": None, "mean_prompt_perplexity": None}
    (folder / "results.json").write_text(json.dumps({"summary": [row]}))


def test_outputs_are_joined_and_different_examples_refused(tmp_path):
    _results(tmp_path / "a", "pt-k4", 35.77, "7a5bfd71aa")
    _results(tmp_path / "b", "pt-k32", 34.37, "7a5bfd71aa")
    _results(tmp_path / "c", "pt-k64", 39.64, "0000ffff00")
    joined = run_script("results_table.py", tmp_path / "a", tmp_path / "b")
    assert joined.returncode == 0, joined.stderr
    assert "| pt-k4 | 16 | 35.77 |" in joined.stdout and "| pt-k32 | 16 | 34.37 |" in joined.stdout
    refused = run_script("results_table.py", tmp_path / "a", tmp_path / "c")
    assert refused.returncode != 0
    assert "scored different examples at 8 documents" in refused.stderr and str(tmp_path / "c") in refused.stderr
