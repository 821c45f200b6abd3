"""Training ComMer and its baselines: methods, objectives, and a resumable, deterministic loop.

Methods (how a user's documents reach the frozen generator):

- ``commer``: each selected document is compressed on its own (k x d), the
  compressions are merged (mean pool, or the concat ablation) and the result is
  the soft prompt. Trained end to end through the merge: compression embeddings
  (lr 1e-2) and LoRA (lr 1e-4) only.
- ``prompt_tuning``: k trainable soft tokens (lr 3e-2) followed by the raw selected
  documents' token embeddings, concatenated and truncated to a token budget.
- ``raw_docs``: the raw documents in the prompt, truncated to a budget; nothing trained.
- ``none``: no personalization; the frozen model reads the input alone.

Objectives: ``task`` (examples from ``prepare``) and ``autoencode`` (the paper's
multi-document autoencoding pretraining, built by :mod:`commer_core.pretraining`);
both are plain :class:`~commer_core.data.Example` lists, so one loop trains both.

Determinism and resume: the data order is a pure function of (seed, step) (a
seeded permutation per epoch), the LoRA dropout draws from torch's global RNG,
and the resume state holds the trainables, the AdamW moments, every RNG state and
the step. A run interrupted and resumed on the same machine (CPU) ends bit for bit
where an uninterrupted run ends. The state is safetensors + JSON; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from commer_core.backbone import Backbone, load_backbone
from commer_core.checkpoint import CONFIG_FILE, load_checkpoint, read_config, save_checkpoint
from commer_core.compressor import Compressor, draw_soft_tokens
from commer_core.config import DEFAULT_BASE_MODEL, DEFAULT_TARGET_MODULES, CompressorConfig, LoraSettings
from commer_core.data.examples import Example
from commer_core.data.selection import select_documents
from commer_core.errors import CommerError
from commer_core.generator import Generator, Prefix
from commer_core.merge import MERGES
from commer_core.personalization import personalization_gap

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("commer", "prompt_tuning", "raw_docs", "none")
TRAINABLE_METHODS: tuple[str, ...] = ("commer", "prompt_tuning")
OBJECTIVES: tuple[str, ...] = ("task", "autoencode")
SELECTIONS: tuple[str, ...] = ("bm25", "random", "recent", "first")

STATE_DIR = "state"
CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"  # the checkpoint of the dev check that best shows personalization (see best_record)
# A dev check with a larger personalization gap replaces the best one unless its dev perplexity is
# worse by more than this factor: a gap bought by wrecking the perplexity is no gain.
BEST_PPL_TOLERANCE = 1.1
METHOD_FILE = "method.json"
PROMPT_FILE = "prompt_embeddings.safetensors"
STATE_FORMAT = 1


class TrainingError(CommerError, ValueError):
    """A training run cannot start or resume as asked; the message says why."""


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in its state and checkpoint)."""

    method: str = "commer"
    objective: str = "task"
    task: str | None = None
    base_model: str = DEFAULT_BASE_MODEL
    num_embeddings: int = 16
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    merge: str = "mean"
    max_doc_tokens: int = 512
    docs_per_example: int = 8
    # When set, each training example reads a random number of its selected documents, from this
    # many to docs_per_example: the merge is then trained on means of as many documents as it
    # serves (a store's prompt is the mean of all of a user's documents).
    min_docs_per_example: int | None = None
    dev_docs: int | None = None  # documents per dev example (default: docs_per_example)
    prompt_norm: str = "rms"  # how compression rows are scaled for the generator (CompressorConfig.prompt_norm)
    # Swap hinge (0: off): adds weight * mean(relu(margin - (other - own))) in nats per token, where
    # "other" scores each example's target under the prompt of another user of the batch. The plain
    # objective is met as well by one prompt for everyone; this term pays only for what is the user's own.
    swap_weight: float = 0.0
    swap_margin: float = 1.0
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
    max_grad_norm: float = 1.0
    bf16: bool = False
    seed: int = 0
    eval_every: int = 0  # 0: dev evaluation at the end only
    max_dev_examples: int = 64
    save_every: int = 50  # resume state every N steps (and at the end)
    device: str = "cpu"

    def __post_init__(self) -> None:
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
        if self.min_docs_per_example is not None and not 1 <= self.min_docs_per_example <= self.docs_per_example:
            raise TrainingError(f"min_docs_per_example must be in [1, docs_per_example={self.docs_per_example}], "
                                f"got {self.min_docs_per_example}")
        if self.steps is not None and self.epochs is not None:
            raise TrainingError("give --steps or --epochs, not both")
        if self.steps is not None and self.steps < 1:
            raise TrainingError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise TrainingError(f"epochs must be > 0, got {self.epochs}")
        for name in ("batch_size", "grad_accum", "num_embeddings", "max_input_tokens", "max_target_tokens"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("docs_per_example", "raw_doc_budget", "warmup_steps", "eval_every", "save_every", "swap_weight",
                     "swap_margin"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        # Validate the compressor part now rather than after loading a model.
        self.compressor_config()

    @property
    def eval_docs(self) -> int:
        return self.docs_per_example if self.dev_docs is None else self.dev_docs

    def compressor_config(self) -> CompressorConfig:
        return CompressorConfig(
            base_model=self.base_model,
            num_embeddings=self.num_embeddings,
            lora=LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout, self.target_modules),
            max_doc_tokens=self.max_doc_tokens,
            prompt_norm=self.prompt_norm,
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


# -- examples as the model sees them ---------------------------------------------------


@dataclass(frozen=True)
class PreparedExample:
    """An example after truncation and document selection: what every method is scored on."""

    example_id: str
    user_id: str
    input: str
    target: str
    documents: tuple[str, ...]


def _truncate_all(tokenizer: Any, texts: Sequence[str], limit: int) -> list[str]:
    """Cut each text to its first ``limit`` tokens (decoded back to text)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [t if len(i) <= limit else tokenizer.decode(i[:limit]) for t, i in zip(texts, ids)]


def prepare_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    n_docs: int,
    selection: str = "bm25",
    seed: int = 0,
    max_input_tokens: int = 256,
    max_target_tokens: int = 64,
) -> list[PreparedExample]:
    """Select up to ``n_docs`` documents per example and truncate inputs and targets.

    Unlabelled examples (target None, e.g. LaMP test) are dropped. ``selection``
    ``first`` keeps the documents' own order (the autoencoding objective numbers them).
    """
    if selection not in SELECTIONS:
        raise TrainingError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    labelled = [e for e in examples if e.target is not None]
    inputs = _truncate_all(tokenizer, [e.input for e in labelled], max_input_tokens)
    targets = _truncate_all(tokenizer, [e.target or "" for e in labelled], max_target_tokens)
    prepared = []
    for e, inp, tgt in zip(labelled, inputs, targets):
        if selection == "first":
            docs = list(e.documents[:n_docs])
        else:
            docs = select_documents(e.input, e.documents, n_docs, selection, seed, example_id=e.example_id)
        prepared.append(PreparedExample(e.example_id, e.user_id, inp, tgt, tuple(d.text for d in docs)))
    return prepared


def sample_documents(batch: Sequence[PreparedExample], low: int | None, *, seed: int, step: int) -> list[PreparedExample]:
    """Each example keeps a random subset of ``low``..all of its documents (order kept); ``None`` keeps all.

    A pure function of (seed, step, example id), so an interrupted and resumed run draws the same.
    """
    if low is None:
        return list(batch)
    out = []
    for e in batch:
        if len(e.documents) <= low:
            out.append(e)
            continue
        rng = random.Random(f"commer-docs/{seed}/{step}/{e.example_id}")
        keep = sorted(rng.sample(range(len(e.documents)), rng.randint(low, len(e.documents))))
        out.append(dataclasses.replace(e, documents=tuple(e.documents[i] for i in keep)))
    return out


def examples_digest(examples: Sequence[PreparedExample]) -> str:
    """sha256 over what is scored (ids, inputs, targets, documents): equal digests, identical examples."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.example_id, e.input, e.target, list(e.documents)]).encode())
    return digest.hexdigest()


# -- methods ----------------------------------------------------------------------------


class Method:
    """How documents become a prefix for the frozen generator; subclasses own their trainables."""

    name = "method"

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.tokenizer = generator.tokenizer

    def named_trainables(self) -> list[tuple[str, nn.Parameter]]:
        return []

    def param_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        return []

    def prefixes(self, batch: Sequence[PreparedExample]) -> list[Prefix]:
        raise NotImplementedError

    def prompt_tokens(self, example: PreparedExample) -> int:
        """Soft or raw prompt positions this method adds before the input (its cost)."""
        raise NotImplementedError

    def train(self) -> None:
        pass

    def eval(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"method": self.name}

    # Raw documents as token ids (prompt tuning, raw docs).
    def _raw_ids(self, example: PreparedExample, budget: int) -> list[int]:
        if not example.documents or budget <= 0:
            return []
        text = "\n\n".join(example.documents)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"][:budget]

    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        embed = self.generator.model.get_input_embeddings()
        with torch.no_grad():
            return embed(torch.as_tensor(ids, dtype=torch.long, device=self.generator.device))


class CommerMethod(Method):
    """Compress each document, merge (mean by default), prefix the merged k x d prompt."""

    name = "commer"

    def __init__(self, compressor: Compressor, *, merge: str = "mean", doc_batch_tokens: int = 8192) -> None:
        super().__init__(Generator(compressor))
        self.compressor = compressor
        self.merge = merge
        self.merge_fn = MERGES[merge]
        self.doc_batch_tokens = doc_batch_tokens

    def named_trainables(self) -> list[tuple[str, nn.Parameter]]:
        lora = [(n, p) for n, p in self.compressor.peft_model.named_parameters() if "lora_" in n]
        return [*self.compressor.soft_tensors().items(), *lora]

    def param_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        groups = self.compressor.trainable_parameters()
        return [
            {"params": groups["embeddings"], "lr": config.lr_embeddings, "name": "embeddings"},
            {"params": groups["lora"], "lr": config.lr_lora, "name": "lora"},
        ]

    def prefixes(self, batch: Sequence[PreparedExample]) -> list[Prefix]:
        texts = [t for e in batch for t in e.documents]
        if not texts:
            return [None] * len(batch)
        ids = [d.ids for d in self.compressor.tokenize(texts)]
        k = self.compressor.num_embeddings
        # Chunk by token budget to bound activation memory; order is kept.
        chunks, start, width = [], 0, 0
        for i, doc in enumerate(ids):
            width = max(width, len(doc) + k)
            if i > start and (i - start + 1) * width > self.doc_batch_tokens:
                chunks.append(self.compressor(ids[start:i]))
                start, width = i, len(doc) + k
        chunks.append(self.compressor(ids[start:]))
        compressed = torch.cat(chunks, dim=0)
        out: list[Prefix] = []
        offset = 0
        for e in batch:
            n = len(e.documents)
            out.append(self.merge_fn(compressed[offset : offset + n]) if n else None)
            offset += n
        return out

    def prompt_tokens(self, example: PreparedExample) -> int:
        if not example.documents:
            return 0
        k = self.compressor.num_embeddings
        return k * len(example.documents) if self.merge == "concat" else k

    def train(self) -> None:
        self.compressor.train()

    def eval(self) -> None:
        self.compressor.eval()

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "k": self.compressor.num_embeddings, "merge": self.merge}


class PromptTuningMethod(Method):
    """k trainable soft tokens, then the raw selected documents (truncated to a budget)."""

    name = "prompt_tuning"

    def __init__(self, generator: Generator, *, num_embeddings: int, budget: int, seed: int = 0) -> None:
        super().__init__(generator)
        self.budget = budget
        self.prompt = nn.Parameter(draw_soft_tokens(generator.model, num_embeddings, seed).to(generator.device))

    @property
    def num_embeddings(self) -> int:
        return int(self.prompt.shape[0])

    def named_trainables(self) -> list[tuple[str, nn.Parameter]]:
        return [("prompt_embeddings", self.prompt)]

    def param_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        return [{"params": [self.prompt], "lr": config.lr_prompt, "name": "prompt"}]

    def prefixes(self, batch: Sequence[PreparedExample]) -> list[Prefix]:
        out: list[Prefix] = []
        for e in batch:
            ids = self._raw_ids(e, self.budget)
            parts = [self.prompt] + ([self._embed_ids(ids).to(self.prompt.dtype)] if ids else [])
            out.append(torch.cat(parts, dim=0))
        return out

    def prompt_tokens(self, example: PreparedExample) -> int:
        return self.num_embeddings + len(self._raw_ids(example, self.budget))

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "k": self.num_embeddings, "budget": self.budget}


