"""The trainer on the tiny random backbone: methods, trainables, checkpoints, resume equivalence."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from commer_core.checkpoint import CheckpointError, load_checkpoint, read_config
from commer_core.data import Document, Example
from commer_core.training import (
    CommerMethod,
    DataOrder,
    NoPersonalization,
    PreparedExample,
    PromptTuningMethod,
    RawDocsMethod,
    TrainConfig,
    TrainingError,
    build_method,
    generator_only,
    load_method,
    make_optimizer,
    prepare_examples,
    train,
)

LAMP7 = "Paraphrase the following tweet without any explanation before or after it: "


def _examples(n: int, prefix: str = "t") -> list[Example]:
    out = []
    for i in range(n):
        docs = [Document(f"{prefix}{i}-d{j}", f"user {i} likes topic {j} and writes about it often #tag{i}",
                         f"2020-01-{j + 1:02d}") for j in range(4)]
        out.append(Example(f"{prefix}{i}", f"{prefix}{i}", f"{LAMP7}topic {i % 4} is great", f"topic {i % 4} rocks #tag{i}", docs))
    return out


def _config(**kw) -> TrainConfig:
    base = dict(base_model="tiny-random", num_embeddings=4, lora_r=4, lora_alpha=8, docs_per_example=3, steps=4,
                batch_size=2, max_doc_tokens=32, max_dev_examples=4, save_every=0)
    base.update(kw)
    return TrainConfig(**base)


def test_config_validation():
    with pytest.raises(TrainingError, match="nothing to train"):
        _config(method="raw_docs")
    with pytest.raises(TrainingError, match="--steps or --epochs"):
        _config(steps=3, epochs=1.0)
    with pytest.raises(TrainingError, match="selection"):
        _config(selection="best")
    assert _config(steps=None, epochs=2.0, batch_size=2, grad_accum=2).total_steps(10) == 5
    assert _config(steps=None).total_steps(3) == 2  # one epoch by default, rounded up


def test_prepare_examples_selects_by_bm25_and_truncates(tiny_backbone):
    tok = tiny_backbone.tokenizer
    docs = [Document("a", "apples and pears"), Document("b", "the zebra crossing on main street"),
            Document("c", "cooking pasta tonight")]
    ex = [Example("e1", "u1", "where is the zebra crossing " + "word " * 100, "x " * 200, docs),
          Example("e2", "u2", "unlabelled", None, docs)]
    prepared = prepare_examples(ex, tok, n_docs=2, max_input_tokens=8, max_target_tokens=5)
    assert [p.example_id for p in prepared] == ["e1"]  # the unlabelled example is dropped
    assert prepared[0].documents[0] == "the zebra crossing on main street"
    assert len(prepared[0].documents) == 2
    assert len(tok(prepared[0].input, add_special_tokens=False)["input_ids"]) <= 8
    assert len(tok(prepared[0].target, add_special_tokens=False)["input_ids"]) <= 5
    first = prepare_examples(ex, tok, n_docs=2, selection="first")
    assert first[0].documents == ("apples and pears", "the zebra crossing on main street")


def test_data_order_is_a_pure_function_of_seed_and_position():
    a, b = DataOrder(5, 3, 2), DataOrder(5, 3, 2)
    stream = [i for m in range(5) for i in a.micro_batch(m)]
    assert [b.micro_batch(m) for m in reversed(range(5))][::-1] == [a.micro_batch(m) for m in range(5)]
    assert sorted(stream[:5]) == list(range(5)) and sorted(stream[5:10]) == list(range(5))  # each epoch is a permutation
    assert a.micro_batch(3) == DataOrder(5, 3, 2).micro_batch(3)
    assert stream != [i for m in range(5) for i in DataOrder(5, 4, 2).micro_batch(m)]


def test_method_prefixes_and_costs():
    method = build_method(_config())
    assert isinstance(method, CommerMethod)
    k, d = 4, method.compressor.hidden_size
    ex = [PreparedExample("a", "u", "in", "out", ("doc one", "doc two", "doc three")),
          PreparedExample("b", "u", "in", "out", ())]
    prefixes = method.prefixes(ex)
    assert prefixes[0].shape == (k, d) and prefixes[1] is None
    assert [method.prompt_tokens(e) for e in ex] == [k, 0]
    concat = CommerMethod(method.compressor, merge="concat")
    assert concat.prefixes(ex[:1])[0].shape == (3 * k, d)
    assert concat.prompt_tokens(ex[0]) == 3 * k
    gen = method.generator
    pt = PromptTuningMethod(gen, num_embeddings=5, budget=3)
    assert pt.prefixes(ex)[0].shape == (5 + 3, d) and pt.prefixes(ex)[1].shape == (5, d)
    assert [pt.prompt_tokens(e) for e in ex] == [8, 5]
    raw = RawDocsMethod(gen, budget=3)
    assert raw.prefixes(ex)[0].shape == (3, d) and raw.prefixes(ex)[1] is None
    assert NoPersonalization(gen).prefixes(ex) == [None, None]
    # The raw-document prefix is exactly the documents' token embeddings.
    ids = method.tokenizer("doc one\n\ndoc two\n\ndoc three", add_special_tokens=False)["input_ids"][:3]
    expected = method.generator.model.get_input_embeddings()(torch.tensor(ids))
    assert torch.equal(raw.prefixes(ex[:1])[0], expected)


def test_optimizer_groups_use_the_papers_learning_rates():
    method = build_method(_config())
    groups = {g["name"]: g for g in make_optimizer(method, _config()).param_groups}
    assert groups["embeddings"]["lr"] == 1e-2 and groups["lora"]["lr"] == 1e-4
    assert groups["embeddings"]["params"] == [method.compressor.compression_embeddings, method.compressor.prompt_gain]
    assert len(groups["lora"]["params"]) == 2 * 4 * 2  # A and B, 4 projections, 2 layers
    pt = build_method(_config(method="prompt_tuning"))
    (group,) = make_optimizer(pt, _config(method="prompt_tuning")).param_groups
    assert group["lr"] == 3e-2 and group["params"] == [pt.prompt]


def test_cosine_decay_falls_from_the_base_rate_to_zero_after_the_warmup(tmp_path):
    from commer_core.training.loop import lr_scale

    assert [lr_scale(s, 4, 12) for s in range(12)] == [0.25, 0.5, 0.75] + [1.0] * 9
    cosine = [lr_scale(s, 4, 12, "cosine") for s in range(13)]
    assert cosine[:4] == [0.25, 0.5, 0.75, 1.0] and cosine[12] == pytest.approx(0.0, abs=1e-12)
    assert cosine[8] == pytest.approx(0.5) and all(a > b for a, b in zip(cosine[4:12], cosine[5:13]))
    assert lr_scale(5, 0, 10, "cosine") == pytest.approx(0.5)
    train(_config(steps=4, lr_decay="cosine"), _examples(4), _examples(2, "d"), tmp_path / "run", progress=False,
          compare_baselines=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["lr_scale"] for r in log] == pytest.approx([1.0, 0.5 * (1 + 0.5 ** 0.5), 0.5, 0.5 * (1 - 0.5 ** 0.5)])
    with pytest.raises(TrainingError, match="lr_decay"):
        _config(lr_decay="step")


def test_training_changes_only_embeddings_and_lora(tmp_path):
    frozen_before = {n: p.detach().clone() for n, p in build_method(_config()).compressor.peft_model.named_parameters()
                     if "lora_" not in n}
    result = train(_config(steps=3), _examples(6), _examples(3, "d"), tmp_path / "run", progress=False)
    assert result.completed and result.steps_done == 3
    comp = load_checkpoint(result.checkpoint)
    fresh = build_method(_config()).compressor
    assert not torch.equal(comp.compression_embeddings, fresh.compression_embeddings)
    lora_b = [p for n, p in comp.peft_model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # PEFT initialises B at zero
    for n, p in comp.peft_model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, frozen_before[n]), n
    config = read_config(result.checkpoint)
    assert config["trained"] is True
    dev = config["training"]["dev_perplexity"]
    assert {"trained", "untrained", "none", "examples_digest"} <= set(dev)
    assert config["training"]["steps"] == 3 and config["training"]["config"]["lr_lora"] == 1e-4
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["fingerprint"] == result.fingerprint
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["tokens_per_s"] > 0 for r in log)


def _trainables(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "state" / "trainables.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["commer", "prompt_tuning"])
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, method):
    cfg = _config(method=method, steps=5, grad_accum=2, lora_dropout=0.3, save_every=2, raw_doc_budget=16)
    train_ex, dev_ex = _examples(5), _examples(2, "d")
    full = train(cfg, train_ex, dev_ex, tmp_path / "full", progress=False, compare_baselines=False)
    part = train(cfg, train_ex, dev_ex, tmp_path / "part", progress=False, stop_after=3, compare_baselines=False)
    assert not part.completed and part.checkpoint is None and part.steps_done == 3
    assert not _same(_trainables(tmp_path / "full"), _trainables(tmp_path / "part"))
    resumed = train(cfg, train_ex, dev_ex, tmp_path / "part", resume=True, progress=False, compare_baselines=False)
    assert resumed.completed
    assert _same(_trainables(tmp_path / "full"), _trainables(tmp_path / "part"))
    assert _same(load_file(tmp_path / "full" / "state" / "optimizer.safetensors"),
                 load_file(tmp_path / "part" / "state" / "optimizer.safetensors"))
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.dev["trained"] == resumed.dev["trained"]
    # No pickle anywhere in the state: safetensors and JSON only.
    assert {f.suffix for f in (tmp_path / "part" / "state").iterdir()} == {".safetensors", ".json"}


def test_keyboard_interrupt_saves_state_and_resume_matches(tmp_path):
    cfg = _config(steps=4, lora_dropout=0.3)
    train_ex = _examples(4)
    full = train(cfg, train_ex, [], tmp_path / "full", progress=False, compare_baselines=False)

    def interrupt(record):
        if record["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, train_ex, [], tmp_path / "int", progress=False, on_step=interrupt)
    assert json.loads((tmp_path / "int" / "state" / "state.json").read_text())["step"] == 2
    train(cfg, train_ex, [], tmp_path / "int", resume=True, progress=False, compare_baselines=False)
    assert _same(_trainables(tmp_path / "full"), _trainables(tmp_path / "int"))
    assert full.steps_done == 4


def test_resume_refuses_other_options_and_existing_runs(tmp_path):
    train_ex = _examples(4)
    train(_config(steps=2), train_ex, [], tmp_path / "run", progress=False, stop_after=1)
    with pytest.raises(TrainingError, match="already holds"):
        train(_config(steps=2), train_ex, [], tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="options differ"):
        train(_config(steps=2, lr_lora=5e-4), train_ex, [], tmp_path / "run", resume=True, progress=False)
    with pytest.raises(TrainingError, match="data changed"):
        train(_config(steps=2), _examples(5), [], tmp_path / "run", resume=True, progress=False)


def test_prompt_tuning_checkpoint_round_trip_and_init_from(tmp_path):
    result = train(_config(method="prompt_tuning", steps=2, raw_doc_budget=12), _examples(4), _examples(2, "d"),
                   tmp_path / "pt", progress=False)
    loaded = load_method(result.checkpoint)
    assert isinstance(loaded, PromptTuningMethod) and loaded.budget == 12
    trained = load_file(result.checkpoint / "prompt_embeddings.safetensors")["prompt_embeddings"]
    assert torch.equal(loaded.prompt.detach(), trained)
    # init-from a ComMer checkpoint: training starts from its weights.
    first = train(_config(steps=2), _examples(4), [], tmp_path / "a", progress=False)
    start = build_method(_config(steps=2), init_from=first.checkpoint)
    assert torch.equal(start.compressor.compression_embeddings, load_checkpoint(first.checkpoint).compression_embeddings)
    with pytest.raises(TrainingError, match="differ from this run"):
        build_method(_config(num_embeddings=6), init_from=first.checkpoint)


def test_shared_prompt_from_a_prompt_tuning_checkpoint_starts_the_centred_bias(tmp_path):
    pt = train(_config(method="prompt_tuning", steps=2, raw_doc_budget=0), _examples(4), [], tmp_path / "pt",
               progress=False)
    tuned = load_file(pt.checkpoint / "prompt_embeddings.safetensors")["prompt_embeddings"]
    method = build_method(_config(prompt_norm="center"), shared_prompt_from=pt.checkpoint)
    assert torch.equal(method.compressor.prompt_bias.detach(), tuned)
    # a centred prompt is user part + bias: with no user part left (a row equal to the centre) it is the tuned prompt
    rows = method.compressor.prompt_center.expand(1, -1, -1).clone()
    assert torch.allclose(method.compressor.scale_prompt(rows)[0], tuned, atol=1e-5)
    with pytest.raises(TrainingError, match="needs --prompt-norm center"):
        build_method(_config(prompt_norm="rms"), shared_prompt_from=pt.checkpoint)
    with pytest.raises(TrainingError, match="k=6"):
        build_method(_config(prompt_norm="center", num_embeddings=6), shared_prompt_from=pt.checkpoint)
    with_docs = train(_config(method="prompt_tuning", steps=1, raw_doc_budget=12), _examples(4), [], tmp_path / "pt12",
                      progress=False)
    with pytest.raises(TrainingError, match="--raw-budget 0"):
        build_method(_config(prompt_norm="center"), shared_prompt_from=with_docs.checkpoint)
    # a prompt trained with another tokenizer (here: another eos token) is refused, loaded or grafted
    meta_file = pt.checkpoint / "method.json"
    meta = json.loads(meta_file.read_text())
    assert meta["tokenizer"]["eos_token_id"] == 2
    meta_file.write_text(json.dumps({**meta, "tokenizer": {**meta["tokenizer"], "eos_token_id": 1}}))
    with pytest.raises(CheckpointError, match="eos_token_id 1 here 2"):
        build_method(_config(prompt_norm="center"), shared_prompt_from=pt.checkpoint)
    with pytest.raises(CheckpointError, match="eos_token_id 1 here 2"):
        load_method(pt.checkpoint)


def test_freeze_shared_prompt_keeps_the_grafted_bias_and_trains_the_rest(tmp_path):
    pt = train(_config(method="prompt_tuning", steps=2, raw_doc_budget=0), _examples(4), [], tmp_path / "pt",
               progress=False)
    tuned = load_file(pt.checkpoint / "prompt_embeddings.safetensors")["prompt_embeddings"]
    config = _config(prompt_norm="center", freeze_shared_prompt=True, steps=3, lr_embeddings=0.1)
    run = train(config, _examples(4), [], tmp_path / "frozen", shared_prompt_from=pt.checkpoint, progress=False)
    trained = load_checkpoint(run.checkpoint)
    assert torch.equal(trained.prompt_bias.detach(), tuned)  # the shared part did not move
    start = build_method(config, shared_prompt_from=pt.checkpoint).compressor
    assert not torch.equal(trained.compression_embeddings, start.compression_embeddings)  # the rest did
    assert not torch.equal(trained.prompt_gain, start.prompt_gain)
    assert read_config(run.checkpoint)["training"]["config"]["freeze_shared_prompt"] is True
    unfrozen = train(dataclasses.replace(config, freeze_shared_prompt=False), _examples(4), [], tmp_path / "moving",
                     shared_prompt_from=pt.checkpoint, progress=False)
    assert not torch.equal(load_checkpoint(unfrozen.checkpoint).prompt_bias, tuned)
    with pytest.raises(TrainingError, match="freeze_shared_prompt needs ComMer with prompt_norm 'center'"):
        _config(prompt_norm="rms", freeze_shared_prompt=True)
    with pytest.raises(TrainingError, match="freeze_shared_prompt"):
        _config(method="prompt_tuning", freeze_shared_prompt=True)


def test_baselines_score_with_the_frozen_base(tiny_backbone):
    gen = generator_only(tiny_backbone)
    before, _ = gen.target_nll([None], ["hello"], ["world"])
    with torch.no_grad():
        for name, p in gen.compressor.peft_model.named_parameters():
            if "lora_B" in name:
                p.fill_(1.0)  # a LoRA that would change every output if it were on
    after, _ = gen.target_nll([None], ["hello"], ["world"])
    assert torch.equal(before, after)


def test_sampled_document_counts_stay_in_range_and_repeat_on_resume():
    from commer_core.training import sample_documents

    batch = [PreparedExample(f"e{i}", f"u{i}", "x", "y", tuple(f"d{j}" for j in range(8))) for i in range(40)]
    drawn = sample_documents(batch, 2, seed=0, step=3)
    assert drawn == sample_documents(batch, 2, seed=0, step=3)  # a pure function of (seed, step, example)
    sizes = {len(e.documents) for e in drawn}
    assert min(sizes) >= 2 and max(sizes) <= 8 and len(sizes) > 3
    assert all(list(e.documents) == sorted(e.documents) for e in drawn)  # the selection's order is kept
    assert sample_documents(batch, None, seed=0, step=3) == batch


def test_swap_partners_pick_another_user_and_the_hinge_trains(tmp_path):
    from commer_core.training import swap_partners

    batch = [PreparedExample(f"e{i}", u, "x", "y", ()) for i, u in enumerate(["a", "a", "b", "c"])]
    [partners] = swap_partners(batch)
    assert [batch[j].user_id != e.user_id for e, j in zip(batch, partners)] == [True] * 4
    assert swap_partners(batch[:2]) is None
    rounds = swap_partners(batch, 3)
    assert rounds[0] == partners and all(batch[j].user_id != e.user_id for r in rounds for e, j in zip(batch, r))
    assert [sorted({r[i] for r in rounds}) for i in range(4)] == [[2, 3], [2, 3], [0, 1, 3], [0, 1, 2]]
    result = train(_config(steps=2, swap_weight=1.0, swap_partners=2, min_docs_per_example=1), _examples(6),
                   _examples(3, "d"), tmp_path / "run", progress=False)
    assert result.completed and result.history[-1]["loss"] > 0
    with pytest.raises(TrainingError, match="swap_weight"):
        _config(swap_weight=-1.0)
    with pytest.raises(TrainingError, match="swap_partners"):
        _config(swap_partners=0)


def test_best_dev_check_prefers_a_clearly_larger_gap_and_breaks_near_ties_by_perplexity():
    from commer_core.training.dev import best_record

    history = [
        {"step": 75, "dev_perplexity": 54.25, "dev_gap": 0.0229},
        {"step": 100, "dev_perplexity": 50.93, "dev_gap": 0.0007},  # gap clearly smaller: not better
        {"step": 150, "dev_perplexity": 44.72, "dev_gap": 0.0214},  # a near tie on the gap, far lower perplexity
    ]
    assert best_record(history)["step"] == 150
    assert best_record(history[:2])["step"] == 75
    worse_ppl = [*history[:1], {"step": 200, "dev_perplexity": 70.0, "dev_gap": 0.2}]  # gap bought with perplexity
    assert best_record(worse_ppl)["step"] == 75
    assert best_record([*history[:1], {"step": 200, "dev_perplexity": 55.0, "dev_gap": 0.2}])["step"] == 200


def _stand_in_method(target_nll):
    """A method whose generator scores with ``target_nll(prefixes, inputs, targets)``: the swap term's only use."""
    from types import SimpleNamespace

    return SimpleNamespace(generator=SimpleNamespace(target_nll=target_nll))


