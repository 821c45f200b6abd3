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


def doc_prediction_loss(method: Method, prefixes: Sequence[Prefix], held_out: Sequence[str | None],
                        max_tokens: int) -> tuple[torch.Tensor, int]:
    """(mean nats per token of the held-out documents given each example's prompt, tokens scored)."""
    rows = [i for i, text in enumerate(held_out) if text is not None]
    if not rows:
        return torch.zeros(()), 0
    targets = truncate_texts(method.tokenizer, [text for text in held_out if text is not None], max_tokens)
    nll, counts = method.generator.target_nll([prefixes[i] for i in rows], [DOC_PREDICTION_INPUT] * len(rows),
                                              targets)
    n_tok = int(counts.sum())
    return nll.float().sum() / max(n_tok, 1), n_tok
