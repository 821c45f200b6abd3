"""Compressor checkpoints: safetensors + JSON in a directory, identified by a fingerprint.

Layout::

    commer_config.json                    compressor config, base model id + weights sha256,
                                          tokenizer, training metadata
    compression_embeddings.safetensors    the k x d compression embeddings (fp32), and the
                                          prompt_norm's tensors (gain, bias, centre, temperature)
    adapter/adapter_model.safetensors     the LoRA (PEFT's own layout, loadable by PEFT)
    adapter/adapter_config.json
    checksums.json                        sha256 of every file above: exactly the files present,
                                          only .json, .safetensors and .md (see :func:`verify`)

The fingerprint is the sha256 of ``checksums.json``: it changes when any file
does, and a file altered after saving is caught on load. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from commer_core.backbone import Backbone, load_backbone
from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig
from commer_core.errors import CommerError
from commer_core.files import is_local_uri, local_path, publish_dir, replace_dir, staging_dir

FORMAT_VERSION = 1
CONFIG_FILE = "commer_config.json"
EMBEDDINGS_FILE = "compression_embeddings.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_FILE = "adapter_model.safetensors"  # what PEFT's save_pretrained writes into ADAPTER_DIR
CHECKSUMS_FILE = "checksums.json"
# A fixed text whose token ids pin how the tokenizer splits text: two conversions of one
# vocabulary can differ in byte fallback, spaces and the end-of-sequence token (seen: the GGUF
# conversion of transformers 5.17 makes <|im_start|> SmolLM2's eos, 5.25 <|im_end|>).
TOKENIZER_PROBE = "Héllo  wörld!\t🙂 #tag\n<|im_start|>user\nhi<|im_end|>"


class CheckpointError(CommerError, ValueError):
    """A checkpoint is missing, altered, or does not fit the backbone it is loaded on."""


def tokenizer_record(tokenizer: Any) -> dict[str, Any]:
    """What a checkpoint records of the tokenizer it was trained with (checked on load)."""
    ids = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    return {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "probe_sha256": hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest(),
    }


def check_tokenizer(recorded: dict[str, Any] | None, tokenizer: Any, what: str) -> None:
    """Refuse a tokenizer that differs from the recorded one in any fact the record holds.

    The weights' sha256 does not cover the tokenizer: the same weights with another eos token
    score and generate differently. Records written before ``probe_sha256`` are checked on the rest.
    """
    if not recorded:
        return
    current = tokenizer_record(tokenizer)
    differ = [f"{key} {recorded[key]!r} here {current[key]!r}"
              for key in ("vocab_size", "pad_token_id", "eos_token_id", "probe_sha256")
              if key in recorded and recorded[key] != current[key]]
    if differ:
        raise CheckpointError(
            f"{what} was trained with another tokenizer than this backbone's ({'; '.join(differ)}): "
            "the checkpoint or the model folder was made under another transformers version (the built-in "
            "model's conversion depends on it); use a checkpoint trained on this install, or reinstall with "
            "scripts/install.sh and remove the model folder under $COMMER_HOME/models to rebuild it")


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
        "tokenizer": tokenizer_record(backbone.tokenizer),
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


def local_checkpoint(path: str | Path) -> Path:
    """A local directory holding the checkpoint at ``path``: itself when local; a remote one
    (``s3://``, ``gs://``, any fsspec URI, read through :mod:`commer_core.storage`) copied once.

    Why a copy: safetensors and PEFT read local files. The copy lives in
    ``$COMMER_HOME/checkpoints/<fingerprint[:32]>`` (the compress job's workers use the same
    place), is verified before it is published there by one rename, and is reused while the
    remote ``checksums.json`` (hence the fingerprint) stays the same.
    """
    if is_local_uri(path):
        return local_path(path)
    from commer_core.backbone import commer_home
    from commer_core.storage import StorageError, download_tree, read_bytes

    uri = str(path).rstrip("/")
    try:
        sums = read_bytes(f"{uri}/{CHECKSUMS_FILE}")
    except (StorageError, OSError) as exc:
        raise CheckpointError(f"{uri} is not a readable commer checkpoint (no {CHECKSUMS_FILE}: {exc})") from exc
    target = commer_home() / "checkpoints" / hashlib.sha256(sums).hexdigest()[:32]
    if (target / CHECKSUMS_FILE).is_file():
        return target
    with staging_dir(target) as staging:
        try:
            download_tree(uri, staging)
        except (StorageError, OSError) as exc:
            raise CheckpointError(f"cannot copy checkpoint {uri}: {exc}") from exc
        try:
            verify(staging)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {uri}: {exc}") from exc
        publish_dir(staging, target, marker=CHECKSUMS_FILE)
    return target


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON config, after verifying every file's checksum (remote URIs: :func:`local_checkpoint`)."""
    path = local_checkpoint(path)
    verify(path)
    return json.loads((path / CONFIG_FILE).read_text())


def load_checkpoint(
    path: str | Path,
    backbone: Backbone | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Compressor:
    """Rebuild a compressor; refuses a backbone whose weights differ from the one trained on.

    ``path`` is a directory or a remote URI (:func:`local_checkpoint`)."""
    path = local_checkpoint(path)
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
    check_tokenizer(config.get("tokenizer"), backbone.tokenizer, f"checkpoint {path}")
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
    adapter = load_file(path / ADAPTER_DIR / ADAPTER_FILE, device=str(backbone.device))
    result = set_peft_model_state_dict(compressor.peft_model, adapter)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path}: adapter keys do not fit the model (missing {missing[:3]}, "
                              f"unexpected {list(result.unexpected_keys)[:3]})")
    return compressor.eval()


def fingerprint(path: str | Path) -> str:
    """Identity of a checkpoint: sha256 of its checksums file (which covers every file)."""
    return hashlib.sha256((local_checkpoint(path) / CHECKSUMS_FILE).read_bytes()).hexdigest()


#: File formats a checkpoint may hold: JSON, safetensors and PEFT's adapter README. Anything
#: else (``.bin``, ``.pt``, ``.pkl``: pickles) is refused by name, even when listed.
ALLOWED_SUFFIXES = (".json", ".safetensors", ".md")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def verify(path: str | Path) -> None:
    """Raise CheckpointError unless ``checksums.json`` lists exactly the files present, each unaltered.

    Checked in this order, each failure naming the file: ``checksums.json`` is a JSON object of
    relative path -> sha256 hex string; no file present or listed has a format outside
    :data:`ALLOWED_SUFFIXES`; every file present is listed; every listed file is present;
    every file's sha256 matches. Names are checked before anything is hashed.
    """
    path = Path(path)
    sums_file = path / CHECKSUMS_FILE
    if not sums_file.is_file():
        raise CheckpointError(f"{path} is not a commer checkpoint (no {CHECKSUMS_FILE})")
    expected = _read_checksums(sums_file)
    present = _checkpoint_files(path)
    refused = sorted(n for n in set(present) | set(expected) if not n.endswith(ALLOWED_SUFFIXES))
    if refused:
        raise CheckpointError(f"checkpoint {path}: file {path / refused[0]} has a format that is not allowed "
                              f"(only {', '.join(ALLOWED_SUFFIXES)}; no pickles); refused: {refused}")
    extra = sorted(set(present) - set(expected))
    if extra:
        raise CheckpointError(f"checkpoint {path}: file {path / extra[0]} is not listed in {sums_file}; "
                              f"unlisted: {extra}")
    for name, sha in sorted(expected.items()):
        if name not in present:
            raise CheckpointError(f"checkpoint {path}: file {path / name} is listed in {sums_file} but missing")
        if _sha256(present[name]) != sha:
            raise CheckpointError(f"checkpoint {path}: file {path / name} was altered (sha256 mismatch)")


def _read_checksums(sums_file: Path) -> dict[str, str]:
    """``checksums.json`` as {relative path: sha256}, or one CheckpointError naming it."""
    try:
        expected = json.loads(sums_file.read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{sums_file}: not readable JSON ({exc})") from exc
    if not isinstance(expected, dict) or not expected:
        raise CheckpointError(f"{sums_file}: must be a non-empty JSON object of file name -> sha256, "
                              f"got {type(expected).__name__}")
    for name, sha in expected.items():
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise CheckpointError(f"{sums_file}: entry {name!r} is not a sha256 hex string: {sha!r}")
        parts = name.split("/")
        if name == CHECKSUMS_FILE or name.startswith("/") or "" in parts or "." in parts or ".." in parts:
            raise CheckpointError(f"{sums_file}: entry {name!r} is not a file path inside the checkpoint")
    return expected


def _checkpoint_files(root: Path) -> dict[str, Path]:
    """Every file under ``root`` but its own ``checksums.json``, by relative POSIX path.

    A ``checksums.json`` in a subdirectory is an ordinary file (it must be listed). An entry
    that is neither a regular file nor a directory (a symlinked directory, a dangling link,
    a socket) is refused: it could hide files from the listing.
    """
    files = {}
    for f in sorted(root.rglob("*")):
        name = f.relative_to(root).as_posix()
        if (f.is_symlink() and f.is_dir()) or not (f.is_file() or f.is_dir()):
            raise CheckpointError(f"checkpoint {root}: {f} is not a regular file or directory")
        if f.is_file() and name != CHECKSUMS_FILE:
            files[name] = f
    return files


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_checksums(root: Path) -> dict[str, str]:
    return {name: _sha256(f) for name, f in _checkpoint_files(root).items()}


def _write_checksums(root: Path) -> None:
    (root / CHECKSUMS_FILE).write_text(json.dumps(_file_checksums(root), indent=1, sort_keys=True) + "\n")
