"""The paper's pretraining stage: multi-document autoencoding on any text corpus.

Each example holds a few documents, each prefixed ``"Document i: "``; the input asks
``"What does document n contain?"`` and the target is document n's text. Trained
like a task (compress each document, mean-pool, prefix the frozen generator), the
compressor learns to keep a document's content recoverable from the merged prompt.
The examples are ordinary :class:`~commer_core.data.Example` objects, so the same
trainer runs them (``--objective autoencode``) and the resulting checkpoint can
initialise task training (``--init-from``).

Corpora: Parquet files with a ``text`` column (a ``prepare`` corpus qualifies),
JSON-lines files with a ``"text"`` field, or plain text files (paragraphs separated
by blank lines; a file without blank lines gives one document per line). A folder
means every such file in it, sorted by name.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from commer_core.data.examples import DataFormatError, Document, Example
from commer_core.data.selection import stable_key

TEXT_SUFFIXES = (".parquet", ".jsonl", ".json", ".txt", ".md")
_BLANK_LINE = re.compile(r"\n\s*\n")


def read_text_corpus(path: str | Path, *, column: str = "text") -> list[str]:
    """Non-empty document texts from a file or every corpus file in a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in TEXT_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no {'/'.join(TEXT_SUFFIXES)} files")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"text corpus {path} does not exist")
    texts: list[str] = []
    for f in files:
        texts.extend(_read_file(f, column))
    return [t for t in (t.strip() for t in texts) if t]


def _read_file(path: Path, column: str) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if column not in names:
            raise DataFormatError(f"{path}: no {column!r} column (columns: {names})")
        values = pq.read_table(path, columns=[column]).column(column).to_pylist()
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, str):
                raise DataFormatError(f"{path}: row {i}: {column!r} is {type(v).__name__}, not text")
        return [v for v in values if v]
    raw = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".json"):
        out = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}: line {i}: not JSON ({exc})") from exc
            if not isinstance(item, dict) or not isinstance(item.get(column), str):
                raise DataFormatError(f"{path}: line {i}: expected an object with a string {column!r} field")
            out.append(item[column])
        return out
    parts = _BLANK_LINE.split(raw)
    return parts if len(parts) > 1 else raw.splitlines()


def question(n: int) -> str:
    return f"What does document {n} contain?"


def autoencode_examples(
    texts: Sequence[str],
    n_examples: int | None = None,
    *,
    max_docs: int = 8,
    min_docs: int = 1,
    seed: int = 0,
    id_prefix: str = "ae",
) -> list[Example]:
    """Examples of the autoencoding objective, a pure function of (texts, seed).

    Each draws between ``min_docs`` and ``max_docs`` distinct texts, numbers them
    ``Document 1: ...``, and asks for one of them. ``n_examples`` defaults to the
    number of texts (each text is the target about once).
    """
    if not texts:
        raise ValueError("the corpus holds no text")
    if not 1 <= min_docs <= max_docs:
        raise ValueError(f"need 1 <= min_docs <= max_docs, got {min_docs}, {max_docs}")
    rng = random.Random(f"commer-autoencode/{seed}")
    n_examples = len(texts) if n_examples is None else n_examples
    upper = min(max_docs, len(texts))
    lower = min(min_docs, upper)
    examples = []
    for j in range(n_examples):
        m = rng.randint(lower, upper)
        chosen = rng.sample(range(len(texts)), m)
        n = rng.randint(1, m)
        docs = [Document(f"{id_prefix}-{j}-{i}", f"Document {i}: {texts[t]}") for i, t in enumerate(chosen, 1)]
        examples.append(Example(f"{id_prefix}-{j}", f"{id_prefix}-{j}", question(n), texts[chosen[n - 1]], docs))
    return examples


def split_corpus(texts: Sequence[str], *, dev_fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, dev) texts by a seeded hash of each text, so dev documents are never trained on."""
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    unique = list(dict.fromkeys(texts))
    ranked = sorted(range(len(unique)), key=lambda i: (stable_key("ae-dev", seed, unique[i]), i))
    n_dev = round(len(unique) * dev_fraction)
    dev = set(ranked[:n_dev])
    return [t for i, t in enumerate(unique) if i not in dev], [t for i, t in enumerate(unique) if i in dev]


def autoencode_splits(
    path: str | Path,
    *,
    max_docs: int = 8,
    n_train: int | None = None,
    n_dev: int = 64,
    dev_fraction: float = 0.05,
    seed: int = 0,
) -> tuple[list[Example], list[Example]]:
    """Train and dev autoencoding examples from a corpus, over disjoint documents."""
    train_texts, dev_texts = split_corpus(read_text_corpus(path), dev_fraction=dev_fraction, seed=seed)
    train = autoencode_examples(train_texts, n_train, max_docs=max_docs, seed=seed, id_prefix="ae-train")
    dev = autoencode_examples(dev_texts, n_dev, max_docs=max_docs, seed=seed + 1, id_prefix="ae-dev") if dev_texts else []
    return train, dev
