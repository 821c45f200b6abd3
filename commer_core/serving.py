"""What a downstream service keeps resident: a committed store, its checkpoint, one backbone.

``PersonalizedLM.open(store, checkpoint)`` refuses a store whose manifest names
another checkpoint (fingerprint, base model, k or d). Requests are answered in
batches where every row may belong to a different user; an unknown user gets a
per-row error (or, with ``fallback="none"``, an unpersonalized answer), never a
failed batch. So does an empty or null input; an input longer than the model's
positions allow (max positions - prefix - ``max_new_tokens``) is cut to its first
tokens and answered with ``Response.truncated`` set. The generator only ever sees
inputs that fit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from commer_core.checkpoint import load_checkpoint
from commer_core.compressor import Compressor
from commer_core.generator import DEFAULT_MAX_NEW_TOKENS, Generator, Scored
from commer_core.store import EmbeddingStore, open_store

Fallback = Literal["error", "none"]
#: Characters kept before tokenizing an input, per token of its budget: a 10 MB input is
#: cut to a bounded string first, so even tokenizing it costs little (no token is longer).
_MAX_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class Request:
    """One row to answer; a None ``input`` or ``user_id`` (a null in a requests file) gets a per-row error."""

    user_id: str
    input: str | None


@dataclass(frozen=True)
class Response:
    """One answered request; ``error`` is set (and ``output`` None) when it could not be served.

    ``truncated`` is True when the input was longer than the model's positions allow and only
    its first tokens were read (``input`` is still the request's full input).
    """

    user_id: str
    input: str | None
    output: str | None
    new_tokens: int
    latency_s: float
    personalized: bool
    error: str | None = None
    truncated: bool = False


class PersonalizedLM:
    """A frozen LLM personalized per request by the user's stored soft prompt."""

    def __init__(self, store: EmbeddingStore, compressor: Compressor, checkpoint: str | os.PathLike[str]) -> None:
        store.check_compatible(checkpoint)
        self.store = store
        self.compressor = compressor
        self.checkpoint = os.fspath(checkpoint)  # a path or a URI (s3://...): Path() would mangle "s3://"
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
        """Reopen the store if a newer run committed a new version there; True if it changed.

        Reads ``LATEST`` only while it names the open version; on a new one, its manifest and
        lookup index (no listing, no embedding file).
        """
        if self.store.version is not None and self.store.latest_version() == self.store.version:
            return False
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
        found = self.prompts([u for u in user_ids if isinstance(u, str)])
        prefixes: list[torch.Tensor | None] = []
        errors: list[str | None] = []
        for user in user_ids:
            if not isinstance(user, str):
                prefixes.append(None)
                errors.append("user_id is null" if user is None else f"user_id is not a string: {user!r:.40}")
                continue
            prefix = found.get(user)
            prefixes.append(prefix)
            missing = prefix is None and fallback == "error"
            errors.append(f"unknown user {user!r}: not in store {self.store.uri}" if missing else None)
        return prefixes, errors

    def fit_input(self, text: str | None, prefix: torch.Tensor | None,
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple[str | None, bool, str | None]:
        """``(input to generate from, truncated, error)`` for one row: what the generator may be given.

        A null, non-string or blank input is an error. An input whose formatted tokens exceed the
        row's budget (:meth:`Generator.input_budget`: max positions - head - prefix - max_new_tokens)
        keeps its first tokens, the part that holds a task's instruction (as training's
        ``max_input_tokens`` cut does), and is flagged ``truncated``.
        """
        if not isinstance(text, str):
            return None, False, "input is null" if text is None else f"input is not a string: {text!r:.40}"
        if not text.strip():
            return None, False, "input is empty"
        budget = self.generator.input_budget(prefix, max_new_tokens)
        if budget is None:
            return text, False, None
        fmt = self.generator.format
        room = budget - len(fmt.input_ids(["."])[0]) + 1  # tokens the input itself may take in its template
        if room < 1:
            return None, False, (f"no room for an input: max_new_tokens {max_new_tokens} and a prefix of "
                                 f"{0 if prefix is None else prefix.shape[0]} vectors leave {budget} of the "
                                 f"model's {self.generator.max_positions} positions, under the input "
                                 "template's own size")
        cut = text[: room * _MAX_CHARS_PER_TOKEN]
        for _ in range(8):  # re-check in the template: merges at the cut can shift a token or two
            excess = len(fmt.input_ids([cut])[0]) - budget
            if excess <= 0:
                if not cut.strip():
                    return None, False, "input is empty once cut to the model's positions"
                return cut, cut != text, None
            keep = _count_tokens(self.generator.tokenizer, cut) - excess
            if keep < 1:
                break
            cut = _first_tokens(self.generator.tokenizer, cut, keep)
        return None, False, f"input could not be cut to its budget of {budget} tokens"

    def generate(
        self, requests: Sequence[Request], *, batch_size: int = 8, fallback: Fallback = "error", **options: Any
    ) -> list[Response]:
        """Answer requests in batches (each row its own user); options go to ``Generator.generate_ids``.

        A bad row (unknown user, null/empty input, no room for an input) gets its own
        ``Response.error``; an over-long input is cut (:meth:`fit_input`), flagged ``truncated``, and
        generated apart from the batch's other rows. ``latency_s`` is the batch's user look-up and
        input checks plus the generation call its row was in.
        """
        eos = self.compressor.tokenizer.eos_token_id
        stops = options.get("stop_strings", ())
        max_new_tokens = options.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        out: list[Response] = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            began = time.perf_counter()
            prefixes, errors = self._prefixes([r.user_id for r in chunk], fallback)
            inputs: list[str | None] = [None] * len(chunk)
            truncated = [False] * len(chunk)
            for i, request in enumerate(chunk):
                if errors[i] is None:
                    inputs[i], truncated[i], errors[i] = self.fit_input(request.input, prefixes[i], max_new_tokens)
            checked = time.perf_counter() - began
            latency = [checked] * len(chunk)
            answers: dict[int, list[int]] = {}
            # Cut rows run as a group of their own: the others are not padded to a full-context width.
            for cut in (False, True):
                group = [i for i, e in enumerate(errors) if e is None and truncated[i] == cut]
                if not group:
                    continue
                began = time.perf_counter()
                ids = self.generator.generate_ids([prefixes[i] for i in group], [inputs[i] for i in group], **options)
                answers.update(zip(group, ids))
                for i in group:
                    latency[i] += time.perf_counter() - began
            for i, request in enumerate(chunk):
                if errors[i] is not None:
                    out.append(Response(request.user_id, request.input, None, 0, latency[i], False, errors[i]))
                    continue
                new_tokens = sum(t != eos for t in answers[i])
                out.append(Response(request.user_id, request.input, self.generator.decode(answers[i], stops),
                                    new_tokens, latency[i], prefixes[i] is not None, truncated=truncated[i]))
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


def _count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _first_tokens(tokenizer: Any, text: str, n: int) -> str:
    """The prefix of ``text`` spanned by its first ``n`` tokens (by character offsets when the tokenizer has them)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return text[: enc["offset_mapping"][n - 1][1]]
    except (NotImplementedError, KeyError, ValueError, TypeError):  # a slow tokenizer: decode the ids
        return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:n])
