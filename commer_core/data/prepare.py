"""Official LaMP / PerLTQA files -> examples and user corpora (what ``commer-pipeline prepare`` runs).

Why a module of its own: it is the one place that knows every reader, so it sits
above them (``examples`` <- ``lamp`` / ``perltqa`` <- ``prepare``) and the readers
can build on ``examples`` without an import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from commer_core.data.examples import Example, write_corpus_parquet, write_examples_parquet
from commer_core.data.lamp import lamp_splits, load_lamp, normalize_task
from commer_core.data.perltqa import split_perltqa


def _split_counts(examples: list[Example], corpus: dict[str, int]) -> dict[str, int]:
    return {
        "examples": len(examples),
        "users": len({e.user_id for e in examples}),
        "corpus_rows": corpus["rows"],
        "corpus_skipped": corpus["skipped"],
    }


def prepare_task_data(
    task: str,
    source_dir: str | Path,
    output_dir: str | Path,
    *,
    n_test_characters: int = 5,
    seed: int = 0,
    dev_fraction: float = 0.1,
) -> dict[str, dict[str, int]]:
    """Convert official files of ``task`` (lamp4, lamp7, perltqa) into examples and corpora.

    Writes ``output_dir/{split}.parquet``, ``output_dir/corpus/{split}.parquet`` and
    ``output_dir/prepare.json`` (parameters, split membership, counts). LaMP keeps the
    official splits that are present; PerLTQA is split by character
    (``n_test_characters`` to test) and ``dev_fraction`` of the train examples, chosen
    by a seeded hash of their ids, become dev. Returns counts per split.
    """
    output_dir = Path(output_dir)
    info: dict[str, Any] = {"task": task, "source_dir": str(source_dir), "seed": seed}
    if task.strip().lower() == "perltqa":
        splits, members = split_perltqa(source_dir, n_test=n_test_characters, seed=seed, dev_fraction=dev_fraction)
        info.update(n_test_characters=n_test_characters, dev_fraction=dev_fraction, characters=members)
    else:
        info["task"] = normalize_task(task)
        splits = {split: load_lamp(task, source_dir, split) for split in lamp_splits(source_dir)}
    counts: dict[str, dict[str, int]] = {}
    for split, examples in splits.items():
        write_examples_parquet(examples, output_dir / f"{split}.parquet")
        corpus = write_corpus_parquet(examples, output_dir / "corpus" / f"{split}.parquet")
        counts[split] = _split_counts(examples, corpus)
    info["counts"] = counts
    (output_dir / "prepare.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return counts
