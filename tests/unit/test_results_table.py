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
    _results(tmp_path / "a2", "pt-k4", 35.77, "7a5bfd71aa")  # a row two outputs share is shown once
    twice = run_script("results_table.py", tmp_path / "a", tmp_path / "a2")
    assert twice.returncode == 0 and twice.stdout.count("| pt-k4 |") == 1
    _results(tmp_path / "a3", "pt-k4", 36.00, "7a5bfd71aa")
    clash = run_script("results_table.py", tmp_path / "a", tmp_path / "a3")
    assert clash.returncode != 0 and "both have pt-k4 at 8 documents" in clash.stderr
    refused = run_script("results_table.py", tmp_path / "a", tmp_path / "c")
    assert refused.returncode != 0
    assert "scored different examples at 8 documents" in refused.stderr and str(tmp_path / "c") in refused.stderr


def _records(folder, digest: str, nll: dict[str, list[float]]) -> None:
    """An evaluate output with per-example records only (what --paired reads): 10 target tokens each."""
    folder.mkdir()
    records = [{"label": label, "n_docs": 8, "examples_digest": digest, "example_id": f"e{i}", "nll": v,
                "n_tokens": 10} for label, values in nll.items() for i, v in enumerate(values)]
    (folder / "results.json").write_text(json.dumps({"summary": [], "records": records}))


def test_paired_pools_outputs_of_different_examples(tmp_path):
    # split "dev": b worse than a by 1 nat on 3 examples; split "test": same ids, b better by 0.5 on one
    _records(tmp_path / "dev", "d" * 8, {"a": [10.0, 20.0, 30.0], "b": [20.0, 30.0, 40.0]})
    _records(tmp_path / "test", "t" * 8, {"a": [10.0, 10.0], "b": [5.0, 20.0], "c": [1.0, 1.0]})
    out = run_script("results_table.py", tmp_path / "dev", tmp_path / "test", "--paired", "a", "b")
    assert out.returncode == 0, out.stderr
    # 5 pairs, differences 1, 1, 1, -0.5, 1 nats/token: mean 0.7, a better on 4 of 5
    assert "| 8 | 5 | +0.700 |" in out.stdout and "| 80% |" in out.stdout
    missing = run_script("results_table.py", tmp_path / "dev", "--paired", "a", "c")
    assert missing.returncode != 0
    assert "scored no example in common" in missing.stderr and "['a', 'b']" in missing.stderr
