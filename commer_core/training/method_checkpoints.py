"""A method from a config or a checkpoint, and a trained method's checkpoint.

ComMer checkpoints are the model core's (:mod:`commer_core.checkpoint`); prompt tuning
writes ``method.json`` and its soft tokens beside the same conventions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from commer_core.backbone import Backbone, load_backbone
from commer_core.checkpoint import (
    CONFIG_FILE, check_tokenizer, load_checkpoint, read_config, save_checkpoint, tokenizer_record,
)
from commer_core.compressor import Compressor
from commer_core.defaults import default_checkpoint_path
from commer_core.files import replace_dir, staging_dir
from commer_core.training.config import CHECKPOINT_DIR, METHOD_FILE, PROMPT_FILE, TrainConfig, TrainingError
from commer_core.training.methods import CommerMethod, Method, PromptTuningMethod, generator_only


def save_method(method: Method, path: str | Path, *, training: dict[str, Any]) -> str:
    """A trained method's checkpoint: ComMer in the model core's format, prompt tuning beside it.

    Returns the fingerprint. Either way the directory is built aside and swapped in whole.
    """
    path = Path(path)
    if isinstance(method, CommerMethod):
        return save_checkpoint(method.compressor, path, trained=True, training=training)
    if not isinstance(method, PromptTuningMethod):
        raise TrainingError(f"method {method.name!r} has no checkpoint")
    backbone = method.generator.compressor.backbone
    meta = {
        "method": method.name,
        "base_model": {"name": backbone.name, "weights_sha256": backbone.weights_sha256},
        "tokenizer": tokenizer_record(backbone.tokenizer),
        "num_embeddings": method.num_embeddings,
        "budget": method.budget,
        "training": training,
    }
    with staging_dir(path, mode=0o755) as staging:
        save_file({"prompt_embeddings": method.prompt.detach().float().cpu().contiguous()}, staging / PROMPT_FILE)
        (staging / METHOD_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        replace_dir(staging, path)
    return hashlib.sha256((path / PROMPT_FILE).read_bytes()).hexdigest()


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, a training output directory holding ``checkpoint/``, or ``default``."""
    if str(path) == "default":
        return default_checkpoint_path()
    path = Path(path)
    if (path / CHECKPOINT_DIR).is_dir() and not (path / CONFIG_FILE).exists() and not (path / METHOD_FILE).exists():
        path = path / CHECKPOINT_DIR
    if not ((path / CONFIG_FILE).exists() or (path / METHOD_FILE).exists()):
        raise TrainingError(f"{path} is neither a ComMer checkpoint ({CONFIG_FILE}) nor a method checkpoint ({METHOD_FILE})")
    return path


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """``{"method", "base_model", "k", "training", ...}`` of a checkpoint without loading a model."""
    path = resolve_checkpoint_dir(path)
    if (path / CONFIG_FILE).exists():
        config = read_config(path)
        return {"method": "commer", "path": str(path), "base_model": config["base_model"]["name"],
                "k": config["compressor"]["num_embeddings"], "trained": config.get("trained", False),
                "training": config.get("training", {})}
    meta = json.loads((path / METHOD_FILE).read_text())
    return {"method": meta["method"], "path": str(path), "base_model": meta["base_model"]["name"],
            "k": meta["num_embeddings"], "budget": meta["budget"], "trained": True,
            "training": meta.get("training", {})}


def _load_prompt(method: PromptTuningMethod, checkpoint: Path) -> None:
    with torch.no_grad():
        method.prompt.copy_(load_file(checkpoint / PROMPT_FILE)["prompt_embeddings"])


