"""The frozen backbone (LoRA off) reading ``[soft prompt ; input]``: score and generate.

It shares the compressor's backbone: the LoRA layers are switched off around each
call, so one copy of the weights serves both roles. A prefix may be a merged
ComMer prompt (k x d), a prompt-tuning prefix, or nothing at all; prefixes of a
batch may differ in length.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from commer_core.compressor import Compressor
from commer_core.errors import CommerError
from commer_core.task_format import TaskFormat

Prefix = torch.Tensor | None  # (p, d) soft vectors placed before the input tokens
DEFAULT_MAX_NEW_TOKENS = 32


class GenerationError(CommerError, ValueError):
    """A row the generator refuses: an empty input, or one that does not fit the model's positions."""


@dataclass(frozen=True)
class Scored:
    """Summed negative log-likelihood of a target and its token count."""

    nll: float
    n_tokens: int

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll, self.n_tokens)


def perplexity(nll: float, tokens: int) -> float:
    """exp(NLL / tokens), with no tokens counted as one (an empty set scores exp(0) = 1)."""
    return math.exp(nll / max(tokens, 1))


class Generator:
    """Scores targets and generates text from the frozen base model."""

    def __init__(self, compressor: Compressor) -> None:
        self.compressor = compressor
        self.tokenizer = compressor.tokenizer
        self.model = compressor.peft_model
        self.format = TaskFormat.for_tokenizer(self.tokenizer, compressor.config.prompt_position)

    @contextlib.contextmanager
    def frozen_base(self) -> Iterator[nn.Module]:
        """The base causal LM with the LoRA switched off (the method's generator)."""
        with self.model.disable_adapter():
            yield self.model.get_base_model()

    @property
    def device(self) -> torch.device:
        return self.compressor.device

    @property
    def max_positions(self) -> int | None:
        """The backbone's position limit (``max_position_embeddings``), None if its config names none."""
        limit = getattr(self.compressor.backbone.model.config, "max_position_embeddings", None)
        return int(limit) if limit else None

    def input_budget(self, prefix: Prefix, max_new_tokens: int) -> int | None:
        """Most formatted input tokens a row may hold: max positions - head - prefix - max_new_tokens."""
        if self.max_positions is None:
            return None
        prefix_len = 0 if prefix is None else int(prefix.shape[0])
        return self.max_positions - len(self.format.head_ids) - prefix_len - max_new_tokens

    def _check_rows(self, prefixes: Sequence[Prefix], inputs: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        """Formatted ids of the inputs; refuses an empty input or a row past the position limit.

        :class:`~commer_core.serving.PersonalizedLM` rejects or truncates such rows first (per row);
        this guard keeps a direct caller from a shape error or an unbounded forward.
        """
        for i, text in enumerate(inputs):
            if not isinstance(text, str) or not text.strip():
                raise GenerationError(f"row {i}: input is empty or not a string ({text!r:.40})")
        ids = self.format.input_ids(inputs)
        for i, (prefix, row) in enumerate(zip(prefixes, ids)):
            budget = self.input_budget(prefix, max_new_tokens)
            if budget is not None and len(row) > budget:
                raise GenerationError(
                    f"row {i}: input is {len(row)} tokens, over its budget of {budget} (max positions "
                    f"{self.max_positions} - head - prefix - max_new_tokens {max_new_tokens})")
        return ids

    def _embed_rows(
        self, prefixes: Sequence[Prefix], pieces: Sequence[list[int]], *, left_pad: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack [head ; prefix ; token embeddings] rows, padded, with their attention mask."""
        embed = self.model.get_input_embeddings()
        dtype = embed.weight.dtype
        head = self.format.head_ids
        head_emb = embed(torch.as_tensor(head, dtype=torch.long, device=self.device)) if head else None
        rows = []
        for prefix, ids in zip(prefixes, pieces):
            tok = embed(torch.as_tensor(ids, dtype=torch.long, device=self.device))
            parts = [p for p in (head_emb, None if prefix is None else prefix.to(self.device, dtype), tok)
                     if p is not None]
            rows.append(torch.cat(parts, dim=0))
        width = max(r.shape[0] for r in rows)
        d = rows[0].shape[1]
        embeds = torch.zeros(len(rows), width, d, dtype=dtype, device=self.device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            span = slice(width - r.shape[0], width) if left_pad else slice(0, r.shape[0])
            embeds[i, span] = r
            mask[i, span] = 1
        return embeds, mask

    def target_nll(
        self, prefixes: Sequence[Prefix], inputs: Sequence[str], targets: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example summed NLL of the target and its end token, and token counts (differentiable).

        Inputs and targets are laid out by :class:`TaskFormat` (the one layout training,
        evaluation and serving share). Only target positions go through the LM head: the
        vocabulary projection is the costliest part of a small model's forward.
        """
        in_ids = self.format.input_ids(inputs)
        tgt_ids = self.format.target_ids(targets)
        embeds, mask = self._embed_rows(prefixes, [a + b for a, b in zip(in_ids, tgt_ids)], left_pad=False)
        head = len(self.format.head_ids)
        rows, cols, labels, owner = [], [], [], []
        for i, (prefix, a, b) in enumerate(zip(prefixes, in_ids, tgt_ids)):
            start = head + (0 if prefix is None else prefix.shape[0]) + len(a)
            for j, token in enumerate(b):
                rows.append(i)
                cols.append(start + j - 1)  # the position that predicts target token j
                labels.append(token)
                owner.append(i)
        idx_rows = torch.tensor(rows, device=self.device)
        idx_cols = torch.tensor(cols, device=self.device)
        with self.frozen_base() as lm:
            hidden = lm.get_decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
            logits = lm.get_output_embeddings()(hidden[idx_rows, idx_cols]).float()
        token_nll = nn.functional.cross_entropy(logits, torch.tensor(labels, device=self.device), reduction="none")
        owners = torch.tensor(owner, device=self.device)
        nll = torch.zeros(len(inputs), device=self.device).index_add(0, owners, token_nll)
        counts = torch.bincount(owners, minlength=len(inputs))
        return nll, counts

    @torch.inference_mode()
    def score(self, prefixes: Sequence[Prefix], inputs: Sequence[str], targets: Sequence[str]) -> list[Scored]:
        nll, counts = self.target_nll(prefixes, inputs, targets)
        return [Scored(float(a), int(b)) for a, b in zip(nll.cpu(), counts.cpu())]

    def generate(
        self, prefixes: Sequence[Prefix], inputs: Sequence[str], *, stop_strings: Sequence[str] = (), **options: Any
    ) -> list[str]:
        """Decoded text of :meth:`generate_ids`, cut at the first stop string."""
        rows = self.generate_ids(prefixes, inputs, stop_strings=stop_strings, **options)
        return [self.decode(ids, stop_strings) for ids in rows]

    def decode(self, ids: Sequence[int], stop_strings: Sequence[str] = ()) -> str:
        """Text of generated ids without eos, cut at the first stop string (as LLM callers expect)."""
        eos = self.tokenizer.eos_token_id
        text = self.tokenizer.decode([t for t in ids if t != eos])
        cut = min((text.find(s) for s in stop_strings if s in text), default=-1)
        return text if cut < 0 else text[:cut]

    @torch.inference_mode()
    def generate_ids(
        self,
        prefixes: Sequence[Prefix],
        inputs: Sequence[str],
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[list[int]]:
        """New token ids per row (eos included when reached), greedy or sampled, with a KV cache.

        Each row may carry a different prefix. Rows are left-padded and positions count real tokens only, so a row
        decodes the same alone or in a batch. An empty input, or a row whose head + prefix + input +
        ``max_new_tokens`` exceeds the model's positions, raises :class:`GenerationError` before any forward.
        """
        if not inputs:
            return []
        ids = self._check_rows(prefixes, inputs, max_new_tokens)
        embeds, mask = self._embed_rows(prefixes, ids, left_pad=True)
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        eos = self.tokenizer.eos_token_id
        n = len(inputs)
        out: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_inputs = {"inputs_embeds": embeds}
        past = None
        with self.frozen_base() as lm:
            for _ in range(max_new_tokens):
                result = lm(**step_inputs, attention_mask=mask, position_ids=positions, cache=past,
                            use_cache=True, logits_to_keep=1)
                past = result.cache
                logits = result.logits[:, -1].float()
                token = _pick(logits, do_sample, temperature, top_p, gen)
                token = torch.where(done, torch.full_like(token, eos), token)
                for i in (~done).nonzero().flatten().tolist():
                    out[i].append(int(token[i]))
                done |= token == eos
                if stop_strings:
                    done |= torch.tensor([_hit_stop(self.tokenizer.decode(o), stop_strings) for o in out],
                                         device=self.device)
                if bool(done.all()):
                    break
                step_inputs = {"input_ids": token[:, None]}
                mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=self.device)], dim=1)
                positions = positions[:, -1:] + 1
        return out


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
          gen: torch.Generator | None) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def _hit_stop(text: str, stops: Sequence[str]) -> bool:
    return any(s in text for s in stops)
