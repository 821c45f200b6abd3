import pytest

from commer_core.backbone import BackboneError, load_backbone, resolve_model_folder


def test_unreachable_hub_id_says_how_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="--base-model /path/to/model"):
        resolve_model_folder("some-org/surely-not-cached-model")


def test_a_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle would go here")
    with pytest.raises(BackboneError, match="safetensors"):
        resolve_model_folder(str(tmp_path))


def test_a_backbone_is_frozen_and_identified(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.model.parameters())
    assert len(tiny_backbone.weights_sha256) == 64
    assert load_backbone("tiny-random").weights_sha256 == tiny_backbone.weights_sha256


def test_one_compressor_per_backbone(tiny_backbone):
    from tests.helpers import make_compressor

    make_compressor(tiny_backbone)
    with pytest.raises(ValueError, match="one backbone per compressor"):
        make_compressor(tiny_backbone)


def test_random_gemma_2b_has_the_published_size():
    import torch

    from commer_core.backbone import random_backbone

    backbone = random_backbone("gemma-2b", device=torch.device("meta"), dtype=torch.bfloat16)
    total = sum(p.numel() for p in backbone.model.parameters())
    embedding = backbone.model.get_input_embeddings().weight.numel()
    assert type(backbone.model).__name__ == "GemmaForCausalLM"
    assert embedding == 256000 * 2048
    assert 1.9e9 < total - embedding < 2.1e9 and 2.4e9 < total < 2.6e9  # "1-2B": 2.0B outside the embedding
    assert backbone.weights_sha256 == "random-seed-0" and backbone.name == "random:gemma-2b"


def test_random_default_architecture_matches_the_built_in_model():
    backbone = load_backbone("random:smollm2-135m", device="meta")
    real = resolve_model_folder("smollm2-135m")
    import json

    config = json.loads((real / "config.json").read_text())
    assert backbone.model.config.num_hidden_layers == config["num_hidden_layers"]
    assert backbone.hidden_size == config["hidden_size"]
    assert 130e6 < sum(p.numel() for p in backbone.model.parameters()) < 140e6
    assert backbone.tokenizer.pad_token_id is not None


def test_a_random_architecture_compresses_batch_invariantly():
    import torch

    from commer_core.backbone import random_backbone
    from tests.helpers import make_compressor

    small = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, head_dim=16, num_attention_heads=4,
                 num_key_value_heads=1, vocab_size=49152)
    compressor = make_compressor(random_backbone("gemma-2b", device=torch.device("cpu"), dtype=torch.float32,
                                                 **small))
    docs = [[100 + i] * n for i, n in enumerate([3, 17, 40, 9])]
    batched = compressor.compress_tokenized(docs, batch_tokens=4096)
    alone = torch.cat([compressor.compress_tokenized([d]) for d in docs])
    assert batched.shape == (4, 4, 64) and torch.isfinite(batched).all()
    assert torch.allclose(batched, alone, atol=1e-5)


def test_an_unknown_random_architecture_names_the_choices():
    with pytest.raises(BackboneError, match="random:gemma-2b"):
        load_backbone("random:gpt-17", device="meta")


def test_the_job_tokenizes_for_a_random_architecture_with_smollm2s_tokenizer():
    """The compress job's workers tokenize apart from the model: a random: base model must resolve there too."""
    from commer_core.backbone import load_base_tokenizer
    from pipelines.model_handler import worker_tokenizer

    text = "A tweet about hiking, tea and Beam."
    expected = load_base_tokenizer("smollm2-135m")(text)["input_ids"]
    assert worker_tokenizer("random:gemma-2b")(text)["input_ids"] == expected
    assert load_backbone("random:smollm2-135m", device="meta").tokenizer(text)["input_ids"] == expected


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    from commer_core.backbone import native_bf16

    assert native_bf16("cuda")
    for flags, native in (("fpu sse avx2 fma", False), ("fpu avx512f avx512_bf16", True), ("amx_tile amx_bf16", True)):
        cpuinfo = tmp_path / f"cpuinfo-{native}-{len(flags)}"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert native_bf16("cpu", cpuinfo) is native, flags
    assert native_bf16("cpu", tmp_path / "missing") is False


def test_bf16_autocast_warns_once_where_bf16_is_emulated(monkeypatch):
    import warnings

    import torch

    from commer_core.training import scoring

    scoring._warn_emulated_bf16.cache_clear()
    monkeypatch.setattr(scoring, "native_bf16", lambda device_type: False)
    with pytest.warns(RuntimeWarning, match="drop --bf16"):
        with scoring.autocast(torch.device("cpu"), True):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with scoring.autocast(torch.device("cpu"), True):  # said once per process
            pass
        scoring._warn_emulated_bf16.cache_clear()
        with scoring.autocast(torch.device("cpu"), False):  # not asked for: nothing to say
            pass
        monkeypatch.setattr(scoring, "native_bf16", lambda device_type: True)
        with scoring.autocast(torch.device("cpu"), True):  # native: nothing to say
            pass
    scoring._warn_emulated_bf16.cache_clear()