class RawDocsMethod(Method):
    """The raw documents in the prompt, truncated to a token budget; nothing trained."""

    name = "raw_docs"

    def __init__(self, generator: Generator, *, budget: int) -> None:
        super().__init__(generator)
        self.budget = budget

    def prefixes(self, batch: Sequence[PreparedExample]) -> list[Prefix]:
        out: list[Prefix] = []
        for e in batch:
            ids = self._raw_ids(e, self.budget)
            out.append(self._embed_ids(ids) if ids else None)
        return out

    def prompt_tokens(self, example: PreparedExample) -> int:
        return len(self._raw_ids(example, self.budget))

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "budget": self.budget}


class NoPersonalization(Method):
    """The frozen model reads the input alone."""

    name = "none"

    def prefixes(self, batch: Sequence[PreparedExample]) -> list[Prefix]:
        return [None] * len(batch)

    def prompt_tokens(self, example: PreparedExample) -> int:
        return 0


def generator_only(backbone: Backbone) -> Generator:
    """A generator on a backbone for the untrained baselines (the LoRA it carries is never enabled)."""
    config = CompressorConfig(base_model=backbone.name, num_embeddings=1, lora=LoraSettings(r=1, alpha=1, dropout=0.0))
    return Generator(Compressor(backbone, config))