def test_swap_hinge_averages_the_hinge_over_every_partner_round():
    from commer_core.training import swap_hinge

    # A stand-in generator whose NLL of example i under prompt p is the number p + i (2 target tokens each).
    batch = [PreparedExample(f"e{i}", u, f"{i}", "y", ()) for i, u in enumerate(["a", "b", "c"])]
    prompts = [torch.tensor(10.0), torch.tensor(11.0), torch.tensor(13.0)]

    def target_nll(prefixes, inputs, targets):
        return torch.stack([p + int(x) for p, x in zip(prefixes, inputs)]), torch.full((len(inputs),), 2)

    method = _stand_in_method(target_nll)
    nll, counts = target_nll(prompts, ["0", "1", "2"], None)
    one = swap_hinge(method, batch, prompts, nll, counts, margin=1.5)
    # round 1 partners (1, 2, 0): per-token gaps 0.5, 1.0, -1.5 -> hinges 1.0, 0.5, 3.0
    assert float(one) == pytest.approx((1.0 + 0.5 + 3.0) / 3)
    two = swap_hinge(method, batch, prompts, nll, counts, margin=1.5, partners=2)
    # round 2 partners (2, 0, 1): gaps 1.5, -0.5, -1.0 -> hinges 0, 2.0, 2.5
    assert float(two) == pytest.approx((1.0 + 0.5 + 3.0 + 0.0 + 2.0 + 2.5) / 6)


