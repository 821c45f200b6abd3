"""The ComMer compressor: a document -> k soft-prompt vectors (k x d).

``k`` trainable compression embeddings are appended after each document's token
embeddings; the backbone with a trainable LoRA reads the sequence; the final
layer's hidden states at those ``k`` positions are the compression. The LM head
is never computed. Batches are right-padded and each document's compression
tokens sit right after its own last token, so under the causal mask a document
never sees padding or its batch neighbours: its compression does not depend on
the batch it was computed in (up to floating-point rounding).
"""

from __future__ import annotations

import math

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from commer_core.backbone import Backbone
from commer_core.config import CompressorConfig

# A token spans well under this many characters; cutting longer texts before
# tokenizing bounds the cost of a pathological (say 5 MB) document.
_MAX_CHARS_PER_TOKEN = 64
# Running centre of compression rows (prompt_norm "center"): about the last 100 training batches.
CENTER_MOMENTUM = 0.99
# Starting temperature of prompt_norm "vocab". At 1 an untrained SmolLM2 compression slot's
# next-token distribution has ~6.6 nats of entropy and the mixture (norm ~1.0) is a blur near the
# mean embedding (first training loss ~11 nats); at 0.25 its top token carries ~77% of the weight and
# the row (norm ~2.6) is close to a real token (embeddings have norm ~3.2).
VOCAB_TEMPERATURE = 0.25


@dataclass(frozen=True)
class TokenizedDoc:
    """A document's token ids after truncation, and whether it was cut."""

    ids: list[int]
    truncated: bool