# -- method checkpoints -----------------------------------------------------------------


def save_method(method: Method, path: str | Path, *, training: dict[str, Any]) -> str:
    """A trained method's checkpoint: ComMer in the model core's format, prompt tuning beside it."""
    path = Path(path)
    if isinstance(method, CommerMethod):
        return save_checkpoint(method.compressor, path, trained=True, training=training)
    if not isinstance(method, PromptTuningMethod):
        raise TrainingError(f"method {method.name!r} has no checkpoint")
    backbone = method.generator.compressor.backbone
    path.mkdir(parents=True, exist_ok=True)
    save_file({"prompt_embeddings": method.prompt.detach().float().cpu().contiguous()}, path / PROMPT_FILE)
    meta = {
        "method": method.name,
        "base_model": {"name": backbone.name, "weights_sha256": backbone.weights_sha256},
        "num_embeddings": method.num_embeddings,
        "budget": method.budget,
        "training": training,
    }
    (path / METHOD_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return hashlib.sha256((path / PROMPT_FILE).read_bytes()).hexdigest()


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, a training output directory holding ``checkpoint/``, or ``default``."""
    if str(path) == "default":
        from commer_core.defaults import default_checkpoint_path

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
    if backbone.weights_sha256 != meta["base_model"]["weights_sha256"]:
        raise TrainingError(f"{path} was trained on other weights of {meta['base_model']['name']!r}")
    method = PromptTuningMethod(generator_only(backbone), num_embeddings=meta["num_embeddings"],
                                budget=meta["budget"] if budget is None else budget)
    with torch.no_grad():
        method.prompt.copy_(load_file(path / PROMPT_FILE)["prompt_embeddings"])
    return method


# -- scoring ----------------------------------------------------------------------------


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def score_examples(
    method: Method, examples: Sequence[PreparedExample], *, batch_size: int = 8, bf16: bool = False
) -> list[tuple[float, int]]:
    """(summed NLL, target tokens) per example under ``method``, in eval mode."""
    method.eval()
    out: list[tuple[float, int]] = []
    for batch in batches(examples, batch_size):
        with autocast(method.generator.device, bf16):
            prefixes = method.prefixes(batch)
            nll, counts = method.generator.target_nll(prefixes, [e.input for e in batch], [e.target for e in batch])
        out.extend((float(a), int(b)) for a, b in zip(nll.float().cpu(), counts.cpu()))
    return out


def corpus_perplexity(scores: Sequence[tuple[float, int]]) -> float:
    """exp(total NLL / total target tokens): the token-weighted perplexity of a set."""
    tokens = sum(n for _, n in scores)
    return math.exp(sum(nll for nll, _ in scores) / max(tokens, 1))


# -- the training loop ------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a pure function of (seed, epoch), not of any RNG state."""
    order = list(range(n))
    random.Random(f"commer-data-order/{seed}/{epoch}").shuffle(order)
    return order


class DataOrder:
    """Example indices of micro-batch ``m``: a flat stream of per-epoch permutations."""

    def __init__(self, n: int, seed: int, batch_size: int) -> None:
        if n < 1:
            raise TrainingError("no training examples")
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self._cache: dict[int, list[int]] = {}

    def micro_batch(self, m: int) -> list[int]:
        out = []
        for q in range(m * self.batch_size, (m + 1) * self.batch_size):
            epoch, pos = divmod(q, self.n)
            if epoch not in self._cache:
                self._cache = {epoch: epoch_permutation(self.n, self.seed, epoch)}
            out.append(self._cache[epoch][pos])
        return out


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    output_dir: Path
    steps_done: int
    total_steps: int
    completed: bool
    checkpoint: Path | None = None
    fingerprint: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    dev: dict[str, Any] = field(default_factory=dict)


def build_method(config: TrainConfig, *, init_from: str | Path | None = None) -> Method:
    """A fresh backbone with the method's trainables (seeded), optionally initialised from a checkpoint."""
    seed_everything(config.seed)
    backbone = load_backbone(config.base_model, device=config.device)
    if config.method == "commer":
        if init_from is not None:
            source = resolve_checkpoint_dir(init_from)
            compressor = load_checkpoint(source, backbone)
            if compressor.config.num_embeddings != config.num_embeddings or compressor.config.lora != config.compressor_config().lora:
                raise TrainingError(
                    f"--init-from {source}: its k={compressor.config.num_embeddings} / LoRA "
                    f"{compressor.config.lora} differ from this run's k={config.num_embeddings} / "
                    f"{config.compressor_config().lora}; pass matching --num-embeddings and --lora-* options"
                )
            if compressor.config.max_doc_tokens != config.max_doc_tokens:
                compressor.config = dataclasses.replace(compressor.config, max_doc_tokens=config.max_doc_tokens)
            return CommerMethod(compressor, merge=config.merge)
        return CommerMethod(Compressor(backbone, config.compressor_config(), seed=config.seed), merge=config.merge)
    method = PromptTuningMethod(generator_only(backbone), num_embeddings=config.num_embeddings,
                                budget=config.raw_doc_budget, seed=config.seed)
    if init_from is not None:
        source = resolve_checkpoint_dir(init_from)
        with torch.no_grad():
            method.prompt.copy_(load_file(source / PROMPT_FILE)["prompt_embeddings"])
    return method


def make_optimizer(method: Method, config: TrainConfig) -> torch.optim.AdamW:
    groups = method.param_groups(config)
    for g in groups:
        g["base_lr"] = g["lr"]
    # foreach=False: the same arithmetic on every platform and thread count.
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, foreach=False)