def test_smooth_swap_hinge_pulls_hardest_where_another_users_prompt_wins():
    from commer_core.training import swap_hinge

    batch = [PreparedExample(f"e{i}", u, "x", "y", ()) for i, u in enumerate(["a", "b", "c"])]
    # Per-token gaps (other minus own) of -0.5, +0.2 and +2.0 against the next user in the batch.
    own = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    partner_nll = torch.tensor([-1.0, 0.4, 4.0])  # per example, under the partner's prompt (2 tokens)

    def target_nll(prefixes, inputs, targets):
        return partner_nll, torch.full((len(inputs),), 2)

    method = _stand_in_method(target_nll)
    counts = torch.full((3,), 2)
    hinge = swap_hinge(method, batch, [None] * 3, own, counts, margin=0.3)
    assert float(hinge) == pytest.approx((0.8 + 0.1 + 0.0) / 3)
    smooth = swap_hinge(method, batch, [None] * 3, own, counts, margin=0.3, temperature=0.1)
    t = 0.1
    expected = [t * math.log1p(math.exp((0.3 - g) / t)) for g in (-0.5, 0.2, 2.0)]
    assert float(smooth) == pytest.approx(sum(expected) / 3, rel=1e-5)
    smooth.backward()
    pulls = own.grad.tolist()  # the loss rises with own NLL; more steeply the worse the example
    assert pulls[0] > pulls[1] > pulls[2] > 0
    assert pulls[2] < 1e-6 < pulls[1]  # an example won by 2 nats is all but left alone
    tiny = swap_hinge(method, batch, [None] * 3, own.detach(), counts, margin=0.3, temperature=1e-4)
    assert float(tiny) == pytest.approx(float(hinge), abs=1e-4)  # the hinge as T -> 0
    with pytest.raises(TrainingError, match="swap_temperature"):
        _config(swap_temperature=-0.1)


