"""Compressor checkpoints: safetensors + JSON in a directory, identified by a fingerprint.

Layout::

    commer_config.json                    compressor config, base model id + weights sha256,
                                          tokenizer, training metadata
    compression_embeddings.safetensors    the k x d compression embeddings (fp32), and the
                                          d-wide prompt_gain when prompt_norm is "rms"
    adapter/adapter_model.safetensors     the LoRA (PEFT's own layout, loadable by PEFT)
    adapter/adapter_config.json
    checksums.json                        sha256 of every file above

The fingerprint is the sha256 of ``checksums.json``: it changes when any file
does, and a file altered after saving is caught on load. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from commer_core.backbone import Backbone, load_backbone
from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig
from commer_core.errors import CommerError
from commer_core.files import replace_dir, staging_dir

FORMAT_VERSION = 1
CONFIG_FILE = "commer_config.json"
EMBEDDINGS_FILE = "compression_embeddings.safetensors"
ADAPTER_DIR = "adapter"
CHECKSUMS_FILE = "checksums.json"


class CheckpointError(CommerError, ValueError):
    """A checkpoint is missing, altered, or does not fit the backbone it is loaded on."""


def save_checkpoint(
    compressor: Compressor, path: str | Path, *, trained: bool, training: dict[str, Any] | None = None
) -> str:
    """Write a checkpoint atomically and return its fingerprint.

    Built in a staging directory beside ``path`` and swapped in by :func:`replace_dir`: an
    existing checkpoint is never deleted before the new one is in place.
    """
    path = Path(path)
    backbone = compressor.backbone
    config = {
        "format_version": FORMAT_VERSION,
        "compressor": compressor.config.to_dict(),
        "base_model": {"name": backbone.name, "weights_sha256": backbone.weights_sha256},
        "tokenizer": {
            "class": type(backbone.tokenizer).__name__,
            "vocab_size": len(backbone.tokenizer),
            "pad_token_id": backbone.tokenizer.pad_token_id,
            "eos_token_id": backbone.tokenizer.eos_token_id,
        },
        "trained": trained,
        "training": training or {},
    }
    with staging_dir(path, mode=0o755) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file({name: t.detach().float().cpu().contiguous() for name, t in compressor.soft_tensors().items()},
                  staging / EMBEDDINGS_FILE)
        # Name the backbone as the user did, not by a machine-local cache path.
        compressor.peft_model.peft_config["default"].base_model_name_or_path = backbone.name
        compressor.peft_model.save_pretrained(
            staging / ADAPTER_DIR, safe_serialization=True, save_embedding_layers=False  # no hub look-up
        )
        _write_checksums(staging)
        replace_dir(staging, path)
    return fingerprint(path)


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON config, after verifying every file's checksum."""
    path = Path(path)
    verify(path)
    return json.loads((path / CONFIG_FILE).read_text())


def load_checkpoint(
    path: str | Path,
    backbone: Backbone | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Compressor:
    """Rebuild a compressor; refuses a backbone whose weights differ from the one trained on."""
    path = Path(path)
    config = read_config(path)
    base = config["base_model"]
    if backbone is None:
        backbone = load_backbone(base["name"], device=device, dtype=dtype)
    if backbone.weights_sha256 != base["weights_sha256"]:
        raise CheckpointError(
            f"checkpoint {path} was made for base model {base['name']!r} "
            f"(weights sha256 {base['weights_sha256'][:12]}...) but the backbone given is "
            f"{backbone.name!r} (sha256 {backbone.weights_sha256[:12]}...); pass the matching --base-model"
        )
    compressor = Compressor(backbone, CompressorConfig.from_dict(config["compressor"]))
    saved = load_file(path / EMBEDDINGS_FILE)
    wanted = compressor.soft_tensors()
    if set(saved) != set(wanted):
        raise CheckpointError(f"{path / EMBEDDINGS_FILE}: holds {sorted(saved)}, the config needs {sorted(wanted)}")
    for name, target in wanted.items():
        if tuple(saved[name].shape) != tuple(target.shape):
            raise CheckpointError(f"{path / EMBEDDINGS_FILE}: {name} has shape {tuple(saved[name].shape)}, "
                                  f"the config needs {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(saved[name])
    adapter = load_file(path / ADAPTER_DIR / "adapter_model.safetensors", device=str(backbone.device))
    result = set_peft_model_state_dict(compressor.peft_model, adapter)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path}: adapter keys do not fit the model (missing {missing[:3]}, "
                              f"unexpected {list(result.unexpected_keys)[:3]})")
    return compressor.eval()


def fingerprint(path: str | Path) -> str:
    """Identity of a checkpoint: sha256 of its checksums file (which covers every file)."""
    return hashlib.sha256((Path(path) / CHECKSUMS_FILE).read_bytes()).hexdigest()


def verify(path: str | Path) -> None:
    """Raise CheckpointError naming the first file that is missing or was altered."""
    path = Path(path)
    sums_file = path / CHECKSUMS_FILE
    if not sums_file.is_file():
        raise CheckpointError(f"{path} is not a commer checkpoint (no {CHECKSUMS_FILE})")
    expected = json.loads(sums_file.read_text())
    actual = _file_checksums(path)
    for name, sha in expected.items():
        if name not in actual:
            raise CheckpointError(f"checkpoint {path}: file {name} is missing")
        if actual[name] != sha:
            raise CheckpointError(f"checkpoint {path}: file {name} was altered (sha256 mismatch)")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise CheckpointError(f"checkpoint {path}: unexpected files {extra}")


def _file_checksums(root: Path) -> dict[str, str]:
    return {
        f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file() and f.name != CHECKSUMS_FILE
    }


def _write_checksums(root: Path) -> None:
    (root / CHECKSUMS_FILE).write_text(json.dumps(_file_checksums(root), indent=1, sort_keys=True) + "\n")
