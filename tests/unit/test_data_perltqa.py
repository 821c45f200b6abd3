"""PerLTQA readers on the real v2 excerpts (../shared/data/perltqa) and on synthetic v1 files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from commer_core.data import (
    DataFormatError,
    find_perltqa_files,
    load_perltqa,
    load_perltqa_memory,
    load_perltqa_qa,
    prepare_task_data,
    read_examples_parquet,
    split_characters,
    split_perltqa,
)

REPO = Path(__file__).resolve().parents[2]
PERLTQA = REPO.parent / "shared" / "data" / "perltqa"
MEMORY = PERLTQA / "perltmem_en_v2.json"
QA = PERLTQA / "perltqa_en_v2.json"

real = pytest.mark.skipif(not (MEMORY.is_file() and QA.is_file()), reason=f"PerLTQA excerpts not found in {PERLTQA}")


def _kinds(docs) -> Counter:
    return Counter(d.doc_id.split(":")[0] for d in docs)


@real
def test_real_memory_documents_per_character() -> None:
    memory = load_perltqa_memory(MEMORY)
    assert list(memory) == ["Wang Xiaoming", "Zhang Xiaohong"]
    assert _kinds(memory["Wang Xiaoming"]) == {"event": 24, "dialogue": 23, "relationship": 9, "profile": 1}
    assert _kinds(memory["Zhang Xiaohong"]) == {"event": 23, "dialogue": 21, "relationship": 9, "profile": 1}
    docs = {d.doc_id: d for d in memory["Wang Xiaoming"]}
    assert "Gender: male" in docs["profile"].text.splitlines()
    assert "Relationship: elder sister" in docs["relationship:1_0"].text
    assert docs["event:1_0_0"].text.startswith("Wang Xiaoming and his sister") and docs["event:1_0_0"].timestamp == "2022-05-12"
    dialogue = docs["dialogue:1_0_0#0"]
    assert dialogue.text.splitlines()[0].startswith("Wang Xiaoming: We're finally here")
    assert dialogue.timestamp.startswith("2022-05-12T10:00")
    assert all(d.text.strip() for docs in memory.values() for d in docs)


@real
def test_real_qa_examples() -> None:
    examples = load_perltqa(MEMORY, QA)
    assert Counter(e.user_id for e in examples) == {"Wang Xiaoming": 242, "Zhang Xiaohong": 202}
    assert len({e.example_id for e in examples}) == len(examples)
    first = examples[0]
    assert (first.user_id, first.input, first.target) == (
        "Zhang Xiaohong", "What is the gender of Zhang Xiaohong?", "Zhang Xiaohong is female."
    )
    assert len(first.documents) == 54
    text = " ".join(e.input + e.target for e in examples)
    assert "&#39;" not in text and "&quot;" not in text and "'" in text


@real
def test_real_reference_memories_resolve_to_documents() -> None:
    """Every QA 'Reference Memory' id of the excerpt names one of our documents."""
    memory = load_perltqa_memory(MEMORY)
    ids = {name: {d.doc_id.split(":", 1)[-1] for d in docs} for name, docs in memory.items()}
    for entry in json.loads(QA.read_text(encoding="utf-8")):
        for name, groups in entry.items():
            for group in ("social_relationship", "events", "dialogues"):
                for wrapper in groups[group]:
                    assert set(wrapper) <= ids[name], (name, group, set(wrapper) - ids[name])


@real
def test_real_prepare_split(tmp_path: Path) -> None:
    for path in (MEMORY, QA):
        (tmp_path / path.name).symlink_to(path)
    assert find_perltqa_files(tmp_path) == (tmp_path / MEMORY.name, tmp_path / QA.name)
    splits, members = split_perltqa(tmp_path, n_test=1, seed=0)
    assert len(members["train"]) == len(members["test"]) == 1
    (test_user,) = members["test"]
    assert {e.user_id for e in splits["test"]} == {test_user}
    train_total = 444 - len(splits["test"])
    assert len(splits["dev"]) == round(train_total * 0.1)
    assert len(splits["train"]) + len(splits["dev"]) == train_total
    assert not {e.example_id for e in splits["train"]} & {e.example_id for e in splits["dev"]}
    again, _ = split_perltqa(tmp_path, n_test=1, seed=0)
    assert [e.example_id for e in again["dev"]] == [e.example_id for e in splits["dev"]]
    with pytest.raises(ValueError, match="n_test"):
        split_perltqa(tmp_path, n_test=5)


@real
def test_real_prepare_writes_examples_and_corpora(tmp_path: Path) -> None:
    for path in (MEMORY, QA):
        (tmp_path / path.name).symlink_to(path)
    counts = prepare_task_data("perltqa", tmp_path, tmp_path / "out", n_test_characters=1)
    assert sum(c["examples"] for c in counts.values()) == 444
    assert {c["users"] for c in counts.values()} == {1}
    assert sorted(c["corpus_rows"] for c in counts.values()) in ([54, 54, 57], [54, 57, 57])
    info = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert info["characters"]["test"] != info["characters"]["train"]
    test = read_examples_parquet(tmp_path / "out" / "test.parquet")
    assert {e.user_id for e in test} == set(info["characters"]["test"])


def test_split_characters_full_set_is_27_5_and_deterministic() -> None:
    names = [f"Character {i}" for i in range(32)]
    train, test = split_characters(names)
    assert (len(train), len(test)) == (27, 5) and not set(train) & set(test)
    assert split_characters(list(reversed(names))) == (train, test)
    assert split_characters(names, seed=1) != (train, test)
    assert split_characters(["a", "b"], n_test=1) in ((["a"], ["b"]), (["b"], ["a"]))
    with pytest.raises(ValueError):
        split_characters(["a", "a", "b"], n_test=1)


# --- synthetic v1 and malformed files --------------------------------------------------------

def _character(name: str, prefix: str) -> dict:
    return {
        "profile": {"Protagonist": name, "Age": 30, "Hobbies": ["chess", "go"]},
        "social_relationship": {f"{prefix}_0": {"Supporting Characters": "Li", "Relationship": "friend"}},
        "events": {f"{prefix}_0_0": {"content": "Went to Paris &amp; Rome.", "Creation Time": "June 2020"}},
        "dialogues": {
            f"{prefix}_0_0#0": {
                "events": f"{prefix}_0_0",
                "contents": {"2020-06-02 09:00": [f"{name}: second"], "2020-06-01 09:00": [f"{name}: first"]},
            }
        },
    }


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_v1_list_of_stringified_dicts(tmp_path: Path) -> None:
    ana, bo = _character("Ana", "1"), _character("Bo", "2")
    memory = _write(tmp_path / "perltmem_en_v1.json", [repr(ana), json.dumps(bo)])  # Python literal and JSON strings
    qa = _write(
        tmp_path / "perltqa_en_v1.json",
        [
            {"Ana": {"profile": [repr({"Question": "Age?", "Answer": "30"})], "events": [{"1_0_0": [{"Question": "Where?", "Answer": "Paris &amp; Rome"}]}]}},
            repr({"Bo": {"dialogues": {"2_0_0#0": [{"Question": "First?", "Answer": "first"}]}}}),
        ],
    )
    docs = load_perltqa_memory(memory)
    assert list(docs) == ["Ana", "Bo"]
    ana_docs = {d.doc_id: d for d in docs["Ana"]}
    assert ana_docs["profile"].text == "Protagonist: Ana\nAge: 30\nHobbies: chess, go"
    assert ana_docs["event:1_0_0"].text == "Went to Paris & Rome." and ana_docs["event:1_0_0"].timestamp == "2020-06-01"
    assert ana_docs["dialogue:1_0_0#0"].text == "Ana: first\nAna: second"
    examples = load_perltqa(memory, qa)
    assert [(e.user_id, e.input, e.target) for e in examples] == [
        ("Ana", "Age?", "30"), ("Ana", "Where?", "Paris & Rome"), ("Bo", "First?", "first")
    ]
    assert load_perltqa_qa(qa)["Ana"][1][0] == "Ana/events/0"


def test_v1_never_evaluates_code(tmp_path: Path) -> None:
    memory = _write(tmp_path / "perltmem.json", ["__import__('os').system('echo pwned')"])
    with pytest.raises(DataFormatError, match=r"perltmem\.json: item 0"):
        load_perltqa_memory(memory)


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (lambda c: c.pop("events"), "character 'Ana': missing section 'events'"),
        (lambda c: c["events"]["1_0_0"].pop("content"), "character 'Ana' event '1_0_0': missing key 'content'"),
        (lambda c: c["events"]["1_0_0"].update(content=3), "event '1_0_0' 'content': expected a string, got int"),
        (lambda c: c["dialogues"]["1_0_0#0"].update(contents=[]), "dialogue '1_0_0#0' 'contents': expected an object"),
        (lambda c: c.update(social_relationship="{broken"), "'social_relationship': string is neither JSON"),
    ],
)
def test_malformed_memory(tmp_path: Path, mutate, fragment: str) -> None:
    character = _character("Ana", "1")
    mutate(character)
    path = _write(tmp_path / "perltmem_en_v2.json", {"Ana": character})
    with pytest.raises(DataFormatError) as info:
        load_perltqa_memory(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize(
    "qa,fragment",
    [
        ({"Ana": {"events": [{"1_0_0": [{"Answer": "x"}]}]}}, "item 0 ('Ana') 'events' '1_0_0' item 0 'Question': missing"),
        ({"Ana": {"profile": [{"Question": "q", "Answer": 1}]}}, "'profile' 'Answer': expected a string, got int"),
        ({"Ana": {"profile": 5}}, "item 0 ('Ana') 'profile': expected a list of QA items"),
        ({"Zed": {"profile": [{"Question": "q", "Answer": "a"}]}}, "character 'Zed' is not in the memory file"),
    ],
)
def test_malformed_qa(tmp_path: Path, qa: dict, fragment: str) -> None:
    memory = _write(tmp_path / "perltmem_en_v2.json", {"Ana": _character("Ana", "1")})
    path = _write(tmp_path / "perltqa_en_v2.json", [qa])
    with pytest.raises(DataFormatError) as info:
        load_perltqa(memory, path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_bad_json_and_wrong_top_level(tmp_path: Path) -> None:
    bad = tmp_path / "perltmem_en_v2.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        load_perltqa_memory(bad)
    _write(bad, 7)
    with pytest.raises(DataFormatError, match="expected an object or a list of characters"):
        load_perltqa_memory(bad)
