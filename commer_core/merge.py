"""Merging a user's document compressions into one soft prompt.

The method's merge is the mean over documents. Kept as (float64 sum, count) it is
exact under any order, folds a new document in O(1), and can take one out again
(an edited or deleted document), so nightly runs can be incremental.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MeanPool:
    """Running (sum, count) of k x d compressions; ``mean`` is the user's soft prompt."""

    total: np.ndarray
    count: int = 0

    @classmethod
    def empty(cls, k: int, d: int) -> "MeanPool":
        return cls(np.zeros((k, d), dtype=np.float64), 0)

    @classmethod
    def from_mean(cls, mean: np.ndarray, count: int) -> "MeanPool":
        """Rebuild the accumulator from a stored (mean, n_docs) pair."""
        return cls(np.asarray(mean, dtype=np.float64) * count, int(count))

    def add(self, compression: np.ndarray, weight: int = 1) -> "MeanPool":
        """Fold one document in (weight=-1 takes it out again)."""
        self.total += weight * np.asarray(compression, dtype=np.float64)
        self.count += weight
        if self.count < 0:
            raise ValueError("removed more documents than the pool holds")
        return self

    def merge(self, other: "MeanPool") -> "MeanPool":
        self.total += other.total
        self.count += other.count
        return self

    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("the mean of zero documents is undefined")
        return (self.total / self.count).astype(np.float32)


def mean_pool(compressions: torch.Tensor) -> torch.Tensor:
    """Differentiable mean over documents: (n_docs, k, d) -> (k, d); used in training."""
    if compressions.ndim != 3 or compressions.shape[0] == 0:
        raise ValueError(f"expected (n_docs>0, k, d), got {tuple(compressions.shape)}")
    return compressions.mean(dim=0)


def concat_pool(compressions: torch.Tensor) -> torch.Tensor:
    """The ablation: concatenate compressions, (n_docs, k, d) -> (n_docs*k, d)."""
    if compressions.ndim != 3:
        raise ValueError(f"expected (n_docs, k, d), got {tuple(compressions.shape)}")
    return compressions.reshape(-1, compressions.shape[-1])


MERGES = {"mean": mean_pool, "concat": concat_pool}
