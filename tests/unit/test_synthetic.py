"""The synthetic LaMP generator: deterministic, official format, held-out users, aggregation needed."""

from __future__ import annotations

import json
import random
import re

import pytest

from commer_core.data.lamp import load_lamp
from commer_core.synthetic import (FACT_POOLS, HELDOUT, STYLE_FAMILIES, TRAIN, SLOTS, TWEETS, WIDE_TRAIN_FACTS,
                                   WIDE_TRAIN_STYLES, fact_values, make_personas, persona_of, shared_families,
                                   style_families, styled_profile, write_synthetic_lamp)

# Generic words of the neutral input -> the fact values that must then be predictable from the profile.
_GENERIC_FACTS = {"lamp7": {"my pet": ["pet_name"], "my city": ["city"], "my team": ["team"],
                            "my favourite food": ["food"], "my hobby": ["hobby"], "my job": ["job"],
                            "my sibling": ["sib_name"]},
                  "lamp4": {"the city": ["city"], "the local team": ["team"], "a local dish": ["food"],
                            "a popular pastime": ["hobby"], "pets": ["pet_kind"]}}


def _mentions(value: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(value.lower())}", text.lower()) is not None


def _profile_text(task: str, item: dict) -> str:
    return f"{item.get('title', '')} {item['text']}"


@pytest.mark.parametrize("task", ["lamp7", "lamp4"])
def test_synthetic_is_deterministic_and_read_by_the_official_readers(tmp_path, task):
    write_synthetic_lamp(tmp_path / "a", task=task, users={"train": 3, "dev": 2}, seed=4)
    write_synthetic_lamp(tmp_path / "b", task=task, users={"train": 3, "dev": 2}, seed=4)
    for split in ("train", "dev"):
        for kind in ("questions", "outputs"):
            name = f"{split}/{split}_{kind}.json"
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        examples = load_lamp(task, tmp_path / "a", split)
        assert len(examples) == (6 if split == "train" else 4)
    other = tmp_path / "c"
    write_synthetic_lamp(other, task=task, users={"train": 3, "dev": 2}, seed=5)
    assert (other / "dev/dev_outputs.json").read_bytes() != (tmp_path / "a/dev/dev_outputs.json").read_bytes()


def test_train_and_heldout_pools_share_no_style_family_and_no_fact_value():
    for feature, pools in STYLE_FAMILIES.items():
        assert not set(pools[TRAIN]) & set(pools[HELDOUT]), feature
        train_words = {str(v) for family in pools[TRAIN].values() for v in family}
        assert not train_words & {str(v) for family in pools[HELDOUT].values() for v in family}, feature
    for fact in FACT_POOLS[TRAIN]:
        assert not set(FACT_POOLS[TRAIN][fact]) & set(FACT_POOLS[HELDOUT][fact]), fact
    for split, pool in (("train", TRAIN), ("dev", HELDOUT), ("test", HELDOUT)):
        for persona in make_personas(20, seed=1, split=split):
            assert all(persona.facts[f] in FACT_POOLS[pool][f] for f in FACT_POOLS[pool])
            assert all(t.family in STYLE_FAMILIES[t.feature][pool] for t in persona.traits)


