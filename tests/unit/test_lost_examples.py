"""scripts/lost_examples.py: the examples the own prompt loses, sorted by what their target shares with each profile."""

from __future__ import annotations

import json

from tests.helpers import run_script

PREFIX = "Paraphrase the following tweet without any explanation before or after it: "


def _lamp7(folder, users: dict[str, tuple[list[str], str, str]]) -> None:
    """A LaMP-7 dev split: user -> (profile tweets, input tweet, target tweet), one question each."""
    (folder / "dev").mkdir(parents=True)
    questions = [{"id": f"{u}-q0", "input": PREFIX + inp,
                  "profile": [{"id": f"{u}-p{i}", "text": t} for i, t in enumerate(profile)]}
                 for u, (profile, inp, _) in users.items()]
    golds = [{"id": f"{u}-q0", "output": target} for u, (_, _, target) in users.items()]
    (folder / "dev" / "dev_questions.json").write_text(json.dumps(questions))
    (folder / "dev" / "dev_outputs.json").write_text(json.dumps({"task": "LaMP_7", "golds": golds}))


def _report(folder, data, rows: list[tuple[str, str, float]]) -> None:
    """A personalization-check output: (user, partner, other minus own nats per token) per example."""
    folder.mkdir()
    per_example = [{"example_id": f"{u}-q0", "user_id": f"{u}-q0", "other_user_id": f"{p}-q0", "target_tokens": 8,
                    "own_nats": 3.0, "other_nats": 3.0 + d, "none_nats": 4.0} for u, p, d in rows]
    (folder / "personalization.json").write_text(json.dumps(
        {"data": str(data), "split": "dev", "checkpoint": "ck", "per_example": per_example}))


def test_lost_examples_are_sorted_by_the_words_only_one_profile_holds(tmp_path):
    _lamp7(tmp_path / "data", {
        # "tagine" is in the target, not the input, and only in ann's documents: own-only
        "ann": (["nothing beats tagine", "rain again"], "that moment when my food arrives", "that moment when tagine arrives"),
        # "ceviche" only in bob's, "tagine" only in ann's (his partner): both
        "bob": (["ceviche forever", "rain again"], "my food and my job", "ceviche and tagine at work"),
        # "rain" is in both profiles, "today" in neither: none
        "cat": (["rain again", "sunny"], "what weather", "rain today"),
    })
    _report(tmp_path / "pc", tmp_path / "data", [("ann", "bob", -0.2), ("bob", "ann", 0.4), ("cat", "ann", -0.1)])
    out = run_script("lost_examples.py", tmp_path / "pc", "--list")
    assert out.returncode == 0, out.stderr
    assert "| own-only | 1 | 0.0% |" in out.stdout  # ann's lost, although only her documents say tagine
    assert "| both | 1 | 100.0% |" in out.stdout and "| none | 1 | 0.0% |" in out.stdout
    assert "ann-q0\t-0.200\town-only\town:tagine\tpartner:\tthat moment when tagine arrives" in out.stdout
    assert "bob-q0" not in out.stdout.split("| none |")[1]  # won examples are not listed
    missing = run_script("lost_examples.py", tmp_path / "nowhere")
    assert missing.returncode != 0 and "not found" in missing.stderr