def _lr_scale(step: int, warmup: int) -> float:
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def _data_fingerprint(examples: Sequence[PreparedExample]) -> str:
    return examples_digest(examples)[:16]


def train(
    config: TrainConfig,
    train_examples: Sequence[Example],
    dev_examples: Sequence[Example],
    output_dir: str | Path,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    compare_baselines: bool = True,
    extra_metadata: dict[str, Any] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``config.method`` on ``train_examples``; write state, log, summary and checkpoint.

    ``output_dir`` receives ``state/`` (resume state), ``train_log.jsonl``,
    ``train_summary.json`` and, at the end, ``checkpoint/``. ``resume`` continues
    from ``state/`` when it exists (the config must match). ``stop_after`` ends the
    call after that many total steps with the state saved, as an interruption would
    (tests use it). ``compare_baselines`` scores the untrained method and no
    personalization on the same dev examples at the end and records all three.
    """
    output_dir = Path(output_dir)
    state_dir = output_dir / STATE_DIR
    if output_dir.exists() and (state_dir.exists() or (output_dir / CHECKPOINT_DIR).exists()) and not resume:
        raise TrainingError(f"{output_dir} already holds a training run; pass --resume to continue it or pick a new --output")
    output_dir.mkdir(parents=True, exist_ok=True)
    method = build_method(config, init_from=init_from)
    tokenizer = method.tokenizer
    prep = dict(selection=config.selection, seed=config.seed, max_input_tokens=config.max_input_tokens,
                max_target_tokens=config.max_target_tokens)
    train_set = prepare_examples(train_examples, tokenizer, n_docs=config.docs_per_example, **prep)
    dev_set = prepare_examples(dev_examples, tokenizer, n_docs=config.eval_docs, **prep)[: config.max_dev_examples]
    if not train_set:
        raise TrainingError("no labelled training examples")
    total = config.total_steps(len(train_set))
    optimizer = make_optimizer(method, config)
    trainables = method.named_trainables()
    history: list[dict[str, Any]] = []
    start_step, tokens_seen, elapsed = 0, 0, 0.0
    data_id = _data_fingerprint(train_set)
    if resume and (state_dir / "state.json").exists():
        saved = load_state(state_dir, method, optimizer)
        if saved["config"] != config.to_dict():
            diff = sorted(k for k in config.to_dict() if saved["config"].get(k) != config.to_dict()[k])
            raise TrainingError(f"cannot resume {output_dir}: options differ from the interrupted run ({diff})")
        if saved["data"] != data_id:
            raise TrainingError(f"cannot resume {output_dir}: the training data changed since the interrupted run")
        start_step, tokens_seen, elapsed = saved["step"], saved["tokens_seen"], saved["elapsed_s"]
        history = saved["history"]
        log.info("resumed %s at step %d/%d", output_dir, start_step, total)
    elif resume:
        log.info("nothing to resume in %s: starting fresh", output_dir)
    order = DataOrder(len(train_set), config.seed, config.batch_size)
    device = method.generator.device
    log_file = output_dir / "train_log.jsonl"
    bar = _progress(total, start_step, progress)
    step = start_step
    best = best_record(history)
    try:
        while step < total:
            if stop_after is not None and step >= stop_after:
                break
            t0 = time.perf_counter()
            scale = _lr_scale(step, config.warmup_steps)
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * scale
            optimizer.zero_grad(set_to_none=True)
            method.train()
            loss_sum, token_sum, step_tokens = 0.0, 0, 0
            for micro in range(config.grad_accum):
                batch = sample_documents([train_set[i] for i in order.micro_batch(step * config.grad_accum + micro)],
                                         config.min_docs_per_example, seed=config.seed, step=step)
                with autocast(device, config.bf16):
                    prefixes = method.prefixes(batch)
                    nll, counts = method.generator.target_nll(
                        prefixes, [e.input for e in batch], [e.target for e in batch]
                    )
                    n_tok = int(counts.sum())
                    loss = nll.float().sum() / max(n_tok, 1)
                    if config.swap_weight > 0:
                        loss = loss + config.swap_weight * swap_hinge(method, batch, prefixes, nll, counts,
                                                                      config.swap_margin)
                (loss / config.grad_accum).backward()
                loss_sum += float(nll.detach().float().sum())
                token_sum += n_tok
                step_tokens += _step_token_count(method, batch, prefixes)
            params = [p for _, p in trainables]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)) if config.max_grad_norm > 0 else 0.0
            optimizer.step()
            step += 1
            dt = time.perf_counter() - t0
            elapsed += dt
            tokens_seen += step_tokens
            record = {"step": step, "loss": loss_sum / max(token_sum, 1), "grad_norm": grad_norm,
                      "tokens": step_tokens, "tokens_per_s": step_tokens / max(dt, 1e-9), "lr_scale": scale}
            if config.eval_every and step % config.eval_every == 0 and step < total and dev_set:
                record.update(dev_check(method, dev_set, config))
                if _better(record, best):
                    best = {"step": step, **{k: record[k] for k in DEV_KEYS if k in record}}
                    save_method(method, output_dir / BEST_DIR, training={"step": step, "config": config.to_dict(),
                                                                           "dev": best})
            history.append(record)
            with open(log_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}",
                            **({"dev_ppl": f"{record['dev_perplexity']:.3f}"} if "dev_perplexity" in record else {}),
                            **({"dev_gap": f"{record['dev_gap']:.3f}"} if "dev_gap" in record else {}))
            if on_step is not None:
                on_step(record)
            if config.save_every and step % config.save_every == 0 and step < total:
                save_state(state_dir, method, optimizer, config=config, step=step, total=total,
                           tokens_seen=tokens_seen, elapsed=elapsed, history=history, data=data_id)
    except KeyboardInterrupt:
        bar.close()
        save_state(state_dir, method, optimizer, config=config, step=step, total=total,
                   tokens_seen=tokens_seen, elapsed=elapsed, history=history, data=data_id)
        log.warning("interrupted at step %d/%d; state saved, continue with --resume", step, total)
        raise
    bar.close()
    save_state(state_dir, method, optimizer, config=config, step=step, total=total,
               tokens_seen=tokens_seen, elapsed=elapsed, history=history, data=data_id)
    result = TrainResult(output_dir, step, total, step >= total, history=history)
    if step < total:
        return result
    dev: dict[str, Any] = {"examples": len(dev_set), "docs_per_example": config.eval_docs,
                           "examples_digest": examples_digest(dev_set)}
    if dev_set:
        final = dev_check(method, dev_set, config)
        dev["trained"] = final["dev_perplexity"]
        dev["personalization"] = {k: v for k, v in final.items() if k != "dev_perplexity"}
        if compare_baselines:
            dev.update(_baseline_perplexities(config, method, dev_set))
    training = {
        "method": config.method,
        "objective": config.objective,
        "task": config.task,
        "steps": step,
        "examples_seen": step * config.batch_size * config.grad_accum,
        "train_examples": len(train_set),
        "tokens_seen": tokens_seen,
        "elapsed_s": round(elapsed, 1),
        "init_from": str(init_from) if init_from else None,
        "optimizer": {"name": "AdamW", "weight_decay": config.weight_decay, "max_grad_norm": config.max_grad_norm,
                      "warmup_steps": config.warmup_steps},
        "config": config.to_dict(),
        "dev_perplexity": dev,
        "final_train_loss": history[-1]["loss"] if history else None,
        "best_dev_check": best_record([*history, {"step": step, **final}]) if dev_set else {},
        **(extra_metadata or {}),
    }
    method.eval()
    result.checkpoint = output_dir / CHECKPOINT_DIR
    result.fingerprint = save_method(method, result.checkpoint, training=training)
    result.dev = dev
    summary = {"checkpoint": str(result.checkpoint), "fingerprint": result.fingerprint, **training,
               "dev_history": [{"step": h["step"], **{k: h[k] for k in DEV_KEYS if k in h}}
                               for h in history if "dev_perplexity" in h]}
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return result


def swap_partners(batch: Sequence[PreparedExample]) -> list[int] | None:
    """For each example, the next example of the batch (cyclically) that belongs to another user; None if one user."""
    n = len(batch)
    partners = []
    for i, e in enumerate(batch):
        j = next((j % n for j in range(i + 1, i + n) if batch[j % n].user_id != e.user_id), None)
        if j is None:
            return None
        partners.append(j)
    return partners


def swap_hinge(method: Method, batch: Sequence[PreparedExample], prefixes: Sequence[Prefix], nll: torch.Tensor,
               counts: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(relu(margin - (other - own))) in nats per token, "other" being another batch user's prompt.

    Reuses the batch's prompts (no extra compression): one more generator pass.
    """
    partners = swap_partners(batch)
    if partners is None:
        return nll.new_zeros(())
    other, _ = method.generator.target_nll([prefixes[j] for j in partners], [e.input for e in batch],
                                           [e.target for e in batch])
    per_token = counts.clamp_min(1).float()
    gap = (other.float() - nll.float()) / per_token
    return torch.relu(margin - gap).mean()


def dev_check(method: Method, dev_set: Sequence[PreparedExample], config: TrainConfig) -> dict[str, float]:
    """Dev perplexity and, when the user's documents can matter, the personalization gap.

    The gap (nats per token, another user's documents minus the user's own; see
    :mod:`commer_core.personalization`) is what shows the prompt carries *this* user: a perplexity
    below no personalization is also reached by one prompt shared by everyone.
    """
    from commer_core.swap import swap_documents  # swap builds on this module's methods

    own = score_examples(method, dev_set, bf16=config.bf16)
    out = {"dev_perplexity": corpus_perplexity(own)}
    if len({e.user_id for e in dev_set}) >= 2 and any(e.documents for e in dev_set):
        other = score_examples(method, swap_documents(dev_set, config.seed), bf16=config.bf16)
        gap = personalization_gap(own, other, seed=config.seed)
        out.update(dev_gap=gap.gap, dev_gap_low=gap.low, dev_own_better=gap.own_better)
    return out


def _better(record: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether a dev check beats the best so far: a larger gap (at a tolerable perplexity), else a lower perplexity."""
    if not best:
        return True
    ppl, best_ppl = record["dev_perplexity"], best["dev_perplexity"]
    if "dev_gap" in record and "dev_gap" in best and record["dev_gap"] != best["dev_gap"]:
        return record["dev_gap"] > best["dev_gap"] and ppl <= best_ppl * BEST_PPL_TOLERANCE
    return ppl < best_ppl


def best_record(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The dev check :func:`_better` keeps, replayed over a run's history (so a resumed run agrees)."""
    best: dict[str, Any] = {}
    for record in history:
        if "dev_perplexity" in record and _better(record, best):
            best = {"step": record["step"], **{k: record[k] for k in DEV_KEYS if k in record}}
    return best


DEV_KEYS = ("dev_perplexity", "dev_gap", "dev_gap_low", "dev_own_better")


def _step_token_count(method: Method, batch: Sequence[PreparedExample], prefixes: Sequence[Prefix]) -> int:
    """Tokens the step pushed through the model: documents (+k each) for ComMer, prefix + input + target."""
    tok = method.tokenizer
    n = 0
    if isinstance(method, CommerMethod):
        k = method.compressor.num_embeddings
        docs = [t for e in batch for t in e.documents]
        if docs:
            n += sum(len(d.ids) + k for d in method.compressor.tokenize(docs))
    n += sum(0 if p is None else int(p.shape[0]) for p in prefixes)
    ids = tok([e.input + e.target for e in batch], add_special_tokens=False)["input_ids"]
    return n + sum(len(i) + 1 for i in ids)


def _baseline_perplexities(config: TrainConfig, method: Method, dev_set: Sequence[PreparedExample]) -> dict[str, float]:
    """Dev perplexity of the same method untrained (fresh, same seed) and of no personalization."""
    out = {"none": corpus_perplexity(score_examples(NoPersonalization(method.generator), dev_set, bf16=config.bf16))}
    fresh = build_method(config)  # a fresh backbone: one compressor per backbone
    out["untrained"] = corpus_perplexity(score_examples(fresh, dev_set, bf16=config.bf16))
    del fresh
    return out


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


# -- resume state (safetensors + JSON, no pickle) ---------------------------------------


def save_state(
    state_dir: Path, method: Method, optimizer: torch.optim.Optimizer, *, config: TrainConfig, step: int,
    total: int, tokens_seen: int, elapsed: float, history: list[dict[str, Any]], data: str,
) -> None:
    """Write the full training state atomically (staging directory, then rename)."""
    state_dir = Path(state_dir)
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".state-", dir=state_dir.parent))
    try:
        save_file({n: p.detach().cpu().contiguous() for n, p in method.named_trainables()},
                  staging / "trainables.safetensors")
        opt = optimizer.state_dict()
        tensors, scalars = {}, {}
        for idx, pstate in opt["state"].items():
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{key}"] = value
        save_file(tensors, staging / "optimizer.safetensors")
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = s
        save_file(rng, staging / "rng.safetensors")
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
        (staging / "state.json").write_text(json.dumps(meta) + "\n")
        if state_dir.exists():
            old = state_dir.with_name(state_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(state_dir, old)
            os.rename(staging, state_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, state_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_state(state_dir: Path, method: Method, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore trainables, optimizer and RNG states in place; return the JSON metadata."""
    state_dir = Path(state_dir)
    meta = json.loads((state_dir / "state.json").read_text())
    if meta.get("format_version") != STATE_FORMAT:
        raise TrainingError(f"{state_dir}: unsupported state format {meta.get('format_version')}")
    names = [n for n, _ in method.named_trainables()]
    if meta["trainable_names"] != names:
        raise TrainingError(f"{state_dir}: saved trainables do not match this model")
    saved = load_file(state_dir / "trainables.safetensors")
    with torch.no_grad():
        for n, p in method.named_trainables():
            p.copy_(saved[n].to(p.device, p.dtype))
    tensors = load_file(state_dir / "optimizer.safetensors")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["optimizer"]["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    rng = load_file(state_dir / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[f"torch_cuda_{i}"] for i in range(torch.cuda.device_count()) if f"torch_cuda_{i}" in rng]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    py = meta["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = meta["numpy_random"]
    np.random.set_state((npr[0], np.asarray(npr[1], dtype=np.uint32), npr[2], npr[3], npr[4]))
    return meta
