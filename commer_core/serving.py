"""What a downstream service keeps resident: a committed store, its checkpoint, one backbone.

``PersonalizedLM.open(store, checkpoint)`` refuses a store whose manifest names
another checkpoint (fingerprint, base model, k or d). Requests are answered in
batches where every row may belong to a different user; an unknown user gets a
per-row error (or, with ``fallback="none"``, an unpersonalized answer), never a
failed batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from commer_core.checkpoint import load_checkpoint
from commer_core.compressor import Compressor
from commer_core.generator import Generator, Scored
from commer_core.store import EmbeddingStore, open_store

Fallback = Literal["error", "none"]


@dataclass(frozen=True)
class Request:
    user_id: str
    input: str


@dataclass(frozen=True)
class Response:
    """One answered request; ``error`` is set (and ``output`` None) when it could not be served."""

    user_id: str
    input: str
    output: str | None
    new_tokens: int
    latency_s: float
    personalized: bool
    error: str | None = None


class PersonalizedLM:
    """A frozen LLM personalized per request by the user's stored soft prompt."""

    def __init__(self, store: EmbeddingStore, compressor: Compressor, checkpoint: str | os.PathLike[str]) -> None:
        store.check_compatible(checkpoint)
        self.store = store
        self.compressor = compressor
        self.checkpoint = Path(checkpoint)
        self.generator = Generator(compressor)

    @classmethod
    def open(
        cls,
        store_uri: str | os.PathLike[str],
        checkpoint: str | os.PathLike[str],
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> "PersonalizedLM":
        """Check the pair first (cheap), then load the backbone once."""
        store = open_store(store_uri)
        store.check_compatible(checkpoint)
        return cls(store, load_checkpoint(checkpoint, device=device, dtype=dtype), checkpoint)

    def refresh(self) -> bool:
        """Reopen the store if a newer run committed a new version there; True if it changed."""
        fresh = open_store(self.store.uri)
        if fresh.version == self.store.version and fresh.manifest == self.store.manifest:
            return False
        fresh.check_compatible(self.checkpoint)
        self.store = fresh
        return True

    def prompts(self, user_ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """The users' merged (k x d) soft prompts; unknown users are absent from the result."""
        rows = self.store.get(list(dict.fromkeys(user_ids)))
        return {u: torch.from_numpy(emb) for u, (emb, _n_docs) in rows.items()}

    def _prefixes(self, user_ids: Sequence[str], fallback: Fallback) -> tuple[list[torch.Tensor | None], list[str | None]]:
        found = self.prompts(user_ids)
        prefixes: list[torch.Tensor | None] = []
        errors: list[str | None] = []
        for user in user_ids:
            prefix = found.get(user)
            prefixes.append(prefix)
            missing = prefix is None and fallback == "error"
            errors.append(f"unknown user {user!r}: not in store {self.store.uri}" if missing else None)
        return prefixes, errors

    def generate(
        self, requests: Sequence[Request], *, batch_size: int = 8, fallback: Fallback = "error", **options: Any
    ) -> list[Response]:
        """Answer requests in batches (each row its own user); options go to ``Generator.generate_ids``."""
        eos = self.compressor.tokenizer.eos_token_id
        stops = options.get("stop_strings", ())
        out: list[Response] = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            began = time.perf_counter()
            prefixes, errors = self._prefixes([r.user_id for r in chunk], fallback)
            live = [i for i, e in enumerate(errors) if e is None]
            ids = self.generator.generate_ids([prefixes[i] for i in live], [chunk[i].input for i in live], **options)
            latency = time.perf_counter() - began
            answers = dict(zip(live, ids))
            for i, request in enumerate(chunk):
                if errors[i] is not None:
                    out.append(Response(request.user_id, request.input, None, 0, latency, False, errors[i]))
                    continue
                new_tokens = sum(t != eos for t in answers[i])
                out.append(Response(request.user_id, request.input, self.generator.decode(answers[i], stops),
                                    new_tokens, latency, prefixes[i] is not None))
        return out

    def score(
        self, user_ids: Sequence[str], inputs: Sequence[str], targets: Sequence[str], *, fallback: Fallback = "error"
    ) -> list[Scored | None]:
        """Per-target NLL / perplexity under each user's prompt; None for an unknown user (fallback="error")."""
        prefixes, errors = self._prefixes(user_ids, fallback)
        live = [i for i, e in enumerate(errors) if e is None]
        scored = self.generator.score([prefixes[i] for i in live], [inputs[i] for i in live],
                                      [targets[i] for i in live]) if live else []
        result: list[Scored | None] = [None] * len(user_ids)
        for i, s in zip(live, scored):
            result[i] = s
        return result
