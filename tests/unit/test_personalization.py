"""The personalization gap: derangement, paired bootstrap, document swap, mean-prompt control, report."""

from __future__ import annotations

import dataclasses

import pytest

from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig, LoraSettings
from commer_core.personalization import derangement, personalization_gap
from commer_core.swap import MeanPromptMethod, personalization_report, swap_documents
from commer_core.training import CommerMethod, PreparedExample, RawDocsMethod, generator_only, score_examples


def _prepared(n_users: int = 4, per_user: int = 1, shared_docs: bool = False) -> list[PreparedExample]:
    """Examples whose documents spell out their own target (so swapping them changes the score)."""
    out = []
    for u in range(n_users):
        for j in range(per_user):
            target = f"user {u} loves {['sailing', 'chess', 'opera', 'baking', 'rugby'][u % 5]}"
            docs = ("a note about the weather", "another plain note") if shared_docs else (
                f"{target} and writes about it daily", f"note {j}: {target}")
            out.append(PreparedExample(f"e{u}-{j}", f"u{u}", f"tell me about user {u}", target, docs))
    return out


# -- derangement and the statistics -------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 17])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_derangement_never_maps_a_user_to_themself(n, seed):
    users = [f"user{i}" for i in range(n)]
    mapping = derangement(users + users[:1], seed)  # duplicates are one user
    assert set(mapping) == set(users)
    assert sorted(mapping.values()) == sorted(users)  # a permutation
    assert all(mapping[u] != u for u in users)
    assert mapping == derangement(list(reversed(users)), seed)  # a function of the set and the seed


def test_derangement_needs_two_users():
    with pytest.raises(ValueError, match="at least 2 users"):
        derangement(["only", "only"])


def test_same_data_as_other_gives_a_zero_gap():
    own = [(3.0, 2), (5.0, 5), (1.0, 1), (8.0, 4)]
    gap = personalization_gap(own, list(own))
    assert gap.gap == 0.0 and gap.low == 0.0 and gap.high == 0.0 and gap.own_better == 0.0


def test_gap_is_other_minus_own_per_token_with_an_interval():
    own = [(2.0, 2), (3.0, 3), (4.0, 4), (1.0, 1)] * 5  # 1 nat per token
    other = [(3.0, 2), (4.5, 3), (6.0, 4), (1.2, 1)] * 5  # 1.5, 1.5, 1.5, 1.2
    gap = personalization_gap(own, other)
    assert gap.gap == pytest.approx(0.425)
    assert 0 < gap.low <= gap.gap <= gap.high
    assert gap.own_better == 1.0 and gap.own_nats == pytest.approx(1.0)
    assert personalization_gap(other, own).gap == pytest.approx(-0.425)
    with pytest.raises(ValueError, match="pair up"):
        personalization_gap(own, other[:-1])


# -- swapping documents ----------------------------------------------------------------------


def test_swap_documents_gives_each_example_another_users_documents():
    examples = _prepared(n_users=5, per_user=2)
    swapped = swap_documents(examples, seed=3)
    docs_of = {}
    for e in examples:
        docs_of.setdefault(e.user_id, []).append(e.documents)
    assert [(e.example_id, e.user_id, e.input, e.target) for e in swapped] == \
        [(e.example_id, e.user_id, e.input, e.target) for e in examples]
    for e, s in zip(examples, swapped):
        donors = [u for u, docs in docs_of.items() if s.documents in docs]
        assert donors and e.user_id not in donors
    assert swapped == swap_documents(examples, seed=3)
    assert swapped != swap_documents(examples, seed=4) or len(docs_of) < 3
    with pytest.raises(ValueError, match="at least 2 users"):
        swap_documents([e for e in examples if e.user_id == "u0"])


def test_a_single_user_swaps_with_a_donor_pool_of_other_users():
    """PerLTQA's test split holds one unseen character: the other user's documents come from the train split."""
    examples = _prepared(n_users=5, per_user=3)
    scored = [e for e in examples if e.user_id == "u0"]
    pool = [e for e in examples if e.user_id != "u0"]
    swapped = swap_documents(scored, seed=1, pool=pool)
    pool_docs = {e.documents: e.user_id for e in pool}
    assert [e.documents in pool_docs for e in swapped] == [True] * 3
    assert len({pool_docs[e.documents] for e in swapped}) == 1  # one partner user per scored user
    assert [e.target for e in swapped] == [e.target for e in scored]
    # a pool that contains the scored user too never hands them their own documents
    both = swap_documents(examples, seed=1, pool=examples)
    assert all(s.documents not in {o.documents for o in examples if o.user_id == e.user_id}
               for e, s in zip(examples, both))
    with pytest.raises(ValueError, match="no user other than 'u0'"):
        swap_documents(scored, pool=scored)


