"""Validation steps: corpus rows in, valid documents and dead letters out.

Every row read leaves this stage exactly once, either as a :class:`CorpusDoc` or as
a dead letter (``schemas.DEAD_LETTER_SCHEMA`` dict with a reason), so the job can
prove ``rows read = documents compressed + dead letters``.

Rules (the row checks themselves live in :mod:`schemas.validation`):

* a row that fails :func:`schemas.check_row` (null/empty user_id, null/blank text,
  wrong types, invalid characters, ...) is dead-lettered with check_row's reason;
* rows sharing a ``(user_id, doc_id)``: when their texts are identical one is kept
  and the others are dead-lettered as duplicates; when the texts differ, none of
  them can be trusted, so all are dead-lettered as conflicting. The choice of the
  kept row does not depend on input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import check_row, dead_letter_row, normalize_row, text_sha256

METRICS_NAMESPACE = "commer"
DEAD_LETTER_TAG = "dead_letter"


class CorpusDoc(NamedTuple):
    """One valid document, with the columns renamed to the corpus contract."""

    user_id: str
    doc_id: str
    text: str
    source: str | None = None

    def key(self) -> tuple[str, str, str]:
        """``(user_id, doc_id, text_sha256)``: what a store's document index and the cache know it by."""
        return self.user_id, self.doc_id, text_sha256(self.text)


class CheckRows(beam.DoFn):
    """Row-level checks; emits CorpusDoc, or a dead letter on the ``dead_letter`` tag.

    Input elements are ``(source_file, row_dict)`` (as ``ReadAllFromParquet(with_filename=True)``
    yields them) or bare row dicts.
    """

    def __init__(self, user_column: str = "user_id", doc_id_column: str = "doc_id", text_column: str = "text"):
        self._columns = dict(user_column=user_column, doc_id_column=doc_id_column, text_column=text_column)
        self._rows_read = Metrics.counter(METRICS_NAMESPACE, "rows_read")

    def process(self, element: Any) -> Iterable[Any]:
        self._rows_read.inc()
        source, row = _split_source(element)
        reason = check_row(row, **self._columns)
        if reason is not None:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG, dead_letter_row(row, reason, "validate", source, **self._columns)
            )
            return
        clean = normalize_row(row, **self._columns)
        yield CorpusDoc(clean["user_id"], clean["doc_id"], clean["text"], source)


def _split_source(element: Any) -> tuple[str | None, Any]:
    if isinstance(element, tuple) and len(element) == 2 and isinstance(element[1], Mapping):
        return (element[0] if isinstance(element[0], str) else None), element[1]
    return None, element


class ResolveDuplicates(beam.DoFn):
    """Input ``((user_id, doc_id), [CorpusDoc, ...])``; keeps at most one document per key."""

    def process(self, element: tuple[tuple[str, str], Iterable[CorpusDoc]]) -> Iterable[Any]:
        _, docs = element
        docs = sorted(docs, key=lambda d: (d.text, d.source or ""))
        if len(docs) == 1:
            yield docs[0]
            return
        if all(d.text == docs[0].text for d in docs):
            yield docs[0]
            extra = docs[1:]
            reason = f"duplicate (user_id, doc_id): same text as another row that was kept ({len(docs)} copies)"
        else:
            extra = docs
            reason = (
                f"duplicate (user_id, doc_id) with conflicting texts ({len(docs)} rows); "
                "none kept, fix the source"
            )
        for doc in extra:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter_row(doc._asdict(), reason, "validate", doc.source))


class ValidateRows(beam.PTransform):
    """Corpus rows -> ``{"docs": CorpusDoc, "dead_letter": dead-letter dict}``."""

    def __init__(self, user_column: str = "user_id", doc_id_column: str = "doc_id", text_column: str = "text"):
        super().__init__()
        self._columns = (user_column, doc_id_column, text_column)

    def expand(self, rows: beam.PCollection) -> dict[str, beam.PCollection]:
        checked = rows | "CheckRows" >> beam.ParDo(CheckRows(*self._columns)).with_outputs(
            DEAD_LETTER_TAG, main="docs"
        )
        resolved = (
            checked.docs
            | "KeyByUserAndDocId" >> beam.Map(lambda d: ((d.user_id, d.doc_id), d)).with_output_types(
                tuple[tuple[str, str], Any]
            )
            | "GroupByUserAndDocId" >> beam.GroupByKey()
            | "ResolveDuplicates" >> beam.ParDo(ResolveDuplicates()).with_outputs(DEAD_LETTER_TAG, main="docs")
        )
        dead = (checked[DEAD_LETTER_TAG], resolved[DEAD_LETTER_TAG]) | "FlattenValidationDeadLetters" >> beam.Flatten()
        return {"docs": resolved.docs, DEAD_LETTER_TAG: dead}
