"""scripts/pool_personalization.py: several product-path checks of one checkpoint, each and pooled."""

from __future__ import annotations

import json

from tests.helpers import run_script


def _report(folder, checkpoint: str, diffs: list[float]) -> None:
    """A personalization-check output whose examples have 10 target tokens and own at 2 nats/token."""
    folder.mkdir()
    rows = [{"example_id": f"e{i}", "user_id": f"u{i}", "other_user_id": "x", "target_tokens": 10,
             "own_nats": 2.0, "other_nats": 2.0 + d, "none_nats": 3.0} for i, d in enumerate(diffs)]
    (folder / "personalization.json").write_text(json.dumps(
        {"checkpoint": checkpoint, "docs_per_user": 0, "selection": "bm25", "seed": 0, "per_example": rows}))


def test_sets_are_pooled_and_other_checkpoints_refused(tmp_path):
    _report(tmp_path / "s5", "runs/E2", [0.5, 0.5, 0.5, -0.1])
    _report(tmp_path / "s6", "runs/E2", [0.2, -0.2])
    out = run_script("pool_personalization.py", tmp_path / "s5", tmp_path / "s6")
    assert out.returncode == 0, out.stderr
    assert "| 4 | +0.350 |" in out.stdout and "| 75.0% |" in out.stdout  # s5 alone
    # pooled: 6 examples, mean (1.5 - 0.1 + 0.2 - 0.2) / 6 = 0.233, own better on 4 of 6
    assert "| **pooled** | 6 | +0.233 |" in out.stdout and "| 66.7% |" in out.stdout
    _report(tmp_path / "k2", "runs/K2", [0.3])
    refused = run_script("pool_personalization.py", tmp_path / "s5", tmp_path / "k2")
    assert refused.returncode != 0 and "other checkpoint" in refused.stderr and "k2" in refused.stderr
    missing = run_script("pool_personalization.py", tmp_path / "nowhere")
    assert missing.returncode != 0 and "not found" in missing.stderr
