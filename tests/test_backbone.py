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
