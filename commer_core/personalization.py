"""Does a user's own data matter? The personalization gap and its paired bootstrap interval.

"Beats no personalization" is also true of a prompt that ignores the user. What proves
personalization is that the user's *own* documents score the user's target better than
*another* user's documents do, on the same examples. This module holds the pieces every
place that measures it shares (evaluate, train's dev checks, the product-path check):

- :func:`derangement`: a fixed, seeded map user -> another user (nobody maps to themself);
- :func:`personalization_gap`: the mean gap (other minus own, nats per target token) with a
  paired bootstrap 95% interval, and the share of examples where own is better.

Per-example values are ``nll / n_tokens`` (nats per token), so a long target does not
outweigh short ones; the pairs are (own, other) of one example.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def derangement(users: Sequence[str], seed: int = 0) -> dict[str, str]:
    """A seeded map from each distinct user to a different one (a cyclic shift of a shuffled order).

    Raises ``ValueError`` with fewer than two users: there is no "other user" to compare with.
    """
    distinct = sorted(set(users))
    if len(distinct) < 2:
        raise ValueError(f"a personalization swap needs at least 2 users, got {len(distinct)}")
    order = distinct[:]
    random.Random(f"commer-derangement/{seed}").shuffle(order)
    return {u: order[(i + 1) % len(order)] for i, u in enumerate(order)}


@dataclass(frozen=True)
class Gap:
    """Other-minus-own loss in nats per token: > 0 means the user's own data helps."""

    gap: float
    low: float  # 95% paired bootstrap interval
    high: float
    own_better: float  # share of examples where own scored strictly better
    own_nats: float  # mean nats per token with the user's own data
    other_nats: float  # mean nats per token with another user's data
    examples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_token(scores: Sequence[tuple[float, int]]) -> np.ndarray:
    """Nats per target token of each (summed NLL, tokens) pair."""
    return np.array([nll / max(n, 1) for nll, n in scores], dtype=np.float64)


def personalization_gap(
    own: Sequence[tuple[float, int]], other: Sequence[tuple[float, int]], *, resamples: int = 2000, seed: int = 0
) -> Gap:
    """Gap between paired per-example scores (summed NLL, tokens) with own and with another user's data."""
    if len(own) != len(other):
        raise ValueError(f"own and other scores must pair up, got {len(own)} and {len(other)}")
    if not own:
        raise ValueError("no examples to compare")
    a, b = per_token(own), per_token(other)
    diff = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Gap(gap=float(diff.mean()), low=float(low), high=float(high), own_better=float((diff > 0).mean()),
               own_nats=float(a.mean()), other_nats=float(b.mean()), examples=len(diff))


def pooled_gap(reports: Sequence[dict[str, Any]]) -> Gap:
    """Gap over every example of several ``personalization-check`` reports (one checkpoint, several user sets).

    A small set's own-better share is noisy (about +-9 points on 64 examples), so a bar is read over sets
    together. Rows go back to (summed NLL, tokens) pairs, bootstrapped with the reports' own seed so that one
    report alone reproduces its recorded interval."""
    rows = [row for report in reports for row in report["per_example"]]
    own = [(row["own_nats"] * row["target_tokens"], row["target_tokens"]) for row in rows]
    other = [(row["other_nats"] * row["target_tokens"], row["target_tokens"]) for row in rows]
    return personalization_gap(own, other, seed=reports[0].get("seed", 0))