def test_nearest_swap_partners_are_the_other_users_with_the_closest_prompts(tmp_path):
    from commer_core.training import swap_partners

    batch = [PreparedExample(f"e{i}", u, "x", "y", ()) for i, u in enumerate(["a", "b", "c", "d", "a"])]
    # Every prompt shares a large common part; the user parts put a beside d (and e4, a again), b beside c.
    common = torch.full((2, 3), 50.0)
    parts = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.3], [0.9, 0.0, 0.2], [1.0, 0.1, 0.0]]
    prefixes = [common + torch.tensor(p) for p in parts]
    first, second = swap_partners(batch, 2, prefixes)
    assert first == [3, 2, 1, 0, 3]  # never the same user (e0 and e4 are both "a")
    assert all(batch[j].user_id != e.user_id for r in (first, second) for e, j in zip(batch, r))
    assert second[0] != 3 and second[1] != 2
    assert swap_partners(batch, 2) == [[1, 2, 3, 4, 1], [2, 3, 4, 0, 2]]  # cyclic without prompts
    with pytest.raises(ValueError, match="prompt"):
        swap_partners(batch, 1, [None] * 5)
    result = train(_config(steps=2, swap_weight=1.0, swap_partners=1, swap_partner_choice="nearest",
                           min_docs_per_example=1), _examples(6), _examples(3, "d"), tmp_path / "run", progress=False)
    assert result.completed and result.history[-1]["loss"] > 0
    with pytest.raises(TrainingError, match="swap_partner_choice"):
        _config(swap_partner_choice="farthest")


