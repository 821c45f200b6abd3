import pytest

from commer_core.config import CompressorConfig, LoraSettings


def test_defaults_are_the_papers_lora_settings():
    lora = CompressorConfig().lora
    assert (lora.r, lora.alpha, lora.dropout) == (64, 16, 0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_embeddings": 0}, "num_embeddings"), ({"max_doc_tokens": 0}, "max_doc_tokens"), ({"base_model": ""}, "base_model")],
)
def test_invalid_compressor_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompressorConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"r": 0}, {"alpha": 0}, {"dropout": 1.0}, {"target_modules": ()}])
def test_invalid_lora_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        LoraSettings(**kwargs)


def test_config_round_trips_through_a_plain_dict():
    config = CompressorConfig(num_embeddings=8, lora=LoraSettings(r=4, target_modules=("q_proj",)))
    assert CompressorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        CompressorConfig.from_dict({**config.to_dict(), "surprise": 1})