def _assert_only_train_users_change(tmp_path, **widen: bool) -> None:
    """A widening option changes the train users' files and leaves dev and test users byte-identical."""
    for split in ("dev", "test"):
        assert make_personas(20, seed=2, split=split, **widen) == make_personas(20, seed=2, split=split)
    write_synthetic_lamp(tmp_path / "plain", users={"train": 2, "dev": 2}, seed=2)
    write_synthetic_lamp(tmp_path / "wide", users={"train": 2, "dev": 2}, seed=2, **widen)
    for name, same in (("dev/dev_outputs.json", True), ("train/train_outputs.json", False)):
        assert ((tmp_path / "wide" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()) is same, name


def test_wide_train_facts_widen_train_users_only_and_never_reach_a_heldout_value(tmp_path):
    heldout = {v.lower() for values in FACT_POOLS[HELDOUT].values() for v in values}
    assert not {v.lower() for values in WIDE_TRAIN_FACTS.values() for v in values} & heldout
    wide = make_personas(300, seed=2, split="train", wide_train_facts=True)
    assert all(p.facts[f] in fact_values(TRAIN, True)[f] for p in wide for f in FACT_POOLS[TRAIN])
    # the added values are drawn (300 users over ~50 values a fact): more distinct values than the plain pool has
    for fact, values in FACT_POOLS[TRAIN].items():
        drawn = {p.facts[fact] for p in wide}
        assert drawn & set(WIDE_TRAIN_FACTS[fact]) and len(drawn) > len(values), fact
    _assert_only_train_users_change(tmp_path, wide_train_facts=True)


def test_invented_train_facts_are_many_made_up_words_on_train_users_only(tmp_path):
    heldout = {v.lower() for values in FACT_POOLS[HELDOUT].values() for v in values}
    listed = {v for values in fact_values(TRAIN, True).values() for v in values}
    users = make_personas(300, seed=2, split="train", wide_train_facts=True, invented_train_facts=True)
    values = [p.facts[f] for p in users for f in FACT_POOLS[TRAIN]]
    invented = [v for v in values if v not in listed]
    assert 0.4 < len(invented) / len(values) < 0.6  # about half of the facts, the rest from the listed values
    assert len(set(invented)) > 0.95 * len(invented) and not {v.lower() for v in invented} & heldout
    made_up = [(f, p.facts[f]) for p in users for f in ("hobby", "city") if p.facts[f] not in listed]
    assert all(v.endswith("ing") if f == "hobby" else v[0].isupper() for f, v in made_up)
    _assert_only_train_users_change(tmp_path, invented_train_facts=True)


def test_wide_train_styles_widen_train_users_only_and_never_reach_a_heldout_family_or_wording(tmp_path):
    for feature, pools in STYLE_FAMILIES.items():
        heldout = pools[HELDOUT]
        wide = WIDE_TRAIN_STYLES[feature]
        assert not set(wide) & (set(heldout) | set(pools[TRAIN])), feature
        assert not {str(v) for f in wide.values() for v in f} & {str(v) for f in heldout.values() for v in f}, feature
    wide = make_personas(300, seed=2, split="train", wide_train_styles=True)
    assert all(t.family in style_families(t.feature, TRAIN, True) for p in wide for t in p.traits)
    for feature in STYLE_FAMILIES:  # the added families are drawn, and each styles a text
        drawn = {t.family for p in wide for t in p.traits if t.feature == feature}
        assert drawn & set(WIDE_TRAIN_STYLES[feature]) and len(drawn) > len(STYLE_FAMILIES[feature][TRAIN]), feature
    text = "Cannot believe I am at the game again tonight, what a great night for my team and your new one today."
    for persona in wide[:60]:
        for trait in persona.traits:
            if trait.family in WIDE_TRAIN_STYLES[trait.feature]:
                assert trait.feature in persona.apply(text, {trait.feature}, random.Random(0))[1], trait
    _assert_only_train_users_change(tmp_path, wide_train_styles=True)


def test_no_single_profile_item_shows_the_whole_style_but_the_profile_does():
    checked = 0
    for split in ("train", "dev"):
        for persona in make_personas(30, seed=2, split=split):
            rng = random.Random(persona.user)
            texts = [t.replace("{", "").replace("}", "") for t in rng.sample(TWEETS, 12)]
            shown = [applied for _, applied in styled_profile(persona, texts, rng)]
            assert all(applied < persona.features() for applied in shown)
            # A feature shows where the text lets it (abbreviations need their words): twice when it can.
            can = {f: sum(f in persona.apply(t, {f}, random.Random(0))[1] for t in texts) for f in persona.features()}
            assert all(sum(f in s for s in shown) >= min(2, can[f]) for f in persona.features()), (can, shown)
            assert set().union(*shown) >= {f for f, n in can.items() if n}
            checked += 1
    assert checked == 60


@pytest.mark.parametrize("task", ["lamp7", "lamp4"])
def test_each_question_fact_is_stated_in_two_profile_items_and_the_gold(tmp_path, task):
    users = {"train": 15, "dev": 15}
    write_synthetic_lamp(tmp_path, task=task, users=users, seed=3)
    for split, n in users.items():
        personas = {p.user: p for p in make_personas(n, seed=3, split=split)}
        questions = json.loads((tmp_path / split / f"{split}_questions.json").read_text())
        golds = {g["id"]: g["output"] for g in json.loads((tmp_path / split / f"{split}_outputs.json").read_text())["golds"]}
        for q in questions:
            persona = personas[q["id"].rsplit("-q", 1)[0]]
            used = [fact for generic, facts in _GENERIC_FACTS[task].items()
                    if re.search(rf"\b{generic}\b", q["input"], re.IGNORECASE) for fact in facts]
            assert used, q["input"]
            for fact in used:
                value = persona.facts[fact]
                assert _mentions(value, golds[q["id"]]), (value, golds[q["id"]])
                assert sum(_mentions(value, _profile_text(task, p)) for p in q["profile"]) >= 2, (value, q["id"])


def test_slot_generic_words_are_covered_by_the_test_map():
    for task, slots in SLOTS.items():
        assert {generic for generic, _ in slots.values()} == set(_GENERIC_FACTS[task])


def test_generation_does_not_depend_on_the_string_hash_seed(tmp_path):
    """A pure function of the seed across processes: set iteration order changes with PYTHONHASHSEED."""
    import os
    import subprocess
    import sys

    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        code = f"from commer_core.synthetic import write_synthetic_lamp; write_synthetic_lamp({str(out)!r}, users={{'train': 3, 'dev': 3}})"
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        outputs.append([(out / s / f"{s}_{kind}.json").read_bytes() for s in ("train", "dev") for kind in ("questions", "outputs")])
    assert outputs[0] == outputs[1]


def test_a_question_id_gives_back_its_persona_and_alike_users_share_families(tmp_path):
    write_synthetic_lamp(tmp_path, users={"train": 3, "dev": 5}, seed=7, wide_train_styles=True)
    question = json.loads((tmp_path / "dev" / "dev_questions.json").read_text())[-1]
    dev = make_personas(5, seed=7, split="dev")
    assert question["id"].startswith(dev[4].user + "-q") and persona_of(question["id"]) == dev[4]
    train = make_personas(3, seed=7, split="train", wide_train_styles=True)
    assert persona_of(train[2].user, wide_train_styles=True) == train[2] != persona_of(train[2].user)
    assert shared_families(dev[0], dev[0]) == len(dev[0].traits)
    pairs = [(a, b) for a in dev for b in dev if a is not b]
    assert all(shared_families(a, b) == shared_families(b, a) <= min(len(a.traits), len(b.traits)) for a, b in pairs)
    assert any(shared_families(a, b) < len(a.traits) for a, b in pairs)
    with pytest.raises(ValueError, match="not a generated user id"):
        persona_of("alice-q0")
