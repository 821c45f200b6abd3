"""pipelines/validate.py: rows -> CorpusDocs or dead letters with reasons, as Beam runs it (TestPipeline)."""

from __future__ import annotations

import re

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.validate import DEAD_LETTER_TAG, CorpusDoc, ValidateRows

ROWS = [
    ("f1", {"user_id": "u1", "doc_id": "d1", "text": "hello world"}),
    ("f1", {"user_id": "u1", "doc_id": 2, "text": "integer doc ids are stringified"}),
    ("f1", {"user_id": None, "doc_id": "d3", "text": "no user"}),
    ("f1", {"user_id": "", "doc_id": "d4", "text": "empty user"}),
    ("f2", {"user_id": "u2", "doc_id": "d5", "text": "   \n\t"}),
    ("f2", {"user_id": "u2", "doc_id": "d6", "text": None}),
    ("f2", {"user_id": 7, "doc_id": "d7", "text": "user id of the wrong type"}),
    ("f2", {"user_id": "u2", "doc_id": "d8", "text": 3.5}),
    ("f2", {"user_id": "u3", "doc_id": "dup", "text": "same text"}),
    ("f3", {"user_id": "u3", "doc_id": "dup", "text": "same text"}),
    ("f3", {"user_id": "u4", "doc_id": "clash", "text": "version one"}),
    ("f3", {"user_id": "u4", "doc_id": "clash", "text": "version two"}),
]


def _reason_head(reason: str) -> str:
    """A reason without its counts / type details: 'x is not a string (got int)' -> 'x is not a string'."""
    return re.sub(r" \((got \w+|\d+ \w+)\).*$", "", reason)


def test_validate_splits_rows_into_docs_and_dead_letters_with_reasons():
    with BeamTestPipeline() as p:
        out = p | beam.Create(ROWS) | "Validate" >> ValidateRows()
        assert_that(
            out["docs"] | beam.Map(lambda d: (d.user_id, d.doc_id, d.text)),
            equal_to(
                [
                    ("u1", "d1", "hello world"),
                    ("u1", "2", "integer doc ids are stringified"),
                    ("u3", "dup", "same text"),
                ]
            ),
            label="docs",
        )
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda r: (r["doc_id"], r["stage"], _reason_head(r["reason"]))),
            equal_to(
                [
                    ("d3", "validate", "user_id is null or empty"),
                    ("d4", "validate", "user_id is null or empty"),
                    ("d5", "validate", "text is empty or whitespace"),
                    ("d6", "validate", "text is null"),
                    ("d7", "validate", "user_id is not a string"),
                    ("d8", "validate", "text is not a string"),
                    ("dup", "validate", "duplicate (user_id, doc_id): same text as another row that was kept"),
                    ("clash", "validate", "duplicate (user_id, doc_id) with conflicting texts"),
                    ("clash", "validate", "duplicate (user_id, doc_id) with conflicting texts"),
                ]
            ),
            label="dead letters",
        )
        sources = out[DEAD_LETTER_TAG] | beam.Map(lambda r: r["source"])
        assert_that(sources | beam.combiners.Count.Globally(), equal_to([9]), label="conservation")
        assert_that(sources | beam.Filter(lambda s: s is None), equal_to([]), label="sources kept")


def test_validate_honours_custom_column_names():
    rows = [{"author": "a", "post": "p1", "body": "text"}, {"author": "a", "post": "p2", "body": ""}]
    with BeamTestPipeline() as p:
        out = p | beam.Create(rows) | ValidateRows("author", "post", "body")
        assert_that(out["docs"], equal_to([CorpusDoc("a", "p1", "text", None)]), label="docs")
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda r: (r["user_id"], r["doc_id"], r["reason"])),
            equal_to([("a", "p2", "text is empty or whitespace")]),
            label="dead",
        )
