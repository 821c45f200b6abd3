"""How a user's documents reach the frozen generator: the methods ComMer is compared on.

- ``commer``: each selected document is compressed on its own (k x d), the
  compressions are merged (mean pool, or the concat ablation) and the result is
  the soft prompt. Trained end to end through the merge: compression embeddings
  (lr 1e-2) and LoRA (lr 1e-4) only.
- ``prompt_tuning``: k trainable soft tokens (lr 3e-2) followed by the raw selected
  documents' token embeddings, concatenated and truncated to a token budget.
- ``raw_docs``: the raw documents in the prompt, truncated to a budget; nothing trained.
- ``none``: no personalization; the frozen model reads the input alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from commer_core.backbone import Backbone
from commer_core.compressor import Compressor, draw_soft_tokens
from commer_core.config import DEFAULT_PROMPT_POSITION, CompressorConfig, LoraSettings
from commer_core.generator import Generator, Prefix
from commer_core.merge import MERGES
from commer_core.training.config import TrainConfig
from commer_core.training.examples import PreparedExample


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
        return [  # a frozen tensor (requires_grad off, e.g. --freeze-shared-prompt's bias) is not optimised
            {"params": [p for p in groups["embeddings"] if p.requires_grad], "lr": config.lr_embeddings,
             "name": "embeddings"},
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
    config = CompressorConfig(base_model=backbone.name, num_embeddings=1, lora=LoraSettings(r=1, alpha=1, dropout=0.0),
                              prompt_position=DEFAULT_PROMPT_POSITION)
    return Generator(Compressor(backbone, config))
