"""Dev checks (perplexity and personalization gap), the best check so far, and the swap hinge.

The personalization gap (nats per token, another user's documents minus the user's own;
see :mod:`commer_core.personalization`) is what shows the prompt carries *this* user: a
perplexity below no personalization is also reached by one prompt shared by everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# The module, not its names: commer_core.swap imports this package's leaf modules, so
# either may be imported first (a partly initialised swap is looked up at call time).
from commer_core import swap
from commer_core.generator import Prefix
from commer_core.personalization import personalization_gap
from commer_core.training.config import TrainConfig
from commer_core.training.examples import PreparedExample
from commer_core.training.method_checkpoints import build_method
from commer_core.training.methods import Method, NoPersonalization
from commer_core.training.scoring import corpus_perplexity, score_examples

DEV_KEYS = ("dev_perplexity", "dev_gap", "dev_gap_low", "dev_own_better")
# A dev check with a larger personalization gap replaces the best one unless its dev perplexity is
# worse by more than this factor: a gap bought by wrecking the perplexity is no gain.
BEST_PPL_TOLERANCE = 1.1
# Gaps closer than this (nats per token) count as equal; seen on 32 dev examples: checks 0.021 and
# 0.023 apart at perplexities 44.7 and 54.3, where the second is plainly the better checkpoint.
BEST_GAP_TIE = 0.005


def dev_check(method: Method, dev_set: Sequence[PreparedExample], config: TrainConfig) -> dict[str, float]:
    """Dev perplexity and, when the user's documents can matter, the personalization gap."""
    own = score_examples(method, dev_set, bf16=config.bf16)
    out = {"dev_perplexity": corpus_perplexity(own)}
    if len({e.user_id for e in dev_set}) >= 2 and any(e.documents for e in dev_set):
        other = score_examples(method, swap.swap_documents(dev_set, config.seed), bf16=config.bf16)
        gap = personalization_gap(own, other, seed=config.seed)
        out.update(dev_gap=gap.gap, dev_gap_low=gap.low, dev_own_better=gap.own_better)
    return out


def dev_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The step and dev keys of a history record."""
    return {"step": record["step"], **{k: record[k] for k in DEV_KEYS if k in record}}


def is_better(record: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether a dev check beats the best so far.

    A gap larger by more than :data:`BEST_GAP_TIE` wins at a tolerable perplexity; gaps within
    the tie band (a few dozen dev examples cannot tell them apart) go to the lower perplexity.
    """
    if not best:
        return True
    ppl, best_ppl = record["dev_perplexity"], best["dev_perplexity"]
    if "dev_gap" in record and "dev_gap" in best:
        if record["dev_gap"] > best["dev_gap"] + BEST_GAP_TIE:
            return ppl <= best_ppl * BEST_PPL_TOLERANCE
        if record["dev_gap"] < best["dev_gap"] - BEST_GAP_TIE:
            return False
    return ppl < best_ppl


def best_record(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The dev check :func:`is_better` keeps, replayed over a run's history (so a resumed run agrees)."""
    best: dict[str, Any] = {}
    for record in history:
        if "dev_perplexity" in record and is_better(record, best):
            best = dev_summary(record)
    return best


def baseline_perplexities(config: TrainConfig, method: Method, dev_set: Sequence[PreparedExample]) -> dict[str, float]:
    """Dev perplexity of the same method untrained (fresh, same seed) and of no personalization."""
    out = {"none": corpus_perplexity(score_examples(NoPersonalization(method.generator), dev_set, bf16=config.bf16))}
    fresh = build_method(config)  # a fresh backbone: one compressor per backbone
    out["untrained"] = corpus_perplexity(score_examples(fresh, dev_set, bf16=config.bf16))
    del fresh
    return out


def swap_partners(batch: Sequence[PreparedExample], rounds: int = 1,
                  prefixes: Sequence[Prefix] | None = None) -> list[list[int]] | None:
    """Per round r, each example's partner: an example of another user of the batch.

    Without ``prefixes``, the (r+1)-th next one in batch order (cyclically); with them, the one whose
    prompt is the (r+1)-th closest to the example's own (cosine of the prompts minus the batch's mean
    prompt, so the part every user shares does not decide): the users the model confuses most.
    Rounds beyond the number of other-user examples wrap around; None if the batch holds one user.
    """
    n = len(batch)
    others = [[j % n for j in range(i + 1, i + n) if batch[j % n].user_id != e.user_id] for i, e in enumerate(batch)]
    if any(not o for o in others):
        return None
    if prefixes is not None:
        similarity = _prompt_similarity(prefixes)
        others = [sorted(o, key=lambda j, i=i: -similarity[i][j]) for i, o in enumerate(others)]
    return [[o[r % len(o)] for o in others] for r in range(rounds)]


def _prompt_similarity(prefixes: Sequence[Prefix]) -> list[list[float]]:
    """Cosine similarity between the batch's prompts after removing their mean (no gradient)."""
    if any(p is None for p in prefixes):
        raise ValueError("nearest swap partners need every example's prompt; a method gave none")
    with torch.no_grad():
        flat = torch.stack([p.detach().float().flatten() for p in prefixes])
        flat = torch.nn.functional.normalize(flat - flat.mean(dim=0), dim=1)
        return (flat @ flat.T).tolist()


def swap_hinge(method: Method, batch: Sequence[PreparedExample], prefixes: Sequence[Prefix], nll: torch.Tensor,
               counts: torch.Tensor, margin: float, partners: int = 1, nearest: bool = False,
               temperature: float = 0.0) -> torch.Tensor:
    """mean(relu(margin - (other - own))) in nats per token over ``partners`` other batch users' prompts.

    With ``temperature`` T > 0 the hinge is smoothed to T * softplus((margin - gap) / T) (the hinge as
    T -> 0), so each example's pull grows with how far another user's prompt is ahead on it.

    Reuses the batch's prompts (no extra compression): one more generator pass per partner. More
    partners give the model more (and harder) users to tell apart than the single one of the swap test;
    ``nearest`` picks the partners whose prompts are closest to the example's (see :func:`swap_partners`).
    """
    rounds = swap_partners(batch, partners, prefixes if nearest else None)
    if rounds is None:
        return nll.new_zeros(())
    per_token = counts.clamp_min(1).float()
    hinges = []
    for round_partners in rounds:
        other, _ = method.generator.target_nll([prefixes[j] for j in round_partners], [e.input for e in batch],
                                               [e.target for e in batch])
        shortfall = margin - (other.float() - nll.float()) / per_token
        hinges.append(torch.nn.functional.softplus(shortfall, beta=1 / temperature) if temperature > 0
                      else torch.relu(shortfall))
    return torch.stack(hinges).mean()
