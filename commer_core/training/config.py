"""What defines a training run: :class:`TrainConfig`, its error and the run folder's names."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from commer_core.config import (
    DEFAULT_BASE_MODEL, DEFAULT_PROMPT_POSITION, LR_DECAYS, SWAP_PARTNER_CHOICES, CompressorConfig, LoraSettings,
)
from commer_core.errors import CommerError
from commer_core.merge import MERGES

TRAINABLE_METHODS: tuple[str, ...] = ("commer", "prompt_tuning")
OBJECTIVES: tuple[str, ...] = ("task", "autoencode")
SELECTIONS: tuple[str, ...] = ("bm25", "random", "recent", "first")

STATE_DIR = "state"
CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"  # the checkpoint of the dev check that best shows personalization (see dev.best_record)
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"
METHOD_FILE = "method.json"
PROMPT_FILE = "prompt_embeddings.safetensors"

# The LoRA defaults are LoraSettings' own: one place for the trainer, the CLI and the checkpoint.
_LORA = LoraSettings()


class TrainingError(CommerError, ValueError):
    """A training run cannot start or resume as asked; the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in its state and checkpoint)."""

    method: str = "commer"
    objective: str = "task"
    task: str | None = None
    base_model: str = DEFAULT_BASE_MODEL
    num_embeddings: int = 16
    lora_r: int = _LORA.r
    lora_alpha: int = _LORA.alpha
    lora_dropout: float = _LORA.dropout
    target_modules: tuple[str, ...] = _LORA.target_modules
    merge: str = "mean"
    max_doc_tokens: int = 512
    docs_per_example: int = 8
    # When set, each training example reads a random number of its selected documents, from this
    # many to docs_per_example: the merge is then trained on means of as many documents as it
    # serves (a store's prompt is the mean of all of a user's documents).
    min_docs_per_example: int | None = None
    dev_docs: int | None = None  # documents per dev example (default: docs_per_example)
    prompt_norm: str = "rms"  # how compression rows are scaled for the generator (CompressorConfig.prompt_norm)
    prompt_position: str = DEFAULT_PROMPT_POSITION  # where the generator reads the prompt (CompressorConfig)
    # Swap hinge (0: off): adds weight * mean(relu(margin - (other - own))) in nats per token, where
    # "other" scores each example's target under the prompt of another user of the batch. The plain
    # objective is met as well by one prompt for everyone; this term pays only for what is the user's own.
    swap_weight: float = 0.0
    swap_margin: float = 1.0
    swap_partners: int = 1  # other batch users each example is scored against (at most batch_size - 1 distinct)
    swap_partner_choice: str = "cyclic"  # SWAP_PARTNER_CHOICES
    # 0: the hinge. T > 0: its smooth form (training.dev.swap_hinge), which pulls hardest on the examples
    # another user's prompt wins, where the hinge pulls every example below the margin alike.
    swap_temperature: float = 0.0
    # Held-out document prediction (0: off): each ComMer training example leaves one of its documents
    # out of the prompt and also predicts it from the merged prompt of the others, weight * nats per
    # token. A user's unseen document is predictable from the prompt only through what recurs in the
    # user's documents (a sign-off, a pet's name): the literal text that tells similar users apart.
    doc_prediction_weight: float = 0.0
    # The swap hinge on those held-out documents too, at doc_prediction_weight * this weight (0: off;
    # margin, partners and temperature are the task hinge's): training.doc_prediction.doc_prediction_loss.
    doc_swap_weight: float = 0.0
    # ComMer with prompt_norm "center": keep the prompt's shared part (the bias every user gets) fixed,
    # typically at a prompt-tuning prompt (--shared-prompt-from), so that training cannot trade the
    # shared prompt's quality for the gap and only the user part moves.
    freeze_shared_prompt: bool = False
    selection: str = "bm25"
    raw_doc_budget: int = 512  # prompt tuning / raw docs: token budget of the raw documents
    max_input_tokens: int = 256
    max_target_tokens: int = 64
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr_lora: float = 1e-4
    lr_embeddings: float = 1e-2
    lr_prompt: float = 3e-2
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_decay: str = "none"
    max_grad_norm: float = 1.0
    bf16: bool = False
    seed: int = 0
    eval_every: int = 0  # 0: dev evaluation at the end only
    max_dev_examples: int = 64
    save_every: int = 50  # resume state every N steps (and at the end)
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_counts()
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        # Validate the compressor part now rather than after loading a model.
        self.compressor_config()

    def _check_choices(self) -> None:
        if self.method not in TRAINABLE_METHODS:
            raise TrainingError(
                f"method {self.method!r} has nothing to train; trainable methods are {TRAINABLE_METHODS} "
                "(evaluate raw_docs / none directly with `commer-pipeline evaluate --baseline`)"
            )
        if self.objective not in OBJECTIVES:
            raise TrainingError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.merge not in MERGES:
            raise TrainingError(f"merge must be one of {tuple(MERGES)}, got {self.merge!r}")
        if self.selection not in SELECTIONS:
            raise TrainingError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.lr_decay not in LR_DECAYS:
            raise TrainingError(f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        if self.swap_partner_choice not in SWAP_PARTNER_CHOICES:
            raise TrainingError(f"swap_partner_choice must be one of {SWAP_PARTNER_CHOICES}, "
                                f"got {self.swap_partner_choice!r}")
        if self.doc_prediction_weight > 0 and self.method != "commer":
            raise TrainingError(f"doc_prediction_weight needs ComMer (a prompt merged from documents), "
                                f"got method {self.method!r}")
        if self.doc_swap_weight > 0 and self.doc_prediction_weight == 0:
            raise TrainingError("doc_swap_weight scores the held-out documents of doc_prediction_weight; set that too")
        if self.freeze_shared_prompt and (self.method != "commer" or self.prompt_norm != "center"):
            raise TrainingError("freeze_shared_prompt needs ComMer with prompt_norm 'center' (the only prompt with a "
                                f"shared part), got method {self.method!r} with prompt_norm {self.prompt_norm!r}")

    def _check_counts(self) -> None:
        if self.min_docs_per_example is not None and not 1 <= self.min_docs_per_example <= self.docs_per_example:
            raise TrainingError(f"min_docs_per_example must be in [1, docs_per_example={self.docs_per_example}], "
                                f"got {self.min_docs_per_example}")
        if self.steps is not None and self.epochs is not None:
            raise TrainingError("give --steps or --epochs, not both")
        if self.steps is not None and self.steps < 1:
            raise TrainingError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise TrainingError(f"epochs must be > 0, got {self.epochs}")
        for name in ("batch_size", "grad_accum", "num_embeddings", "max_input_tokens", "max_target_tokens",
                     "swap_partners"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("docs_per_example", "raw_doc_budget", "warmup_steps", "eval_every", "save_every", "swap_weight",
                     "swap_margin", "swap_temperature", "doc_prediction_weight", "doc_swap_weight"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def eval_docs(self) -> int:
        return self.docs_per_example if self.dev_docs is None else self.dev_docs

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout, self.target_modules)

    def compressor_config(self) -> CompressorConfig:
        return CompressorConfig(
            base_model=self.base_model,
            num_embeddings=self.num_embeddings,
            lora=self.lora,
            max_doc_tokens=self.max_doc_tokens,
            prompt_norm=self.prompt_norm,
            prompt_position=self.prompt_position,
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def total_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        per_step = self.batch_size * self.grad_accum
        return max(1, math.ceil((self.epochs or 1.0) * n_examples / per_step))
