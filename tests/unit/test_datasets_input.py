"""Examples as Hugging Face ``datasets``: prepare output reads with ``load_dataset("parquet")``, and
``train`` / ``evaluate`` read a ``save_to_disk`` folder or a Parquet dataset folder (commer_core.data.sources)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from commer_core.data import EXAMPLE_SCHEMA, ExampleColumnsError, prepare_task_data, read_examples_parquet
from commer_core.data.sources import load_train_dev, open_examples
from jobs.cli import cli
from schemas import CORPUS_SCHEMA
from tests.lamp_fixtures import write_lamp

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    write_lamp(root / "src", "lamp7")
    prepare_task_data("lamp7", root / "src", root / "prep")
    return root / "prep"


def load_parquet(prepared: Path, files: dict[str, str], tmp_path: Path):
    return datasets.load_dataset("parquet", data_files={s: str(prepared / f) for s, f in files.items()},
                                 cache_dir=str(tmp_path / "hf-cache"))


def test_prepare_output_loads_as_a_parquet_dataset_with_its_columns(prepared, tmp_path):
    examples = load_parquet(prepared, {"train": "train.parquet", "dev": "dev.parquet"}, tmp_path)
    assert examples["train"].column_names == EXAMPLE_SCHEMA.names
    assert examples["train"].num_rows == len(read_examples_parquet(prepared / "train.parquet")) > 0
    assert set(examples["train"][0]["documents"][0]) == {"doc_id", "text", "timestamp"}
    corpus = load_parquet(prepared, {"train": "corpus/train.parquet"}, tmp_path)
    assert corpus["train"].column_names == CORPUS_SCHEMA.names


def test_a_save_to_disk_dataset_dict_reads_as_the_prepare_output_does(prepared, tmp_path):
    hf = load_parquet(prepared, {"train": "train.parquet", "validation": "dev.parquet"}, tmp_path)
    hf.save_to_disk(str(tmp_path / "saved"))
    train, dev = load_train_dev(tmp_path / "saved")
    assert train == read_examples_parquet(prepared / "train.parquet")
    assert dev == read_examples_parquet(prepared / "dev.parquet")  # validation is the dev split
    assert open_examples(tmp_path / "saved").layout == "datasets save_to_disk DatasetDict"
    assert load_train_dev(prepared) == (train, dev)


def test_a_parquet_dataset_folder_splits_by_the_names_datasets_uses(prepared, tmp_path):
    hf = load_parquet(prepared, {"train": "train.parquet", "dev": "dev.parquet"}, tmp_path)
    (tmp_path / "mine" / "data").mkdir(parents=True)
    hf["train"].to_parquet(str(tmp_path / "mine" / "data" / "train-00000-of-00001.parquet"))
    hf["dev"].to_parquet(str(tmp_path / "mine" / "data" / "validation-00000-of-00001.parquet"))
    source = open_examples(tmp_path / "mine")
    assert source.layout == "Parquet dataset folder" and set(source.splits) == {"train", "validation"}
    assert source.read("dev") == read_examples_parquet(prepared / "dev.parquet")
    assert source.read("train") == read_examples_parquet(prepared / "train.parquet")


def test_a_hand_built_dataset_without_targets_and_with_sequence_documents(tmp_path):
    """An ML engineer's own table: int ids, no target column, documents as datasets' Sequence({...})."""
    features = datasets.Features({
        "example_id": datasets.Value("int64"), "user_id": datasets.Value("string"),
        "input": datasets.Value("string"),
        "documents": datasets.Sequence({"doc_id": datasets.Value("string"), "text": datasets.Value("string")}),
    })
    rows = {"example_id": [7], "user_id": ["ana"], "input": ["Write a tweet:"],
            "documents": [{"doc_id": ["a", "b"], "text": ["I swim.", "I cook."]}]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "own"))
    train, dev = load_train_dev(tmp_path / "own")
    assert dev is None and len(train) == 1
    example = train[0]
    assert (example.example_id, example.user_id, example.target) == ("7", "ana", None)
    assert [(d.doc_id, d.text, d.timestamp) for d in example.documents] == [("a", "I swim.", None),
                                                                            ("b", "I cook.", None)]


@pytest.mark.parametrize("columns, fragment", [
    ({"user": ["u"], "question": ["q"], "answer": ["a"]}, "missing column(s) 'example_id', 'user_id', 'input'"),
    ({"example_id": ["e"], "user_id": ["u"], "input": ["q"], "documents": [["just text"]]},
     "column 'documents' is list<item: string>"),
    ({"example_id": ["e"], "user_id": ["u"], "input": ["q"], "documents": [[{"id": "d", "text": "t"}]]},
     "documents lack field(s) 'doc_id'"),
])
def test_wrong_columns_are_one_clear_error_line_through_train(tmp_path, columns, fragment):
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ExampleColumnsError, match="not an examples table") as caught:
        load_train_dev(tmp_path / "bad")
    assert fragment in str(caught.value) and "expected columns example_id" in str(caught.value)
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "bad"), "--output", str(tmp_path / "run"),
                                      "--base-model", "tiny-random", "--no-progress"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and fragment in errors[0], result.output


def test_a_dataset_without_a_train_split_is_refused_naming_its_splits(prepared, tmp_path):
    load_parquet(prepared, {"test": "test.parquet"}, tmp_path).save_to_disk(str(tmp_path / "only-test"))
    with pytest.raises(ValueError, match=r"has no train split \(it has test\)"):
        load_train_dev(tmp_path / "only-test")


def test_train_runs_from_a_save_to_disk_folder(prepared, tmp_path):
    hf = load_parquet(prepared, {"train": "train.parquet", "validation": "dev.parquet"}, tmp_path)
    hf.save_to_disk(str(tmp_path / "saved"))
    result = CliRunner().invoke(cli, [
        "train", "--data", str(tmp_path / "saved"), "--output", str(tmp_path / "run"), "--steps", "1",
        "--base-model", "tiny-random", "-k", "2", "--lora-r", "2", "--batch-size", "2", "--docs-per-example", "2",
        "--max-doc-tokens", "16", "--max-dev-examples", "2", "--no-compare-baselines", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    # the dev check ran on the 'validation' split (without a dev split it reports 0 examples and no "trained")
    assert summary["steps"] == 1 and "trained" in summary["dev_perplexity"]
    recorded = json.loads((Path(summary["checkpoint"]) / "commer_config.json").read_text())["training"]
    assert str(tmp_path / "saved") in json.dumps(recorded)