class Compressor(nn.Module):
    """Compression embeddings + LoRA around a shared, frozen backbone."""

    def __init__(self, backbone: Backbone, config: CompressorConfig, *, seed: int = 0) -> None:
        super().__init__()
        d = backbone.hidden_size
        if config.hidden_size not in (None, d):
            raise ValueError(f"config hidden_size {config.hidden_size} != backbone hidden size {d}")
        self.config = CompressorConfig(**{**config.__dict__, "hidden_size": d})
        if hasattr(backbone.model, "peft_config"):
            raise ValueError("this backbone already carries a compressor's LoRA; load one backbone per compressor")
        self.backbone = backbone
        self.tokenizer = backbone.tokenizer
        lora = config.lora
        self.peft_model: PeftModel = get_peft_model(
            backbone.model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                bias="none",
            ),
        )
        self.compression_embeddings = nn.Parameter(draw_soft_tokens(backbone.model, config.num_embeddings, seed))
        # The output scale (config.prompt_norm "rms" or "center"): final-layer states have a norm of
        # about 48 on SmolLM2 where the token embeddings the frozen generator reads have about 3.2.
        # Each compression row is RMS-normalised and multiplied by this learned per-dimension gain,
        # initialised to the token embeddings' own per-dimension RMS, so the prompt starts at the
        # scale the generator expects. Part of the checkpoint: the job and serving see the same rows.
        norm = self.config.prompt_norm
        self.prompt_gain = nn.Parameter(token_embedding_rms(backbone.model)) if norm in ("rms", "center") else None
        # "center" first subtracts a running mean of the rows (per slot; ~97% of the raw rows' energy is
        # a direction every user shares, which normalising alone keeps) and adds a learned bias after
        # the gain: what every user shares is then the bias's to carry, the rest is the user's own.
        k = config.num_embeddings
        self.prompt_bias = nn.Parameter(torch.zeros(k, d)) if norm == "center" else None
        self.prompt_center: torch.Tensor | None
        self.register_buffer("prompt_center", torch.zeros(k, d) if norm == "center" else None)
        # "vocab": each row becomes the mixture of token embeddings the model predicts there,
        # softmax(h E_out^T / t) E_in, at a learned temperature t: the prompt is made of (blends of) real
        # tokens, which a frozen causal LM knows how to read and copy, and a mean of such rows is a
        # mixture too. It starts at VOCAB_TEMPERATURE.
        self.prompt_log_temperature = (nn.Parameter(torch.tensor(math.log(VOCAB_TEMPERATURE)))
                                       if norm == "vocab" else None)
        self._embedding_scale = embedding_output_scale(backbone.model) if norm == "vocab" else 1.0
        self.to(backbone.device)
        self.eval()

    # -- parameters -------------------------------------------------------------------
    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The two groups the method trains (they take different learning rates); the gain goes with the embeddings."""
        lora = [p for n, p in self.peft_model.named_parameters() if "lora_" in n]
        scale = [p for p in (self.prompt_gain, self.prompt_bias, self.prompt_log_temperature) if p is not None]
        return {"embeddings": [self.compression_embeddings, *scale], "lora": lora}

    def soft_tensors(self) -> dict[str, torch.Tensor]:
        """The compressor's own tensors besides the LoRA, by the names the checkpoint (and resume state) store."""
        named = {"compression_embeddings": self.compression_embeddings, "prompt_gain": self.prompt_gain,
                 "prompt_bias": self.prompt_bias, "prompt_center": self.prompt_center,
                 "prompt_log_temperature": self.prompt_log_temperature}
        return {name: t for name, t in named.items() if t is not None}

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.peft_model, save_embedding_layers=False)

    # -- tokens -----------------------------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return self.config.num_embeddings

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size or 0)

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def merge_lora(self) -> None:
        """Fold the LoRA into the backbone's weights: about 15% faster compression on CPU.

        Only for a process that compresses and nothing else (the compress job's workers,
        the benchmark): afterwards the LoRA can neither be trained nor switched off for
        generation on this backbone. Compressions change by float rounding only (max abs
        difference about 1e-4 on the default model, whose values reach about 50).
        """
        self.peft_model.merge_adapter()
        for param in self.peft_model.parameters():
            param.requires_grad_(False)

    def compile_layers(self) -> None:
        """Compile every decoder layer with ``torch.compile`` (inductor): fused norms, rotary and activations.

        Eager PyTorch runs each elementwise op as its own pass over memory; on a 2-core
        CPU those passes cost about a fifth of a forward (a profile), though fusing them
        gave no reliable speed-up there (docs/PERFORMANCE.md). Layers are compiled one by one
        (not the whole decoder) because they share one graph, their weights being graph
        inputs: about 15 s on 2 CPU cores instead of about 3 minutes. Shapes are dynamic,
        so batch shapes do not recompile. Needs a C++ compiler on CPU hosts. For
        compress-only processes; outputs change by float rounding only.
        """
        for layer in self.peft_model.get_base_model().get_decoder().layers:
            layer.compile(dynamic=True)

    def tokenize(self, texts: Sequence[str]) -> list[TokenizedDoc]:
        """Token ids without special tokens, truncated at ``max_doc_tokens``."""
        return tokenize_documents(self.tokenizer, texts, self.config.max_doc_tokens)

    # -- compression ------------------------------------------------------------------
    def forward(self, input_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Compress a batch of token-id lists into a (n_docs, k, d) tensor."""
        rows = self.hidden_rows(input_ids)
        return self.scale_prompt(rows) if len(rows) else rows  # an empty batch must not move the centre

    def hidden_rows(self, input_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """The final layer's states at the k compression slots, (n_docs, k, d), before ``scale_prompt``."""
        if len(input_ids) == 0:
            return torch.empty(0, self.num_embeddings, self.hidden_size, device=self.device)
        device, k = self.device, self.num_embeddings
        lengths = torch.tensor([len(x) for x in input_ids])
        n, width = len(input_ids), int(lengths.max()) + k
        tokens = torch.full((n, width), self.tokenizer.pad_token_id, dtype=torch.long)
        for row, ids in enumerate(input_ids):
            tokens[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        # padded on the host, then one copy: a copy per row would cost a transfer and a launch each
        tokens, lengths = _to_device(tokens, device), _to_device(lengths, device)
        embeds = self.peft_model.get_input_embeddings()(tokens)
        rows = torch.arange(n, device=device)[:, None]
        slots = lengths[:, None] + torch.arange(k, device=device)[None, :]
        embeds = embeds.index_put((rows, slots), self.compression_embeddings.to(embeds.dtype).expand(n, k, -1))
        # No padding mask: pads sit to the right of every real token and attention is
        # causal, so no real position ever sees one. Without a mask SDPA takes its causal
        # kernel (skips the masked half) and no (n, 1, width, width) mask is built.
        decoder = self.peft_model.get_base_model().get_decoder()
        hidden = decoder(inputs_embeds=embeds, use_cache=False).last_hidden_state
        return hidden[rows, slots]

    def scale_prompt(self, rows: torch.Tensor) -> torch.Tensor:
        """Compression rows (n, k, d) at the generator's input scale (``prompt_norm``); unchanged for ``none``.

        In training mode ``center`` first folds the batch's mean row per slot into the running
        centre (momentum :data:`CENTER_MOMENTUM`); in eval mode (the job, serving) it is fixed. ``vocab`` maps rows to token-embedding mixtures.
        """
        if self.prompt_log_temperature is not None:
            return self._vocab_mixture(rows)
        if self.prompt_gain is None:
            return rows
        x = rows.float()
        if self.prompt_center is not None:
            if self.training:
                self._update_center(x.detach())
            x = x - self.prompt_center.float()
        x = x * x.pow(2).mean(-1, keepdim=True).add(1e-6).rsqrt() * self.prompt_gain.float()
        if self.prompt_bias is not None:
            x = x + self.prompt_bias.float()
        return x.to(rows.dtype)

    def _vocab_mixture(self, rows: torch.Tensor) -> torch.Tensor:
        """softmax(rows E_out^T / t) E_in, at the scale the embedding layer feeds the decoder."""
        base = self.peft_model.get_base_model()
        logits = rows.float() @ base.get_output_embeddings().weight.float().T
        weights = torch.softmax(logits * torch.exp(-self.prompt_log_temperature.float()), dim=-1)
        mixture = weights @ base.get_input_embeddings().weight.float()
        return (mixture * self._embedding_scale).to(rows.dtype)

    @torch.no_grad()
    def _update_center(self, rows: torch.Tensor) -> None:
        batch_mean = rows.reshape(-1, *rows.shape[-2:]).mean(0)
        if not bool(self.prompt_center.any()):  # first batch: start from its mean rather than from zero
            self.prompt_center.copy_(batch_mean)
        else:
            self.prompt_center.mul_(CENTER_MOMENTUM).add_(batch_mean, alpha=1 - CENTER_MOMENTUM)

    @torch.inference_mode()
    def fit_center(self, texts: Sequence[str], *, batch_tokens: int = 4096, max_batch_size: int = 64) -> int:
        """Set the ``center`` norm's centre to the exact mean hidden row over ``texts``; returns the count.

        Training keeps a running mean of the rows its own weights produce; weights made any
        other way (an average of checkpoints) need the mean their own rows have.
        """
        if self.prompt_center is None:
            raise ValueError(f"prompt_norm {self.config.prompt_norm!r} has no centre to fit")
        mean, count = self._mean_row(texts, self.hidden_rows, batch_tokens, max_batch_size)
        self.prompt_center.copy_(mean.to(self.prompt_center.dtype))
        return count

    @torch.inference_mode()
    def recenter_user_part(self, texts: Sequence[str], *, batch_tokens: int = 4096, max_batch_size: int = 64) -> int:
        """Shift the ``center`` norm's bias so the user part averages to zero over ``texts``; returns the count.

        The user part ``gain * rms_normalise(h - centre)`` has a mean over users that is not zero,
        so every user's prompt carries a shared offset on top of the bias. After the shift the mean
        prompt row over these documents is the bias the checkpoint had (for a shared part frozen at
        a prompt-tuning prompt: that prompt), and a user's prompt differs from it only by their own part.
        """
        if self.prompt_bias is None:
            raise ValueError(f"prompt_norm {self.config.prompt_norm!r} has no shared bias to shift")
        was_training = self.training
        self.eval()  # the centre stays fixed while the prompts are read
        try:
            mean, count = self._mean_row(texts, lambda ids: self.scale_prompt(self.hidden_rows(ids)),
                                         batch_tokens, max_batch_size)
        finally:
            self.train(was_training)
        self.prompt_bias.sub_((mean - self.prompt_bias.double()).to(self.prompt_bias.dtype))
        return count

    def _mean_row(
        self, texts: Sequence[str], rows: Callable[[list[list[int]]], torch.Tensor], batch_tokens: int, max_batch_size: int
    ) -> tuple[torch.Tensor, int]:
        """The exact (k, d) mean of ``rows`` over the documents ``texts``, in float64, and their count."""
        ids = [d.ids for d in self.tokenize(texts)]
        total = torch.zeros(self.num_embeddings, self.hidden_size, dtype=torch.float64, device=self.device)
        for batch in plan_batches([len(x) for x in ids], self.num_embeddings, batch_tokens, max_batch_size):
            total += rows([ids[i] for i in batch]).double().sum(0)
        return total / max(len(ids), 1), len(ids)

    @torch.inference_mode()
    def compress_texts(self, texts: Sequence[str], *, batch_tokens: int = 4096, max_batch_size: int = 64) -> torch.Tensor:
        """Compress texts in length-sorted token-budget batches; rows come back in input order."""
        docs = self.tokenize(texts)
        return self.compress_tokenized([d.ids for d in docs], batch_tokens=batch_tokens, max_batch_size=max_batch_size)

    @torch.inference_mode()
    def compress_tokenized(
        self, input_ids: Sequence[Sequence[int]], *, batch_tokens: int = 4096, max_batch_size: int = 64
    ) -> torch.Tensor:
        """Compress token ids in token-budget batches; a (n_docs, k, d) float32 tensor on the CPU.

        Results stay on the compressor's device until every batch is queued, so a GPU never
        waits for the host between batches; one copy brings them back.
        """
        out = torch.empty(len(input_ids), self.num_embeddings, self.hidden_size, dtype=torch.float32,
                          device=self.device)
        for batch in plan_batches([len(x) for x in input_ids], self.num_embeddings, batch_tokens, max_batch_size):
            out[_to_device(torch.tensor(batch), self.device)] = self([input_ids[i] for i in batch]).float()
        return out.cpu()


def token_embedding_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of what the embedding layer feeds the decoder, on the CPU.

    That is the weights times any scale the layer applies: Gemma's embedding layer multiplies
    by sqrt(d), and vectors passed as ``inputs_embeds`` (compression embeddings, prompt-tuning
    tokens, merged prompts) skip the layer, so they must be drawn at the scaled size.
    """
    table = model.get_input_embeddings().weight.detach().float()
    scale = embedding_output_scale(model)
    return table.mean(0).cpu() * scale, table.std(0).cpu() * scale


def embedding_output_scale(model: nn.Module) -> float:
    """What the embedding layer multiplies its weights by (sqrt(d) on Gemma, 1 on most models)."""
    layer = model.get_input_embeddings()
    table = layer.weight.detach()
    probe = torch.arange(min(8, table.shape[0]), device=table.device)
    with torch.no_grad():
        return float(layer(probe).float().norm() / table[probe].float().norm().clamp_min(1e-12))


def token_embedding_rms(model: nn.Module) -> torch.Tensor:
    """Per-dimension root mean square of the token embeddings the decoder reads (see :func:`token_embedding_stats`)."""
    mean, std = token_embedding_stats(model)
    return (mean.pow(2) + std.pow(2)).sqrt()


def draw_soft_tokens(model: nn.Module, k: int, seed: int) -> torch.Tensor:
    """k vectors drawn from the token embeddings' per-dimension statistics: in-distribution inputs for the backbone."""
    mean, std = token_embedding_stats(model)
    noise = torch.randn(k, mean.shape[0], generator=torch.Generator().manual_seed(seed))
    return mean + std * noise


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; through pinned memory to CUDA so the copy does not block the host."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def tokenize_documents(tokenizer, texts: Sequence[str], max_doc_tokens: int) -> list[TokenizedDoc]:
    """What :meth:`Compressor.tokenize` does, with only a tokenizer (no model) at hand.

    Lets a pipeline tokenize (and count truncations) in a step of its own, before
    batching by token budget, with exactly the compressor's rules.
    """
    char_cap = max_doc_tokens * _MAX_CHARS_PER_TOKEN
    cut = [t[:char_cap] for t in texts]
    encoded = tokenizer(cut, add_special_tokens=False)["input_ids"]
    return [
        TokenizedDoc(ids[:max_doc_tokens], len(ids) > max_doc_tokens or len(text) > char_cap)
        for ids, text in zip(encoded, texts)
    ]


def plan_batches(
    lengths: Sequence[int], k: int, batch_tokens: int, max_batch_size: int = 64, max_padding: float = 0.1
) -> Iterator[list[int]]:
    """Group indices by sorted length into padded batches (n x (max_len + k)) within the token budget.

    Sorting keeps padding small, the budget bounds activation memory whatever the
    mix, and a batch closes early rather than let padding exceed ``max_padding`` of
    its computed tokens (sparse length mixes would otherwise waste compute).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    real = 0
    for i in order:
        width = lengths[i] + k  # sorted ascending: the newest member is the widest
        size = len(batch) + 1
        if batch and (
            size * width > batch_tokens
            or size > max_batch_size
            or 1 - (real + width) / (size * width) > max_padding
        ):
            yield batch
            batch, real = [], 0
        batch.append(i)
        real += width
    if batch:
        yield batch
