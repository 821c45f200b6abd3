"""The autoencoding pretraining data: corpus readers and example construction."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from commer_core.data import DataFormatError
from commer_core.pretraining import autoencode_examples, autoencode_splits, read_text_corpus, split_corpus


def test_read_text_corpus_formats(tmp_path):
    pq.write_table(pa.table({"text": ["alpha doc", "", None, "beta doc"], "user_id": ["u"] * 4}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "gamma"}) + "\n\n" + json.dumps({"text": "delta"}) + "\n")
    (tmp_path / "c.txt").write_text("first paragraph\nstill first\n\nsecond paragraph\n")
    (tmp_path / "ignored.csv").write_text("x")
    assert read_text_corpus(tmp_path) == ["alpha doc", "beta doc", "gamma", "delta",
                                          "first paragraph\nstill first", "second paragraph"]
    (tmp_path / "lines.txt").write_text("one\ntwo\nthree\n")
    assert read_text_corpus(tmp_path / "lines.txt") == ["one", "two", "three"]


def test_read_text_corpus_errors_name_file_and_item(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: line 2"):
        read_text_corpus(bad)
    bad.write_text(json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: line 1.*'text'"):
        read_text_corpus(bad)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(DataFormatError, match=r"p\.parquet: no 'text' column"):
        read_text_corpus(tmp_path / "p.parquet")
    with pytest.raises(FileNotFoundError):
        read_text_corpus(tmp_path / "missing")


def test_autoencode_examples_follow_the_paper_format():
    texts = [f"text number {i}" for i in range(20)]
    examples = autoencode_examples(texts, 30, max_docs=4, seed=1)
    assert examples == autoencode_examples(texts, 30, max_docs=4, seed=1)  # deterministic
    assert examples != autoencode_examples(texts, 30, max_docs=4, seed=2)
    for e in examples:
        assert 1 <= len(e.documents) <= 4
        for i, d in enumerate(e.documents, 1):
            assert d.text.startswith(f"Document {i}: ")
        n = int(e.input.removeprefix("What does document ").removesuffix(" contain?"))
        assert e.documents[n - 1].text == f"Document {n}: {e.target}"
        assert len({d.text for d in e.documents}) == len(e.documents)
    assert len(autoencode_examples(texts)) == 20


def test_split_corpus_keeps_dev_documents_out_of_training(tmp_path):
    texts = [f"doc {i}" for i in range(100)]
    train, dev = split_corpus(texts, dev_fraction=0.1)
    assert len(dev) == 10 and not set(train) & set(dev) and set(train) | set(dev) == set(texts)
    (tmp_path / "c.txt").write_text("\n".join(texts))
    tr, dv = autoencode_splits(tmp_path / "c.txt", max_docs=3, n_dev=5, dev_fraction=0.1)
    assert len(tr) == 90 and len(dv) == 5
    assert not {e.target for e in tr} & {d.text.split(": ", 1)[1] for e in dv for d in e.documents}
