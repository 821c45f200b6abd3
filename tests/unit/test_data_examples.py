"""Examples/corpus Parquet files and ``prepare_task_data`` end to end on fixtures."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tests.lamp_fixtures import write_lamp

from commer_core.data import Document, Example, prepare_task_data, read_examples_parquet, write_corpus_parquet, write_examples_parquet
from schemas import CORPUS_SCHEMA, validate_corpus_schema

EXAMPLES = [
    Example("e1", "u1", "input one", "target one", [Document("d1", "first doc", "2020-01-01"), Document("d2", "second doc")]),
    Example("e2", "u1", "input two", None, [Document("d1", "first doc", "2020-01-01"), Document("d3", "  ")]),
    Example("e3", "u2", "input three", "t3", []),
]


def test_examples_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    assert write_examples_parquet(EXAMPLES, path) == 3
    assert read_examples_parquet(path) == EXAMPLES
    assert not list(tmp_path.glob("*.tmp"))


def test_examples_load_with_datasets_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    write_examples_parquet(EXAMPLES, tmp_path / "train.parquet")
    ds = datasets.load_dataset("parquet", data_files={"train": str(tmp_path / "train.parquet")}, cache_dir=str(tmp_path / "cache"))["train"]
    assert ds.num_rows == 3
    assert ds[0]["documents"][1] == {"doc_id": "d2", "text": "second doc", "timestamp": None}
    assert ds[1]["target"] is None


def test_corpus_dedups_and_skips_invalid(tmp_path: Path) -> None:
    path = tmp_path / "corpus.parquet"
    counts = write_corpus_parquet([*EXAMPLES, ("u3", Document("x", "pair input", "2021-02-03T04:05:06+02:00"))], path)
    assert counts == {"rows": 3, "duplicates": 1, "skipped": 1}
    table = pq.read_table(path)
    assert table.schema.equals(CORPUS_SCHEMA)
    validate_corpus_schema(table.schema, source=str(path))
    rows = table.to_pylist()
    assert [(r["user_id"], r["doc_id"]) for r in rows] == [("u1", "d1"), ("u1", "d2"), ("u3", "x")]
    assert rows[0]["timestamp"] == datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert rows[2]["timestamp"] == datetime(2021, 2, 3, 2, 5, 6, tzinfo=timezone.utc)


def test_prepare_lamp(tmp_path: Path) -> None:
    write_lamp(tmp_path / "src", "lamp7")
    counts = prepare_task_data("lamp7", tmp_path / "src", tmp_path / "out")
    assert set(counts) == {"train", "dev", "test"}
    assert counts["train"] == {"examples": 3, "users": 3, "corpus_rows": 12, "corpus_skipped": 0}
    assert [e.target for e in read_examples_parquet(tmp_path / "out" / "test.parquet")] == [None] * 3
    assert pq.read_table(tmp_path / "out" / "corpus" / "dev.parquet").num_rows == 12
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["counts"] == counts


def test_prepare_lamp_present_splits_only(tmp_path: Path) -> None:
    write_lamp(tmp_path / "src", "lamp4", layout="flat", splits=("train", "test"))
    assert set(prepare_task_data("lamp4", tmp_path / "src", tmp_path / "out")) == {"train", "test"}
    assert not (tmp_path / "out" / "dev.parquet").exists()


def test_data_package_imports_neither_torch_beam_nor_click() -> None:
    import subprocess
    import sys

    code = "import sys, commer_core.data; print(sorted({'torch', 'apache_beam', 'click'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
