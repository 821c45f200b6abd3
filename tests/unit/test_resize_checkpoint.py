"""scripts/resize_checkpoint.py: a ComMer checkpoint copied at another k, its LoRA and gain kept."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import torch

from commer_core.backbone import load_backbone
from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint
from commer_core.compressor import Compressor
from commer_core.config import DEFAULT_TARGET_MODULES as DEFAULT_TARGETS
from tests.helpers import make_compressor, run_script


def _slot_map():
    """The script's slot_map (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "resize_checkpoint.py"
    spec = importlib.util.spec_from_file_location("resize_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.slot_map


def test_slots_repeat_in_place_when_growing_and_are_evenly_spaced_when_shrinking():
    slot_map = _slot_map()
    assert slot_map(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert slot_map(16, 4).tolist() == [0, 4, 8, 12]
    assert slot_map(4, 4).tolist() == [0, 1, 2, 3]


def test_resized_checkpoint_keeps_lora_and_gain_and_maps_every_slot(tmp_path):
    plain = make_compressor(load_backbone("tiny-random"))  # k=4, a perturbed LoRA
    centred = Compressor(load_backbone("tiny-random"), dataclasses.replace(plain.config, prompt_norm="center"))
    centred.peft_model.load_state_dict(plain.peft_model.state_dict())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (centred.prompt_bias, centred.prompt_center, centred.prompt_gain):
            t.copy_(torch.randn(t.shape, generator=gen))
    save_checkpoint(centred, tmp_path / "src", trained=True, training={"note": "kept"})
    for k, index in ((8, [0, 0, 1, 1, 2, 2, 3, 3]), (2, [0, 2])):
        out = run_script("resize_checkpoint.py", tmp_path / "src", k, tmp_path / f"k{k}")
        assert out.returncode == 0, out.stderr
        src, new = load_checkpoint(tmp_path / "src"), load_checkpoint(tmp_path / f"k{k}")
        assert new.num_embeddings == k and new.compression_embeddings.shape[0] == k
        assert torch.equal(new.prompt_bias, src.prompt_bias[index])
        assert torch.equal(new.prompt_center, src.prompt_center[index])
        assert torch.equal(new.prompt_gain, src.prompt_gain)
        emb, src_emb = new.compression_embeddings, src.compression_embeddings[index]
        first = [j == 0 or index[j] != index[j - 1] for j in range(k)]
        assert torch.equal(emb[first], src_emb[first])  # first copies exact, repeats nudged apart
        if not all(first):
            repeats = [not f for f in first]
            assert not torch.equal(emb[repeats], src_emb[repeats])
            assert torch.allclose(emb[repeats], src_emb[repeats], atol=0.1 * float(src_emb.std()))
        assert all(torch.equal(a, b) for a, b in zip(new.lora_state_dict().values(), src.lora_state_dict().values()))
        training = read_config(tmp_path / f"k{k}")["training"]
        assert training["note"] == "kept" and training["resized"]["k_from"] == 4 and training["resized"]["k"] == k


def test_lora_widened_to_more_modules_compresses_exactly_as_the_source(tmp_path):
    source = make_compressor(load_backbone("tiny-random"))  # LoRA on q/k/v/o, perturbed
    save_checkpoint(source, tmp_path / "src", trained=True, training={})
    targets = "q_proj,k_proj,v_proj,o_proj,down_proj"
    out = run_script("resize_checkpoint.py", tmp_path / "src", 4, tmp_path / "wide", "--lora-targets", targets)
    assert out.returncode == 0, out.stderr
    src, wide = load_checkpoint(tmp_path / "src"), load_checkpoint(tmp_path / "wide")
    assert wide.config.lora.target_modules == tuple(targets.split(","))
    old, new = src.lora_state_dict(), wide.lora_state_dict()
    assert all(torch.equal(new[name], tensor) for name, tensor in old.items())
    added = {name: t for name, t in new.items() if "down_proj" in name}
    assert added and all(not t.any() for name, t in added.items() if "lora_B" in name)
    assert torch.allclose(wide.compress_texts(["a short document", "another one here"]),
                          src.compress_texts(["a short document", "another one here"]), atol=1e-5)
    assert read_config(tmp_path / "wide")["training"]["resized"]["lora_targets_from"] == list(DEFAULT_TARGETS)
    narrower = run_script("resize_checkpoint.py", tmp_path / "src", 4, tmp_path / "narrow", "--lora-targets", "q_proj")
    assert narrower.returncode != 0 and "k_proj" in narrower.stderr and not (tmp_path / "narrow").exists()
