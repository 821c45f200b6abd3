"""Held-out document prediction: a training term that pays only for what recurs in a user's documents.

Each training example leaves one of its documents out of the prompt; besides its task target,
the generator then predicts that document's text from the merged prompt of the remaining ones.
One prompt for everyone cannot predict a user's unseen post; what can is what the user's posts
share, the literal text (a sign-off, an opener, a pet's name) that separates users whose styles
are otherwise alike. The swap hinge asks the prompt to differ between users; this term says what
it should carry.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import torch

from commer_core.generator import Prefix
from commer_core.training.dev import swap_hinge
from commer_core.training.examples import PreparedExample, truncate_texts
from commer_core.training.methods import Method

# The generator's input for the held-out document: a fixed instruction, the same for every user.
DOC_PREDICTION_INPUT = "Write another post by the same author."


def hold_out_documents(batch: Sequence[PreparedExample], *, seed: int,
                       step: int) -> tuple[list[PreparedExample], list[str | None]]:
    """Each example with two or more documents loses one, drawn from (seed, step, example id).

    Returns the batch without the held-out documents and the held-out texts (None where an
    example had fewer than two documents and keeps them all).
    """
    kept, held_out = [], []
    for e in batch:
        if len(e.documents) < 2:
            kept.append(e)
            held_out.append(None)
            continue
        i = random.Random(f"commer-held-out-doc/{seed}/{step}/{e.example_id}").randrange(len(e.documents))
        kept.append(dataclasses.replace(e, documents=e.documents[:i] + e.documents[i + 1:]))
        held_out.append(e.documents[i])
    return kept, held_out


@dataclasses.dataclass(frozen=True)
class HeldOutScores:
    """The held-out documents as examples of their users, and each one's NLL under its own prompt."""

    examples: list[PreparedExample]  # input DOC_PREDICTION_INPUT, target the held-out text (cut)
    prefixes: list[Prefix]  # each row's own merged prompt
    nll: torch.Tensor  # summed nats per row
    counts: torch.Tensor  # target tokens per row


def score_held_out(method: Method, batch: Sequence[PreparedExample], prefixes: Sequence[Prefix],
                   held_out: Sequence[str | None], max_tokens: int) -> HeldOutScores | None:
    """One generator pass over the held-out documents (None: no example held one out)."""
    rows = [i for i, text in enumerate(held_out) if text is not None]
    if not rows:
        return None
    targets = truncate_texts(method.tokenizer, [held_out[i] for i in rows], max_tokens)
    examples = [dataclasses.replace(batch[i], input=DOC_PREDICTION_INPUT, target=t) for i, t in zip(rows, targets)]
    own = [prefixes[i] for i in rows]
    nll, counts = method.generator.target_nll(own, [DOC_PREDICTION_INPUT] * len(rows), targets)
    return HeldOutScores(examples, own, nll, counts)


def doc_prediction_loss(method: Method, batch: Sequence[PreparedExample], prefixes: Sequence[Prefix],
                        held_out: Sequence[str | None], max_tokens: int, *, swap_weight: float = 0.0,
                        swap_margin: float = 1.0, swap_partners: int = 1,
                        swap_temperature: float = 0.0) -> tuple[torch.Tensor, int]:
    """(nats per token of the held-out documents given each example's prompt, tokens scored).

    With ``swap_weight`` > 0, plus that weight times the swap hinge on the same documents (another
    batch user's prompt must predict them worse by the margin): the task's swap hinge has one target
    per example, this one a new held-out post every step, and it pays only where the own prompt
    carries the user's recurring text better than another user's does.
    """
    scored = score_held_out(method, batch, prefixes, held_out, max_tokens)
    if scored is None:
        return torch.zeros(()), 0
    n_tok = int(scored.counts.sum())
    loss = scored.nll.float().sum() / max(n_tok, 1)
    if swap_weight > 0:
        loss = loss + swap_weight * swap_hinge(method, scored.examples, scored.prefixes, scored.nll, scored.counts,
                                               swap_margin, swap_partners, temperature=swap_temperature)
    return loss, n_tok
