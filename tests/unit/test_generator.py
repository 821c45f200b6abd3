import math

import torch

from commer_core.generator import Generator
from commer_core.merge import mean_pool
from tests.helpers import DOCS, make_compressor

INPUTS = ["Write a headline:", "Paraphrase this tweet: so tired today", "Hello"]


def test_scores_match_a_plain_forward_of_the_frozen_model(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    gen = Generator(compressor)
    prefix = mean_pool(compressor.compress_texts(DOCS[:2]))
    scored = gen.score([prefix, None], INPUTS[:2], [" Big news", " very sleepy"])
    # reference: the base model with the LoRA off, full logits, one example at a time
    tok = tiny_backbone.tokenizer
    for s, p, x, y in zip(scored, [prefix, None], INPUTS[:2], [" Big news", " very sleepy"]):
        # the layout written out by hand: chat turn for the input, target closed by eos
        turn = tok.apply_chat_template([{"role": "user", "content": x}], tokenize=False, add_generation_prompt=True)
        a = tok(turn, add_special_tokens=False)["input_ids"]
        b = tok(y, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad(), gen.frozen_base() as lm:
            emb = lm.get_input_embeddings()(torch.tensor(a + b))
            if p is not None:
                emb = torch.cat([p, emb])
            logits = lm(inputs_embeds=emb[None]).logits[0]
        start = (0 if p is None else p.shape[0]) + len(a)
        logp = torch.log_softmax(logits[start - 1 : start - 1 + len(b)], -1)
        nll = -logp[torch.arange(len(b)), torch.tensor(b)].sum().item()
        assert s.n_tokens == len(b)
        assert math.isclose(s.nll, nll, rel_tol=1e-4)


def test_generator_uses_the_frozen_base_not_the_lora(tiny_backbone):
    compressor = make_compressor(tiny_backbone, perturb_lora=False)
    gen = Generator(compressor)
    prefix = torch.randn(4, tiny_backbone.hidden_size)
    before = gen.score([prefix], ["x"], [" y"])[0].nll
    with torch.no_grad():
        for name, param in compressor.peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 1.0)
    assert gen.score([prefix], ["x"], [" y"])[0].nll == before
    # while the compressor does see the LoRA
    ids = [compressor.tokenize(["some text"])[0].ids]
    with torch.inference_mode():
        with compressor.peft_model.disable_adapter():
            plain = compressor(ids)
        assert not torch.allclose(compressor(ids), plain)


def test_batched_generation_equals_one_at_a_time_with_different_prefixes(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    gen = Generator(compressor)
    comp = compressor.compress_texts(DOCS)
    prefixes = [mean_pool(comp[:2]), None, mean_pool(comp[2:])]
    batch = gen.generate(prefixes, INPUTS, max_new_tokens=8)
    single = [gen.generate([p], [x], max_new_tokens=8)[0] for p, x in zip(prefixes, INPUTS)]
    assert batch == single
    assert any(batch)


def test_sampling_is_seeded_and_stop_strings_cut(tiny_backbone):
    gen = Generator(make_compressor(tiny_backbone))
    a = gen.generate([None], ["Once"], max_new_tokens=10, do_sample=True, seed=3, top_p=0.9)
    b = gen.generate([None], ["Once"], max_new_tokens=10, do_sample=True, seed=3, top_p=0.9)
    assert a == b
    full = gen.generate([None], ["Once"], max_new_tokens=10)[0]
    stop = full[2:4]
    cut = gen.generate([None], ["Once"], max_new_tokens=10, stop_strings=[stop])[0]
    assert stop not in cut and full.startswith(cut)


def test_task_format_separates_input_from_target(tiny_backbone):
    """Input and target never run together: the input ends with the assistant header (chat) or a newline."""
    from commer_core.task_format import TaskFormat

    tok = tiny_backbone.tokenizer
    start = TaskFormat.for_tokenizer(tok, "start")
    assert start.chat and start.head_ids == []
    text = tok.decode(start.input_ids(["my hobby"])[0])
    assert text.startswith("<|im_start|>") and text.rstrip().endswith("assistant")
    assert start.target_ids(["Honestly,"])[0][-1] == tok.eos_token_id
    # "turn": the prompt sits inside the user turn, and head + input is exactly the chat text
    turn = TaskFormat.for_tokenizer(tok, "turn")
    assert tok.decode(turn.head_ids).endswith("<|im_start|>user\n")
    full = tok.apply_chat_template([{"role": "user", "content": "my hobby"}], tokenize=False, add_generation_prompt=True)
    assert turn.head_ids + turn.input_ids(["my hobby"])[0] == tok(full, add_special_tokens=False)["input_ids"]

    class Plain:  # a tokenizer without a chat template, with a BOS of its own
        chat_template = None
        bos_token_id, eos_token_id = 7, 2

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[ord(c) for c in t] for t in texts]}

    plain = TaskFormat.for_tokenizer(Plain())
    assert not plain.chat and plain.head_ids == [7]
    assert plain.input_ids(["ab"]) == [[97, 98, 10]]


def test_the_generator_refuses_empty_and_overlong_inputs_before_any_forward(tiny_backbone):
    import pytest

    from commer_core.generator import GenerationError

    gen = Generator(make_compressor(tiny_backbone))
    assert gen.max_positions == 2048
    with pytest.raises(GenerationError, match="row 1: input is empty"):
        gen.generate_ids([None, None], ["Hi", ""], max_new_tokens=4)
    with pytest.raises(GenerationError, match="row 0: input is empty"):
        gen.generate_ids([None], ["  \n"], max_new_tokens=4)
    prefix = torch.zeros(4, tiny_backbone.hidden_size)
    fits = "x " * 1000  # about 1000 tokens: fits with 4 new tokens, not with 1500
    assert len(gen.generate_ids([prefix], [fits], max_new_tokens=4)[0]) > 0
    with pytest.raises(GenerationError, match="row 0: input is .* tokens, over its budget"):
        gen.generate_ids([prefix], [fits], max_new_tokens=1500)
