"""Configuration of a ComMer compressor, validated once so every consumer can trust it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BASE_MODEL = "smollm2-135m"
# Attention projections: the LoRA target that keeps a checkpoint small (all-linear
# LoRA r=64 on SmolLM2 is ~78 MB); override for the paper's heavier setting.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
PROMPT_NORMS = ("none", "rms", "center", "vocab")
PROMPT_POSITIONS = ("turn", "start")
#: Training learning-rate schedules after the warmup: constant, or a cosine from the base rate to 0 at the last step.
LR_DECAYS = ("none", "cosine")
#: How the swap hinge picks each example's partners among the batch's other users: the next ones in
#: batch order, or those whose prompts are closest to the example's own (the hardest to tell apart).
SWAP_PARTNER_CHOICES = ("cyclic", "nearest")
# What new training and the untrained baselines use; a checkpoint without the field was trained with "start".
DEFAULT_PROMPT_POSITION = "turn"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the backbone; defaults are the paper's (r=64, alpha=16, dropout=0.1).

    The one home of these defaults: TrainConfig and ``commer-pipeline train`` take theirs from here.
    """

    r: int = 64
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("LoRA target_modules must name at least one module")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))


@dataclass(frozen=True)
class CompressorConfig:
    """What defines a compressor: its backbone, k, LoRA and how documents are cut.

    ``hidden_size`` (d) is filled from the backbone when the compressor is built.
    """

    base_model: str = DEFAULT_BASE_MODEL
    num_embeddings: int = 16
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_doc_tokens: int = 512
    hidden_size: int | None = None
    # How compression rows are scaled for the generator: "none" (the final layer's states as they
    # are; checkpoints from before this option), "rms" (normalised, times a learned gain),
    # "center" (a running mean subtracted first, a learned bias added last), or "vocab" (each row
    # becomes the mixture of token embeddings the model predicts at it). See Compressor.
    prompt_norm: str = "none"
    # Where the generator puts the prompt in a chat layout: "turn" (inside the user turn, before the
    # input) or "start" (before everything: checkpoints from before this option). See task_format.
    prompt_position: str = "start"

    def __post_init__(self) -> None:
        if not self.base_model:
            raise ValueError("base_model must be a hub id, a local path or a built-in name")
        if not 1 <= self.num_embeddings <= 1024:
            raise ValueError(f"num_embeddings (k) must be in [1, 1024], got {self.num_embeddings}")
        if self.max_doc_tokens < 1:
            raise ValueError(f"max_doc_tokens must be >= 1, got {self.max_doc_tokens}")
        if self.prompt_position not in PROMPT_POSITIONS:
            raise ValueError(f"prompt_position must be one of {PROMPT_POSITIONS}, got {self.prompt_position!r}")
        if self.prompt_norm not in PROMPT_NORMS:
            raise ValueError(f"prompt_norm must be one of {PROMPT_NORMS}, got {self.prompt_norm!r}")
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraSettings(**self.lora))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lora"]["target_modules"] = list(self.lora.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompressorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown compressor config fields: {sorted(unknown)}")
        return cls(**data)
