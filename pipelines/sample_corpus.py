"""The small corpus that ``commer-pipeline compress`` runs on when given no ``--input``.

Generated, not shipped: six users, each writing about one theme (cooking, astronomy,
football, gardening, jazz, programming), 6-8 short documents each, built from fixed
templates with a seeded RNG, so every machine generates byte-identical text and users'
soft prompts differ by topic. Two rows are planted bad on purpose (a blank text and an
exact duplicate) so that a first run also shows the dead-letter output.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from commer_core.storage import write_bytes
from schemas import CORPUS_SCHEMA

#: Bump when the generated content changes, so cached copies are regenerated.
SAMPLE_VERSION = 1
SEED = 20250101

_THEMES: dict[str, dict[str, list[str]]] = {
    "cooking": {
        "subjects": ["the risotto", "a sourdough loaf", "the tomato sauce", "my grandmother's stew", "a lemon tart"],
        "verbs": ["needed more salt", "came out perfectly", "took three hours", "was better the next day", "burned a little"],
        "details": ["after I added fresh basil", "with a splash of white wine", "in the cast-iron pan", "once the butter browned", "at a low simmer"],
    },
    "astronomy": {
        "subjects": ["Jupiter's moons", "the Orion nebula", "a meteor shower", "the Andromeda galaxy", "Saturn's rings"],
        "verbs": ["were clearly visible", "looked faint but stunning", "appeared after midnight", "filled the eyepiece", "were hidden by clouds"],
        "details": ["through the 8-inch telescope", "from the dark-sky site", "with averted vision", "at magnitude four", "near the zenith"],
    },
    "football": {
        "subjects": ["the midfield", "our striker", "the back four", "the new goalkeeper", "the away team"],
        "verbs": ["pressed relentlessly", "scored a late winner", "held the line", "made three saves", "controlled possession"],
        "details": ["in the second half", "from a corner kick", "despite the red card", "on a wet pitch", "in stoppage time"],
    },
    "gardening": {
        "subjects": ["the tomato seedlings", "my rose bushes", "the compost heap", "the raised beds", "the lavender"],
        "verbs": ["finally flowered", "needed pruning", "attracted bees", "survived the frost", "grew twice as fast"],
        "details": ["after a week of rain", "with a layer of mulch", "in the south-facing corner", "once I added bone meal", "in early spring"],
    },
    "jazz": {
        "subjects": ["the saxophone solo", "the walking bass line", "the trio", "a Coltrane record", "the pianist"],
        "verbs": ["swung hard", "modulated unexpectedly", "quoted a standard", "slowed into a ballad", "traded fours with the drums"],
        "details": ["over the ii-V-I changes", "in the last chorus", "at the late set", "with a muted trumpet", "in B-flat"],
    },
    "programming": {
        "subjects": ["the parser", "our CI pipeline", "the memory leak", "the new API", "a race condition"],
        "verbs": ["broke after the upgrade", "was fixed with one line", "took a day to reproduce", "needed a rewrite", "passed every test"],
        "details": ["in the Rust service", "under heavy load", "behind a feature flag", "after adding a lock", "on the staging cluster"],
    },
}


def sample_corpus_rows() -> list[dict[str, Any]]:
    """The sample corpus as ``CORPUS_SCHEMA`` dicts (deterministic), planted bad rows included."""
    rng = random.Random(SEED)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows: list[dict[str, Any]] = []
    for index, (theme, parts) in enumerate(_THEMES.items()):
        user = f"user-{index + 1:02d}-{theme}"
        for n in range(6 + index % 3):
            sentences = [
                f"{rng.choice(parts['subjects']).capitalize()} {rng.choice(parts['verbs'])} {rng.choice(parts['details'])}."
                for _ in range(2 + rng.randrange(3))
            ]
            rows.append(
                {
                    "user_id": user,
                    "doc_id": f"{theme}-{n:03d}",
                    "text": " ".join(sentences),
                    "timestamp": start + timedelta(days=7 * n + index),
                }
            )
    # Planted bad rows: both end up in dead_letter-*.parquet with a reason.
    rows.append({"user_id": "user-01-cooking", "doc_id": "cooking-blank", "text": "   ", "timestamp": start})
    rows.append(dict(rows[0]))  # exact duplicate of (user-01-cooking, cooking-000)
    return rows


def write_sample_corpus(path: str | os.PathLike[str]) -> str:
    """Write the sample corpus to ``path`` (a Parquet file: local, or any URI :mod:`commer_core.storage`
    reaches, e.g. ``s3://bucket/corpus/sample.parquet`` to try the job on an object store), atomically."""
    table = pa.Table.from_pylist(sample_corpus_rows(), schema=CORPUS_SCHEMA)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(os.fspath(path), buffer.getvalue().to_pybytes())
    return os.fspath(path)


def sample_corpus_path() -> Path:
    """The cached sample corpus file, generated on first use under ``$COMMER_HOME``."""
    from commer_core.backbone import commer_home

    path = commer_home() / "sample-corpus" / f"v{SAMPLE_VERSION}" / "corpus.parquet"
    if not path.exists():
        write_sample_corpus(path)
    return path
