"""LaMP readers on fixture files built from the documented format."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.lamp_fixtures import LAMP4_PREFIX, LAMP7_PREFIX, outputs, questions, write_json, write_lamp

from commer_core.data import LAMP_PREFIXES, DataFormatError, lamp_splits, load_lamp, normalize_task


def test_prefixes_are_the_official_strings() -> None:
    assert LAMP_PREFIXES == {"lamp4": LAMP4_PREFIX, "lamp7": LAMP7_PREFIX}


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_load_lamp7(tmp_path: Path, layout: str) -> None:
    write_lamp(tmp_path, "lamp7", layout=layout)
    examples = load_lamp("lamp7", tmp_path, "dev")
    assert [e.example_id for e in examples] == ["dev0", "dev1", "dev2"]
    first = examples[0]
    assert first.user_id == "dev0" and first.input == LAMP7_PREFIX + "dev input 0" and first.target == "dev output 0"
    assert [d.doc_id for d in first.documents] == ["000", "001", "002", "003"]
    assert first.documents[0].text == "user 0 wrote item 0 about topic0"
    assert [d.timestamp for d in first.documents] == ["2020-01-01", None, "2020-01-03", None]
    assert lamp_splits(tmp_path) == ["train", "dev", "test"]


def test_load_lamp4_joins_title_and_text(tmp_path: Path) -> None:
    write_lamp(tmp_path, "lamp4")
    doc = load_lamp("LaMP-4", tmp_path, "train")[1].documents[2]
    assert doc.text == "Title 2 user 1 wrote item 2 about topic2"


def test_test_split_has_no_targets(tmp_path: Path) -> None:
    write_lamp(tmp_path, "lamp7")
    examples = load_lamp("lamp7", tmp_path, "test")
    assert len(examples) == 3 and all(e.target is None for e in examples)


def test_missing_outputs_for_train_is_an_error(tmp_path: Path) -> None:
    write_json(tmp_path / "train_questions.json", questions("lamp7", "train"))
    with pytest.raises(FileNotFoundError, match="train_outputs.json"):
        load_lamp("lamp7", tmp_path, "train")


def test_missing_split_and_unknown_task(tmp_path: Path) -> None:
    write_lamp(tmp_path, "lamp7", splits=("train",))
    with pytest.raises(FileNotFoundError, match="dev_questions.json"):
        load_lamp("lamp7", tmp_path, "dev")
    with pytest.raises(ValueError, match="unknown LaMP task"):
        normalize_task("lamp3")


def _corrupt(tmp_path: Path, task: str, mutate) -> tuple[Path, Path]:
    data_q, data_o = questions(task, "train"), outputs(task, "train")
    mutate(data_q, data_o)
    q = write_json(tmp_path / "train" / "train_questions.json", data_q)
    o = write_json(tmp_path / "train" / "train_outputs.json", data_o)
    return q, o


def test_bad_json_names_file(tmp_path: Path) -> None:
    write_lamp(tmp_path, "lamp7")
    path = tmp_path / "dev" / "dev_questions.json"
    path.write_text('[{"id": "dev0",', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"dev_questions\.json: not valid JSON"):
        load_lamp("lamp7", tmp_path, "dev")


def test_missing_profile_names_file_and_item(tmp_path: Path) -> None:
    q, _ = _corrupt(tmp_path, "lamp7", lambda dq, do: dq[1].pop("profile"))
    with pytest.raises(DataFormatError) as info:
        load_lamp("lamp7", tmp_path, "train")
    message = str(info.value)
    assert str(q) in message and "item 1 (id 'train1')" in message and "'profile'" in message


def test_id_mismatch_names_item(tmp_path: Path) -> None:
    def mutate(dq, do):
        do["golds"][2]["id"] = "elsewhere"

    q, o = _corrupt(tmp_path, "lamp7", mutate)
    with pytest.raises(DataFormatError) as info:
        load_lamp("lamp7", tmp_path, "train")
    message = str(info.value)
    assert str(q) in message and "item 2 (id 'train2')" in message and str(o) in message


def test_extra_gold_names_outputs_file(tmp_path: Path) -> None:
    _, o = _corrupt(tmp_path, "lamp7", lambda dq, do: do["golds"].append({"id": "ghost", "output": "x"}))
    with pytest.raises(DataFormatError, match=r"train_outputs\.json: golds with ids \['ghost'\]"):
        load_lamp("lamp7", tmp_path, "train")


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (lambda dq, do: dq[0].update(input=5), "item 0 (id 'train0'): 'input' has type int"),
        (lambda dq, do: dq[0].update(input="no prefix"), "does not start with the lamp4 prefix"),
        (lambda dq, do: dq[1]["profile"][3].pop("title"), "item 1 (id 'train1') profile item 3: missing key 'title'"),
        (lambda dq, do: dq[1]["profile"][0].update(date="12/01/2020"), "profile item 0: 'date' must be"),
        (lambda dq, do: dq.append(dict(dq[0])), "item 3 (id 'train0'): duplicate id"),
        (lambda dq, do: dq.__setitem__(2, "text"), "item 2: expected an object, got str"),
        (lambda dq, do: do.update(task="LaMP_7"), "task is 'LaMP_7', expected 'LaMP_4'"),
        (lambda dq, do: do["golds"][0].update(output=None), "gold 0 (id 'train0'): 'output' has type NoneType"),
    ],
)
def test_malformed_items(tmp_path: Path, mutate, fragment: str) -> None:
    _corrupt(tmp_path, "lamp4", mutate)
    with pytest.raises(DataFormatError, match="train_(questions|outputs).json") as info:
        load_lamp("lamp4", tmp_path, "train")
    assert fragment in str(info.value)


def test_questions_not_a_list(tmp_path: Path) -> None:
    write_json(tmp_path / "test_questions.json", {"id": "x"})
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        load_lamp("lamp7", tmp_path, "test")


def test_integer_ids_are_stringified(tmp_path: Path) -> None:
    data = questions("lamp7", "test")
    data[0]["id"] = 17
    data[0]["profile"][0]["id"] = 4
    write_json(tmp_path / "test_questions.json", data)
    example = load_lamp("lamp7", tmp_path, "test")[0]
    assert example.example_id == "17" and example.documents[0].doc_id == "4"