def test_held_out_document_prediction_trains_the_compressor_on_an_unseen_document(tmp_path):
    from commer_core.training.doc_prediction import doc_prediction_loss, hold_out_documents

    batch = [PreparedExample("e0", "a", "x", "y", ("d1", "d2", "d3")), PreparedExample("e1", "b", "x", "y", ("d4",))]
    kept, held = hold_out_documents(batch, seed=0, step=3)
    assert held[1] is None and kept[1] == batch[1]  # one document: nothing to hold out
    assert held[0] in batch[0].documents and held[0] not in kept[0].documents
    assert sorted((*kept[0].documents, held[0])) == sorted(batch[0].documents)
    assert hold_out_documents(batch, seed=0, step=3) == (kept, held)  # a pure function of (seed, step, id)
    assert {hold_out_documents(batch, seed=0, step=s)[1][0] for s in range(20)} == set(batch[0].documents)

    method = build_method(_config())
    ex = [PreparedExample(f"e{i}", f"u{i}", "x", "y", tuple(d.text for d in e.documents))
          for i, e in enumerate(_examples(2))]
    kept, held = hold_out_documents(ex, seed=0, step=0)
    loss, n_tok = doc_prediction_loss(method, kept, method.prefixes(kept), held, max_tokens=6)
    assert n_tok == 2 * 7  # both held-out documents, cut to 6 tokens, + end of sequence
    loss.backward()
    grads = {name: p.grad for name, p in method.named_trainables()}
    assert any(g is not None and float(g.abs().sum()) > 0 for name, g in grads.items() if "lora" in name)
    assert doc_prediction_loss(method, ex[:1], method.prefixes(ex[:1]), [None], max_tokens=6)[1] == 0

    result = train(_config(steps=2, doc_prediction_weight=1.0), _examples(6), _examples(3, "d"), tmp_path / "run",
                   progress=False)
    assert result.completed and result.history[-1]["loss"] > 0
    with pytest.raises(TrainingError, match="doc_prediction_weight"):
        _config(doc_prediction_weight=-1.0)
    with pytest.raises(TrainingError, match="needs ComMer"):
        _config(method="prompt_tuning", doc_prediction_weight=1.0)


