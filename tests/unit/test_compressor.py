import pytest
import torch

from commer_core.compressor import plan_batches
from tests.helpers import DOCS, make_compressor


def test_output_shape_is_docs_by_k_by_d(tiny_backbone):
    compressor = make_compressor(tiny_backbone, k=3)
    out = compressor.compress_texts(DOCS)
    assert out.shape == (len(DOCS), 3, tiny_backbone.hidden_size)
    assert torch.isfinite(out).all()


def test_only_compression_embeddings_and_lora_are_trainable_and_get_gradients(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    trainable = {n for n, p in compressor.named_parameters() if p.requires_grad}
    assert "compression_embeddings" in trainable
    assert all(n == "compression_embeddings" or "lora_" in n for n in trainable)
    groups = compressor.trainable_parameters()
    assert {id(p) for g in groups.values() for p in g} == {id(p) for p in compressor.parameters() if p.requires_grad}

    compressor.train()
    ids = [d.ids for d in compressor.tokenize(DOCS)]
    compressor(ids).square().mean().backward()
    for name, param in compressor.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_backbone_weights_are_bit_identical_after_an_optimizer_step(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    frozen = {n: p.detach().clone() for n, p in compressor.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in compressor.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in compressor.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ids = [d.ids for d in compressor.tokenize(DOCS)]
    compressor.train()
    compressor(ids).square().mean().backward()
    opt.step()
    for name, param in compressor.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name
    assert any(not torch.equal(p, trained[n]) for n, p in compressor.named_parameters() if n in trained)


def _assert_batch_invariant(compressor, docs, atol):
    ids = [d.ids for d in compressor.tokenize(docs)]
    assert len({len(x) for x in ids}) > 2, "documents must differ in length to exercise padding"
    with torch.inference_mode():
        batch = compressor(ids)
        for i, one in enumerate(ids):
            alone = compressor([one])[0]
            assert (alone - batch[i]).abs().max().item() <= atol, i
        reversed_batch = compressor(ids[::-1])
    assert (reversed_batch.flip(0) - batch).abs().max().item() <= atol


def test_compression_does_not_depend_on_the_batch_tiny(tiny_backbone):
    _assert_batch_invariant(make_compressor(tiny_backbone), DOCS, atol=1e-5)


@pytest.mark.slow
def test_compression_does_not_depend_on_the_batch_real_model(real_backbone):
    compressor = make_compressor(real_backbone, k=8)
    _assert_batch_invariant(compressor, DOCS, atol=1e-4)
    # values are large on this model, so the tolerance is meaningful (NOTES: ~50)
    assert compressor.compress_texts(DOCS[:1]).abs().max() > 5


def test_the_lm_head_is_never_computed(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    head = tiny_backbone.model.get_output_embeddings()

    def boom(*_args, **_kwargs):
        raise AssertionError("LM head called during compression")

    head.register_forward_pre_hook(boom)
    compressor.compress_texts(DOCS)


def test_truncation_is_reported(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    limit = compressor.config.max_doc_tokens
    long_doc, short_doc = compressor.tokenize(["word " * (limit + 50), "short"])
    assert len(long_doc.ids) == limit and long_doc.truncated
    assert not short_doc.truncated


def test_plan_batches_respects_the_token_budget_and_covers_every_document():
    lengths = [5, 300, 17, 17, 64, 1, 250, 33, 90, 8]
    k, budget = 4, 400
    batches = list(plan_batches(lengths, k, budget, max_batch_size=3))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        widths = [lengths[i] + k for i in b]
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(widths) <= budget
        assert 1 - sum(widths) / (len(b) * max(widths)) <= 0.1


def test_merging_the_lora_keeps_compressions_and_freezes_the_weights(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    base = next(m.base_layer.weight for n, m in compressor.peft_model.named_modules() if n.endswith("q_proj"))
    base_before = base.detach().clone()
    before = compressor.compress_texts(DOCS)
    compressor.merge_lora()
    assert not torch.equal(base, base_before)  # the LoRA delta now lives in the base weight
    assert torch.allclose(compressor.compress_texts(DOCS), before, atol=1e-5)
    assert not any(p.requires_grad for p in compressor.peft_model.parameters())


@pytest.mark.slow
def test_compiled_layers_give_the_eager_compressions(tiny_backbone):
    compressor = make_compressor(tiny_backbone)
    compressor.merge_lora()
    docs = DOCS + ["one more, longer document " * 6, "x"]
    eager = compressor.compress_texts(docs, batch_tokens=64)
    keys = sorted(compressor.peft_model.state_dict())
    compressor.compile_layers()
    layers = compressor.peft_model.get_base_model().get_decoder().layers
    assert all(layer._compiled_call_impl is not None for layer in layers)
    # several batch shapes (and a batch of one) through the compiled layers
    for budget in (64, 4096):
        assert torch.allclose(compressor.compress_texts(docs, batch_tokens=budget), eager, atol=1e-5)
    assert sorted(compressor.peft_model.state_dict()) == keys  # compiled in place: same parameter names