# -- scoring (tiny random backbone) ----------------------------------------------------------


def _commer(backbone) -> CommerMethod:
    config = CompressorConfig(base_model="tiny-random", num_embeddings=3, lora=LoraSettings(r=2, alpha=4))
    return CommerMethod(Compressor(backbone, config))


def test_raw_documents_of_another_user_change_the_score(tiny_backbone):
    raw = RawDocsMethod(generator_only(tiny_backbone), budget=40)
    report = personalization_report(raw, _prepared(), seed=0)
    assert report["gap"]["gap"] != 0.0 and report["own_perplexity"] != report["other_perplexity"]
    assert report["mean_prompt_perplexity"] is None and report["mean_prompt_gap"] is None
    same = personalization_report(raw, _prepared(shared_docs=True), seed=0)
    assert same["gap"]["gap"] == 0.0 and same["gap"]["own_better"] == 0.0


def test_mean_prompt_equals_own_when_every_user_has_the_same_documents(tiny_backbone):
    commer = _commer(tiny_backbone)
    shared = _prepared(shared_docs=True)
    own = score_examples(commer, shared)
    mean = score_examples(MeanPromptMethod(commer, shared), shared)
    assert [n for _, n in own] == [n for _, n in mean]
    assert [a for a, _ in mean] == pytest.approx([a for a, _ in own], rel=1e-5)
    distinct = _prepared()
    mean_d = score_examples(MeanPromptMethod(commer, distinct), distinct)
    assert [a for a, _ in mean_d] != pytest.approx([a for a, _ in score_examples(commer, distinct)], rel=1e-5)


def test_commer_report_has_all_three_scores_and_reuses_own(tiny_backbone):
    commer = _commer(tiny_backbone)
    examples = _prepared(n_users=3, per_user=2)
    own = score_examples(commer, examples)
    report = personalization_report(commer, examples, seed=1, batch_size=4, own=own)
    assert report["examples"] == 6 and report["seed"] == 1
    assert report["mean_prompt_perplexity"] > 0 and report["mean_prompt_gap"]["examples"] == 6
    assert set(report["gap"]) == {"gap", "low", "high", "own_better", "own_nats", "other_nats", "examples"}
    fresh = personalization_report(commer, examples, seed=1, batch_size=4)
    assert fresh["gap"]["gap"] == pytest.approx(report["gap"]["gap"], abs=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        personalization_report(commer, examples[:1], own=own)


def test_commer_swap_reuses_compressions_and_equals_scoring_the_swapped_documents(tiny_backbone):
    from commer_core.swap import personalization_scores

    commer = _commer(tiny_backbone)
    examples = _prepared(n_users=3, per_user=2)
    fast = personalization_scores(commer, examples, seed=2, batch_size=4)
    direct = score_examples(commer, swap_documents(examples, seed=2), batch_size=4)
    assert [a for a, _ in fast.other] == pytest.approx([a for a, _ in direct], rel=1e-4)
    assert [a for a, _ in fast.other] != pytest.approx([a for a, _ in fast.own], rel=1e-4)
    duplicated = [dataclasses.replace(e, example_id="same") for e in examples]  # the slow path
    slow = personalization_scores(commer, duplicated, seed=2, batch_size=4)
    assert [a for a, _ in slow.other] == pytest.approx([a for a, _ in direct], rel=1e-4)
    assert [a for a, _ in slow.mean] == pytest.approx([a for a, _ in fast.mean], rel=1e-4)


def test_commer_swap_with_a_donor_pool_equals_scoring_the_pool_documents(tiny_backbone):
    from commer_core.swap import personalization_scores

    commer = _commer(tiny_backbone)
    examples = _prepared(n_users=3, per_user=2)
    scored, pool = examples[:2], examples[2:]  # user u0 alone, donors u1 and u2
    fast = personalization_scores(commer, scored, seed=2, batch_size=4, pool=pool)
    direct = score_examples(commer, swap_documents(scored, seed=2, pool=pool), batch_size=4)
    assert [a for a, _ in fast.other] == pytest.approx([a for a, _ in direct], rel=1e-4)
    everyone_mean = score_examples(MeanPromptMethod(commer, examples), scored, batch_size=4)
    assert [a for a, _ in fast.mean] == pytest.approx([a for a, _ in everyone_mean], rel=1e-4)
