"""Examples as the model sees them: selected documents, truncated input and target."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from commer_core.data.examples import Example
from commer_core.data.selection import select_documents
from commer_core.training.config import SELECTIONS, TrainingError


@dataclass(frozen=True)
class PreparedExample:
    """An example after truncation and document selection: what every method is scored on."""

    example_id: str
    user_id: str
    input: str
    target: str
    documents: tuple[str, ...]


def truncate_texts(tokenizer: Any, texts: Sequence[str], limit: int) -> list[str]:
    """Cut each text to its first ``limit`` tokens (decoded back to text)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [t if len(i) <= limit else tokenizer.decode(i[:limit]) for t, i in zip(texts, ids)]


def prepare_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    n_docs: int,
    selection: str = "bm25",
    seed: int = 0,
    max_input_tokens: int = 256,
    max_target_tokens: int = 64,
) -> list[PreparedExample]:
    """Select up to ``n_docs`` documents per example and truncate inputs and targets.

    Unlabelled examples (target None, e.g. LaMP test) are dropped. ``selection``
    ``first`` keeps the documents' own order (the autoencoding objective numbers them).
    """
    if selection not in SELECTIONS:
        raise TrainingError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    labelled = [e for e in examples if e.target is not None]
    inputs = truncate_texts(tokenizer, [e.input for e in labelled], max_input_tokens)
    targets = truncate_texts(tokenizer, [e.target or "" for e in labelled], max_target_tokens)
    prepared = []
    for e, inp, tgt in zip(labelled, inputs, targets):
        if selection == "first":
            docs = list(e.documents[:n_docs])
        else:
            docs = select_documents(e.input, e.documents, n_docs, selection, seed, example_id=e.example_id)
        prepared.append(PreparedExample(e.example_id, e.user_id, inp, tgt, tuple(d.text for d in docs)))
    return prepared


def sample_documents(batch: Sequence[PreparedExample], low: int | None, *, seed: int, step: int) -> list[PreparedExample]:
    """Each example keeps a random subset of ``low``..all of its documents (order kept); ``None`` keeps all.

    A pure function of (seed, step, example id), so an interrupted and resumed run draws the same.
    """
    if low is None:
        return list(batch)
    out = []
    for e in batch:
        if len(e.documents) <= low:
            out.append(e)
            continue
        rng = random.Random(f"commer-docs/{seed}/{step}/{e.example_id}")
        keep = sorted(rng.sample(range(len(e.documents)), rng.randint(low, len(e.documents))))
        out.append(dataclasses.replace(e, documents=tuple(e.documents[i] for i in keep)))
    return out


def examples_digest(examples: Sequence[PreparedExample]) -> str:
    """sha256 over what is scored (ids, inputs, targets, documents): equal digests, identical examples."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.example_id, e.input, e.target, list(e.documents)]).encode())
    return digest.hexdigest()
