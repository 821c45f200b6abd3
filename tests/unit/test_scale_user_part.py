"""scripts/scale_user_part.py: a centred checkpoint's user part scaled, its shared bias kept."""

from __future__ import annotations

import dataclasses
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from commer_core.backbone import load_backbone
from commer_core.checkpoint import load_checkpoint, read_config, save_checkpoint
from commer_core.compressor import Compressor
from tests.helpers import DOCS, make_compressor, run_script

_run = partial(run_script, "scale_user_part.py")


def _centred(gen: torch.Generator) -> Compressor:
    """A tiny centred compressor with a random shared bias and centre."""
    plain = make_compressor(load_backbone("tiny-random"))
    centred = Compressor(load_backbone("tiny-random"), dataclasses.replace(plain.config, prompt_norm="center"))
    with torch.no_grad():
        centred.prompt_bias.copy_(torch.randn(centred.prompt_bias.shape, generator=gen))
        centred.prompt_center.copy_(torch.randn(centred.prompt_center.shape, generator=gen))
    return centred


def test_user_part_is_scaled_and_shared_bias_kept(tmp_path):
    gen = torch.Generator().manual_seed(0)
    centred = _centred(gen)
    save_checkpoint(centred, tmp_path / "src", trained=True, training={"note": "kept"})
    out = _run(tmp_path / "src", 1.5, tmp_path / "x1.5")
    assert out.returncode == 0, out.stderr
    before, after = load_checkpoint(tmp_path / "src"), load_checkpoint(tmp_path / "x1.5")
    rows = torch.randn(3, centred.num_embeddings, centred.hidden_size, generator=gen)
    with torch.no_grad():
        user_before = before.scale_prompt(rows) - before.prompt_bias
        user_after = after.scale_prompt(rows) - after.prompt_bias
    assert torch.equal(after.prompt_bias, before.prompt_bias)
    assert torch.allclose(user_after, 1.5 * user_before, atol=1e-5)
    config = read_config(tmp_path / "x1.5")
    assert config["trained"] and config["training"]["note"] == "kept"
    assert config["training"]["user_part_scale"]["factor"] == 1.5
    # a checkpoint without a shared bias has no user part to scale: refused, naming the file
    save_checkpoint(make_compressor(load_backbone("tiny-random")), tmp_path / "plain", trained=False)
    refused = _run(tmp_path / "plain", 2, tmp_path / "out")
    assert refused.returncode != 0 and "only 'center' checkpoints" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_recentred_user_part_averages_to_zero_over_the_corpus(tmp_path):
    gen = torch.Generator().manual_seed(1)
    save_checkpoint(_centred(gen), tmp_path / "src", trained=True)
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"user_id": ["u"] * len(DOCS), "text": DOCS}), corpus)
    out = _run(tmp_path / "src", 0.5, tmp_path / "x0.5c", "--recenter-corpus", corpus)
    assert out.returncode == 0, out.stderr
    before, after = load_checkpoint(tmp_path / "src"), load_checkpoint(tmp_path / "x0.5c")
    with torch.no_grad():
        ids = [d.ids for d in after.tokenize(DOCS)]
        prompts_before, prompts_after = before(ids), after(ids)
    # the mean prompt over the corpus is the bias the source had; each prompt keeps half its own part
    assert torch.allclose(prompts_after.mean(0), before.prompt_bias, atol=1e-4)
    own_before = prompts_before - prompts_before.mean(0)
    assert torch.allclose(prompts_after - prompts_after.mean(0), 0.5 * own_before, atol=1e-4)
    assert not torch.allclose(after.prompt_bias, before.prompt_bias, atol=1e-3)  # there was an offset to remove
    recentred = read_config(tmp_path / "x0.5c")["training"]["user_part_scale"]["recentred"]
    assert recentred["docs"] == len(DOCS) and recentred["corpus"] == str(corpus)