def load_method(
    path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None, merge: str = "mean",
    budget: int | None = None,
) -> Method:
    """Load a trained method from its checkpoint on a fresh backbone."""
    path = resolve_checkpoint_dir(path)
    if (path / CONFIG_FILE).exists():
        return CommerMethod(load_checkpoint(path, device=device, dtype=dtype), merge=merge)
    meta = json.loads((path / METHOD_FILE).read_text())
    if meta.get("method") != "prompt_tuning":
        raise TrainingError(f"{path / METHOD_FILE}: unknown method {meta.get('method')!r}")
    backbone = load_backbone(meta["base_model"]["name"], device=device, dtype=dtype)
    _check_same_base(meta, backbone, str(path))
    method = PromptTuningMethod(generator_only(backbone), num_embeddings=meta["num_embeddings"],
                                budget=meta["budget"] if budget is None else budget)
    _load_prompt(method, path)
    return method


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_method(config: TrainConfig, *, init_from: str | Path | None = None,
                 shared_prompt_from: str | Path | None = None) -> Method:
    """A fresh backbone with the method's trainables (seeded), optionally initialised from a checkpoint.

    ``shared_prompt_from`` (ComMer with ``prompt_norm`` "center" only) starts the prompt's shared
    part, the centred norm's bias, from a prompt-tuning checkpoint's soft tokens (see
    :func:`graft_shared_prompt`); ``config.freeze_shared_prompt`` keeps that part fixed.
    """
    seed_everything(config.seed)
    backbone = load_backbone(config.base_model, device=config.device)
    if config.method == "commer":
        if init_from is None:
            compressor = Compressor(backbone, config.compressor_config(), seed=config.seed)
        else:
            compressor = _compressor_from(resolve_checkpoint_dir(init_from), backbone, config)
        if shared_prompt_from is not None:
            graft_shared_prompt(compressor, resolve_checkpoint_dir(shared_prompt_from))
        if config.freeze_shared_prompt and compressor.prompt_bias is not None:  # no gradient: not moved, not clipped
            compressor.prompt_bias.requires_grad_(False)
        return CommerMethod(compressor, merge=config.merge)
    if shared_prompt_from is not None:
        raise TrainingError("--shared-prompt-from starts a ComMer prompt's shared part; this run is prompt tuning")
    method = PromptTuningMethod(generator_only(backbone), num_embeddings=config.num_embeddings,
                                budget=config.raw_doc_budget, seed=config.seed)
    if init_from is not None:
        _load_prompt(method, resolve_checkpoint_dir(init_from))
    return method


def _check_same_base(meta: dict[str, Any], backbone: Backbone, what: str) -> None:
    """Refuse a prompt-tuning checkpoint trained on other weights or another tokenizer than ``backbone``'s."""
    if meta["base_model"]["weights_sha256"] != backbone.weights_sha256:
        raise TrainingError(f"{what}: trained on other weights of {meta['base_model']['name']!r}")
    check_tokenizer(meta.get("tokenizer"), backbone.tokenizer, what)


def graft_shared_prompt(compressor: Compressor, source: Path) -> None:
    """Set the prompt's shared part (the centred norm's bias) to a prompt-tuning checkpoint's soft tokens.

    A ComMer prompt under ``prompt_norm`` "center" is a user part (the centred, normalised
    compression) plus a bias every user shares. Prompt tuning with no documents learns exactly
    such a shared prompt, and faster; starting the bias there leaves the compressor to learn
    only what differs between users. The source must be k soft tokens tuned with no raw
    documents on the same backbone weights.
    """
    if compressor.prompt_bias is None:
        raise TrainingError("--shared-prompt-from needs --prompt-norm center (the only norm with a shared bias)")
    if not (source / METHOD_FILE).exists():
        raise TrainingError(f"--shared-prompt-from {source}: not a prompt-tuning checkpoint (no {METHOD_FILE})")
    meta = json.loads((source / METHOD_FILE).read_text())
    k = compressor.num_embeddings
    if meta.get("method") != "prompt_tuning" or meta.get("num_embeddings") != k or meta.get("budget") != 0:
        raise TrainingError(
            f"--shared-prompt-from {source}: needs prompt tuning with k={k} and --raw-budget 0, found "
            f"{meta.get('method')} k={meta.get('num_embeddings')} budget={meta.get('budget')}")
    _check_same_base(meta, compressor.backbone, f"--shared-prompt-from {source}")
    with torch.no_grad():
        compressor.prompt_bias.copy_(load_file(source / PROMPT_FILE)["prompt_embeddings"])


def _compressor_from(source: Path, backbone: Backbone, config: TrainConfig) -> Compressor:
    """The checkpoint's compressor on ``backbone``; its k and LoRA must be this run's (documents are cut as configured)."""
    compressor = load_checkpoint(source, backbone)
    if compressor.config.num_embeddings != config.num_embeddings or compressor.config.lora != config.lora:
        raise TrainingError(
            f"--init-from {source}: its k={compressor.config.num_embeddings} / LoRA "
            f"{compressor.config.lora} differ from this run's k={config.num_embeddings} / "
            f"{config.lora}; pass matching --num-embeddings and --lora-* options"
        )
    if compressor.config.max_doc_tokens != config.max_doc_tokens:
        compressor.config = dataclasses.replace(compressor.config, max_doc_tokens=config.max_doc_tokens)
    return compressor
