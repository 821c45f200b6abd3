"""Choose which of a user's documents go with an example (the paper uses BM25, up to 8).

Why deterministic: the same example must see the same documents in every epoch,
process and machine, so random choice is seeded from the example itself (not the
global RNG) and every ranking breaks ties by the documents' original order.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

from rank_bm25 import BM25Okapi

from commer_core.data.examples import Document, parse_timestamp

Strategy = Literal["bm25", "random", "recent"]
STRATEGIES: tuple[str, ...] = ("bm25", "random", "recent")

_WORD = re.compile(r"\w+")


def bm25_words(text: str) -> list[str]:
    """Lowercased words: the BM25 vocabulary for queries and documents alike (not a model's tokenizer)."""
    return _WORD.findall(text.lower())


def stable_key(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that, unlike ``hash()``, is the same in every process."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def _bm25_order(query: str, documents: Sequence[Document]) -> list[int]:
    corpus = [bm25_words(d.text) for d in documents]
    terms = bm25_words(query)
    if not terms or not any(corpus):  # BM25Okapi divides by the vocabulary size
        return list(range(len(documents)))
    scores = BM25Okapi(corpus).get_scores(terms)
    return sorted(range(len(documents)), key=lambda i: (-float(scores[i]), i))


def _random_order(documents: Sequence[Document], n: int, key: str, seed: int) -> list[int]:
    rng = random.Random(stable_key("random", seed, key))
    return sorted(rng.sample(range(len(documents)), min(n, len(documents))))


def _recent_order(documents: Sequence[Document]) -> list[int]:
    floor = datetime.min.replace(tzinfo=timezone.utc)
    times = [parse_timestamp(d.timestamp) for d in documents]
    return sorted(range(len(documents)), key=lambda i: (times[i] is None, -(times[i] or floor).timestamp(), i))


def select_documents(
    query: str,
    documents: Sequence[Document],
    n: int,
    strategy: Strategy = "bm25",
    seed: int = 0,
    *,
    example_id: str = "",
) -> list[Document]:
    """Up to ``n`` of ``documents`` for an example whose input is ``query``.

    - ``bm25``: BM25Okapi scores against the query, best first.
    - ``random``: a sample seeded by ``(seed, example_id)`` (the query when no id is
      given), kept in original order.
    - ``recent``: newest timestamp first; documents without a timestamp last.

    Ties keep the original order. With fewer than ``n`` documents all are returned
    (ranked by the same rule).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0 (got {n!r})")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; expected one of {STRATEGIES}")
    if n == 0 or not documents:
        return []
    if strategy == "bm25":
        order = _bm25_order(query, documents)
    elif strategy == "random":
        order = _random_order(documents, n, example_id or query, seed)
    else:
        order = _recent_order(documents)
    return [documents[i] for i in order[:n]]
