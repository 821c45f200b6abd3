"""Soft vectors live at the scale the generator reads: the prompt norm and scaled-embedding backbones."""

import torch

from commer_core.backbone import load_backbone, random_backbone
from commer_core.compressor import VOCAB_TEMPERATURE, Compressor, draw_soft_tokens, token_embedding_rms
from commer_core.config import CompressorConfig, LoraSettings
from commer_core.training import PromptTuningMethod, generator_only
from tests.helpers import DOCS

TINY_GEMMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=16)


def _compressor(backbone, prompt_norm: str) -> Compressor:
    config = CompressorConfig(base_model=backbone.name, num_embeddings=4, lora=LoraSettings(r=2, dropout=0.0),
                              max_doc_tokens=16, prompt_norm=prompt_norm)
    return Compressor(backbone, config)


def test_rms_prompt_rows_start_at_the_token_embeddings_norm():
    plain = _compressor(load_backbone("tiny-random"), "none").compress_texts(DOCS)
    backbone = load_backbone("tiny-random")  # one compressor per backbone
    token_norm = float(backbone.model.get_input_embeddings().weight.detach().norm(dim=-1).mean())
    assert float(plain.norm(dim=-1).mean()) > 2 * token_norm  # final-layer states are far larger than tokens
    scaled = _compressor(backbone, "rms").compress_texts(DOCS)
    ratio = float(scaled.norm(dim=-1).mean()) / token_norm
    assert 0.7 < ratio < 1.3, ratio


def test_scaled_embedding_backbones_get_soft_tokens_at_the_scaled_size():
    """Gemma multiplies token embeddings by sqrt(d) inside its embedding layer; inputs_embeds skip it."""
    backbone = random_backbone("gemma-2b", device=torch.device("cpu"), dtype=torch.float32, **TINY_GEMMA)
    layer = backbone.model.get_input_embeddings()
    fed = layer(torch.arange(0, 512)).norm(dim=-1).mean()
    raw = layer.weight[:512].norm(dim=-1).mean()
    assert torch.isclose(fed / raw, torch.tensor(64 ** 0.5), rtol=1e-3)  # the scale is real in this architecture
    drawn = draw_soft_tokens(backbone.model, 64, seed=0).norm(dim=-1).mean()
    assert 0.8 < float(drawn / fed) < 1.25
    assert 0.8 < float(token_embedding_rms(backbone.model).norm() / fed) < 1.25
    prompt = PromptTuningMethod(generator_only(backbone), num_embeddings=8, budget=0).prompt
    assert 0.7 < float(prompt.norm(dim=-1).mean() / fed) < 1.4


def test_centered_prompt_tracks_a_running_mean_in_training_and_freezes_it_for_serving():
    compressor = _compressor(load_backbone("tiny-random"), "center")
    ids = [d.ids for d in compressor.tokenize(DOCS)]
    assert not compressor.prompt_center.any()
    compressor.train()
    with torch.no_grad():
        first = compressor(ids)
    raw_mean = compressor.prompt_center.clone()
    assert raw_mean.any()  # the first batch's mean row per slot
    # centred rows: the batch's shared part is gone, each row is back at the embedding scale
    assert float(first.mean(0).norm(dim=-1).max()) < 0.5 * float(first.norm(dim=-1).mean())
    compressor.eval()
    with torch.no_grad():
        a, b = compressor(ids), compressor(ids)
    assert torch.equal(a, b) and torch.equal(compressor.prompt_center, raw_mean)  # fixed outside training
    assert set(compressor.soft_tensors()) == {"compression_embeddings", "prompt_gain", "prompt_bias", "prompt_center"}


def test_a_centered_checkpoint_reloads_to_the_same_compressions(tmp_path):
    from commer_core.checkpoint import load_checkpoint, save_checkpoint

    compressor = _compressor(load_backbone("tiny-random"), "center")
    compressor.train()
    with torch.no_grad():
        compressor.prompt_bias.normal_(0, 0.1)
        compressor([d.ids for d in compressor.tokenize(DOCS)])  # sets the running centre
    compressor.eval()
    save_checkpoint(compressor, tmp_path / "ckpt", trained=False)
    again = load_checkpoint(tmp_path / "ckpt", load_backbone("tiny-random"))
    assert torch.allclose(again.compress_texts(DOCS), compressor.compress_texts(DOCS), atol=1e-5)


def test_vocab_prompt_rows_are_mixtures_of_the_token_embeddings_the_model_predicts():
    backbone = load_backbone("tiny-random")
    compressor = _compressor(backbone, "vocab")
    rows = compressor.compress_texts(DOCS)
    table = backbone.model.get_input_embeddings().weight.detach().float()
    # a convex combination of embedding rows: no row is longer than the longest token
    assert float(rows.norm(dim=-1).max()) <= float(table.norm(dim=-1).max()) + 1e-4
    # and it is the softmax of the model's own next-token logits at those positions, at the temperature
    states = torch.randn(3, 4, table.shape[1])
    logits = states @ backbone.model.get_output_embeddings().weight.detach().float().T
    expected = torch.softmax(logits / VOCAB_TEMPERATURE, -1) @ table
    assert torch.allclose(compressor.scale_prompt(states), expected, atol=1e-5)
    with torch.no_grad():
        compressor.prompt_log_temperature.fill_(-30.0)  # near zero temperature: the single most likely token
    hard = compressor.scale_prompt(states)
    top = (states @ backbone.model.get_output_embeddings().weight.detach().float().T).argmax(-1)
    assert torch.allclose(hard, table[top], atol=1e-3)
    assert any(p is compressor.prompt_log_temperature for p in compressor.trainable_parameters()["embeddings"])
    assert "prompt_log_temperature" in compressor.soft_tensors()


def test_a_vocab_checkpoint_reloads_to_the_same_compressions(tmp_path):
    from commer_core.checkpoint import load_checkpoint, save_checkpoint

    compressor = _compressor(load_backbone("tiny-random"), "vocab")
    with torch.no_grad():
        compressor.prompt_log_temperature.fill_(0.3)
    save_checkpoint(compressor, tmp_path / "ckpt", trained=False)
    again = load_checkpoint(tmp_path / "ckpt", load_backbone("tiny-random"))
    assert abs(float(again.prompt_log_temperature) - 0.3) < 1e-6
    assert torch.allclose(again.compress_texts(DOCS), compressor.compress_texts(DOCS), atol=1e-5)