def test_the_swap_hinge_on_held_out_documents_compares_each_with_the_other_users_prompt():
    from commer_core.training.doc_prediction import (DOC_PREDICTION_INPUT, doc_prediction_loss, hold_out_documents,
                                                      score_held_out)

    method = build_method(_config())
    ex = [PreparedExample(f"e{i}", f"u{i}", "x", "y", tuple(d.text for d in e.documents))
          for i, e in enumerate(_examples(2))]
    kept, held = hold_out_documents(ex, seed=0, step=0)
    with torch.no_grad():
        prefixes = method.prefixes(kept)
        plain, _ = doc_prediction_loss(method, kept, prefixes, held, max_tokens=6)
        contrasted, _ = doc_prediction_loss(method, kept, prefixes, held, max_tokens=6, swap_weight=2.0,
                                            swap_margin=50.0)
        scored = score_held_out(method, kept, prefixes, held, max_tokens=6)
        # each held-out document under the other user's prompt (two users: each is the other's partner)
        other, _ = method.generator.target_nll(prefixes[::-1], [e.input for e in scored.examples],
                                               [e.target for e in scored.examples])
    gap = (other - scored.nll) / scored.counts  # nats per token; a margin of 50 keeps both hinges active
    assert all(e.input == DOC_PREDICTION_INPUT for e in scored.examples)
    assert float(contrasted - plain) == pytest.approx(2.0 * float((50.0 - gap).mean()), rel=1e-4)
    with pytest.raises(TrainingError, match="doc_swap_weight"):
        _config(doc_swap_weight=1.0)  # without doc_prediction_weight it would score nothing
