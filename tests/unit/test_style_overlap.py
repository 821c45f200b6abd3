"""scripts/style_overlap.py: own-better share by how many style families the user shares with the partner."""

from __future__ import annotations

import json

from commer_core.synthetic import make_personas, shared_families
from tests.helpers import run_script


def _report(folder, rows: list[tuple[str, str, float]]) -> None:
    """A personalization-check output: (user id, partner id, other minus own nats per token) per example."""
    folder.mkdir()
    per_example = [{"example_id": u, "user_id": u, "other_user_id": p, "target_tokens": 8,
                    "own_nats": 3.0, "other_nats": 3.0 + d, "none_nats": 4.0} for u, p, d in rows]
    (folder / "personalization.json").write_text(json.dumps({"data": "d", "checkpoint": "ck",
                                                             "per_example": per_example}))


def test_examples_are_grouped_by_the_families_shared_with_the_partner(tmp_path):
    users = make_personas(6, seed=3, split="dev")
    pairs = [(u, users[(i + 1) % 6]) for i, u in enumerate(users)]
    gaps = [0.5, -0.25, 0.25, 0.75, -0.5, 1.0]
    _report(tmp_path / "pc", [(f"{u.user}-q0", f"{p.user}-q0", g) for (u, p), g in zip(pairs, gaps)])
    out = run_script("style_overlap.py", tmp_path / "pc", "--pairs", 50)
    assert out.returncode == 0, out.stderr
    expected: dict[int, list[float]] = {}
    for (u, p), g in zip(pairs, gaps):
        expected.setdefault(shared_families(u, p), []).append(g)
    for shared, group in expected.items():
        share = sum(g > 0 for g in group) / len(group)
        assert f"| {shared} | {len(group)} | {share:.1%} | {sum(group) / len(group):+.3f} |" in out.stdout
    assert "| all | 6 | 66.7% | +0.292 |" in out.stdout and "random pairs of these users" in out.stdout
    _report(tmp_path / "real", [("alice-q0", "bob-q0", 0.1)])
    refused = run_script("style_overlap.py", tmp_path / "real")
    assert refused.returncode != 0 and "synthetic users only" in refused.stderr
