"""Resume state: trainables, AdamW moments, every RNG state and the step (safetensors + JSON, no pickle)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from commer_core.files import replace_dir, staging_dir
from commer_core.training.config import TrainConfig, TrainingError
from commer_core.training.methods import Method

STATE_FORMAT = 1
STATE_FILE = "state.json"
TRAINABLES_FILE = "trainables.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"


def save_state(
    state_dir: Path, method: Method, optimizer: torch.optim.Optimizer, *, config: TrainConfig, step: int,
    total: int, tokens_seen: int, elapsed: float, history: list[dict[str, Any]], data: str,
) -> None:
    """Write the full training state atomically: built aside, then swapped in by :func:`replace_dir`.

    The previous state stays in place (or aside, recoverable) until the new one is complete.
    """
    with staging_dir(state_dir) as staging:
        save_file({n: p.detach().cpu().contiguous() for n, p in method.named_trainables()}, staging / TRAINABLES_FILE)
        opt = optimizer.state_dict()
        tensors, scalars = _split_optimizer_state(opt["state"])
        save_file(tensors, staging / OPTIMIZER_FILE)
        save_file(_rng_tensors(), staging / RNG_FILE)
        py_state = random.getstate()
        np_state = np.random.get_state()
        meta = {
            "format_version": STATE_FORMAT,
            "step": step,
            "total_steps": total,
            "tokens_seen": tokens_seen,
            "elapsed_s": elapsed,
            "config": config.to_dict(),
            "data": data,
            "trainable_names": [n for n, _ in method.named_trainables()],
            "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
            "python_random": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_random": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "history": history,
        }
        (staging / STATE_FILE).write_text(json.dumps(meta) + "\n")
        replace_dir(staging, state_dir)


def load_state(state_dir: Path, method: Method, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore trainables, optimizer and RNG states in place; return the JSON metadata."""
    state_dir = Path(state_dir)
    meta = json.loads((state_dir / STATE_FILE).read_text())
    if meta.get("format_version") != STATE_FORMAT:
        raise TrainingError(f"{state_dir}: unsupported state format {meta.get('format_version')}")
    names = [n for n, _ in method.named_trainables()]
    if meta["trainable_names"] != names:
        raise TrainingError(f"{state_dir}: saved trainables do not match this model")
    saved = load_file(state_dir / TRAINABLES_FILE)
    with torch.no_grad():
        for n, p in method.named_trainables():
            p.copy_(saved[n].to(p.device, p.dtype))
    optimizer.load_state_dict(_optimizer_state(load_file(state_dir / OPTIMIZER_FILE), meta["optimizer"]))
    _restore_rng(load_file(state_dir / RNG_FILE), meta)
    return meta


def _split_optimizer_state(state: dict[int, dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Per-parameter optimizer state as ``"{index}.{key}"`` tensors (safetensors) and scalars (JSON)."""
    tensors, scalars = {}, {}
    for idx, pstate in state.items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, scalars


def _optimizer_state(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    """The optimizer ``state_dict`` that :func:`_split_optimizer_state` took apart."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *saved["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = saved["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    return rng


def _restore_rng(rng: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[f"torch_cuda_{i}"] for i in range(torch.cuda.device_count()) if f"torch_cuda_{i}" in rng]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    py = meta["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = meta["numpy_random"]
    np.random.set_state((npr[0], np.asarray(npr[1], dtype=np.uint32), npr[2], npr[3], npr[4]))
