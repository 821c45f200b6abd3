"""scripts/average_checkpoints.py: every trained tensor averaged, the centre averaged or refitted."""

from __future__ import annotations

import dataclasses
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from peft import get_peft_model_state_dict

from commer_core.backbone import load_backbone
from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint
from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig, LoraSettings
from tests.helpers import DOCS, run_script

_run = partial(run_script, "average_checkpoints.py")


def _centred(seed: int, **changes: object) -> Compressor:
    """A tiny centred compressor whose every trained tensor and centre differ with ``seed``."""
    backbone = load_backbone("tiny-random")
    config = CompressorConfig(base_model=backbone.name, num_embeddings=4, lora=LoraSettings(r=4, dropout=0.0),
                              prompt_norm="center")
    compressor = Compressor(backbone, dataclasses.replace(config, **changes))
    gen = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for tensor in [*compressor.soft_tensors().values(),
                       *(p for n, p in compressor.peft_model.named_parameters() if "lora_" in n)]:
            tensor.copy_(torch.randn(tensor.shape, generator=gen))
    return compressor


def _lora(compressor: Compressor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(compressor.peft_model).items()}


def test_weighted_mean_of_every_tensor_and_the_centre(tmp_path):
    for seed in (0, 1):
        save_checkpoint(_centred(seed), tmp_path / f"c{seed}", trained=True, training={"run": seed})
    out = _run(tmp_path / "c0", tmp_path / "c1", "--weights", 1, 3, "--output", tmp_path / "soup")
    assert out.returncode == 0, out.stderr
    a, b, soup = (load_checkpoint(tmp_path / n) for n in ("c0", "c1", "soup"))
    for name, tensor in soup.soft_tensors().items():  # the centre too: the mean of the sources' centres
        expected = 0.25 * a.soft_tensors()[name] + 0.75 * b.soft_tensors()[name]
        assert torch.allclose(tensor, expected, atol=1e-5), name
    lora_a, lora_b, lora_soup = _lora(a), _lora(b), _lora(soup)
    assert lora_soup.keys() == lora_a.keys() and len(lora_soup) > 0
    for name, tensor in lora_soup.items():
        assert torch.allclose(tensor, 0.25 * lora_a[name] + 0.75 * lora_b[name], atol=1e-5), name
    training = read_config(tmp_path / "soup")["training"]
    assert [s["weight"] for s in training["average_of"]] == [0.25, 0.75]
    assert [s["run"] for s in training["sources"]] == [0, 1]


def test_centre_refitted_on_a_corpus_is_the_mean_hidden_row(tmp_path):
    for seed in (0, 1):
        save_checkpoint(_centred(seed), tmp_path / f"c{seed}", trained=True)
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"user_id": ["u"] * len(DOCS), "text": DOCS}), corpus)
    out = _run(tmp_path / "c0", tmp_path / "c1", "--output", tmp_path / "soup", "--center-corpus", corpus)
    assert out.returncode == 0, out.stderr
    soup = load_checkpoint(tmp_path / "soup")
    with torch.no_grad():
        rows = soup.hidden_rows([d.ids for d in soup.tokenize(DOCS)])
    assert torch.allclose(soup.prompt_center, rows.mean(0), atol=1e-4)
    averaged = 0.5 * (load_checkpoint(tmp_path / "c0").prompt_center + load_checkpoint(tmp_path / "c1").prompt_center)
    assert not torch.allclose(soup.prompt_center, averaged, atol=1e-2)  # the refit replaced the averaged centre
    assert read_config(tmp_path / "soup")["training"]["center"]["docs"] == len(DOCS)


def test_checkpoints_of_other_shapes_are_refused(tmp_path):
    save_checkpoint(_centred(0), tmp_path / "k4", trained=True)
    save_checkpoint(_centred(1, num_embeddings=2), tmp_path / "k2", trained=True)
    out = _run(tmp_path / "k4", tmp_path / "k2", "--output", tmp_path / "soup")
    assert out.returncode != 0 and "k2" in out.stderr and "'compressor'" in out.stderr
    assert not (tmp_path / "soup").exists()
    one = _run(tmp_path / "k4", "--output", tmp_path / "soup")
    assert one.returncode != 0 and "at least two" in one.stderr
