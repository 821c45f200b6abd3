"""Per-user mean pooling as a Beam CombineFn.

The accumulator is :class:`commer_core.merge.MeanPool`: a float64 ``k x d`` sum and a
document count. That makes the merge associative and commutative, so runners may
lift it before the shuffle (partial sums per worker, then merged), and the result
does not depend on the order documents arrive in beyond float64 rounding.

Beam rules followed here: ``merge_accumulators`` mutates only the first accumulator;
keys are plain ``str`` (checked, since numpy string scalars have been mis-encoded as
keys); accumulators cross the shuffle through a raw-bytes coder rather than pickle.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import apache_beam as beam
import numpy as np

from commer_core.merge import MeanPool

_HEADER = struct.Struct("<qII")  # count, k, d


class MeanPoolCoder(beam.coders.Coder):
    """MeanPool <-> ``count, k, d`` header + little-endian float64 sum."""

    def encode(self, value: MeanPool) -> bytes:
        total = np.ascontiguousarray(value.total, dtype="<f8")
        k, d = total.shape
        return _HEADER.pack(int(value.count), k, d) + total.tobytes()

    def decode(self, encoded: bytes) -> MeanPool:
        count, k, d = _HEADER.unpack_from(encoded)
        total = np.frombuffer(encoded, dtype="<f8", count=k * d, offset=_HEADER.size).reshape(k, d).copy()
        return MeanPool(total, count)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self):
        return MeanPool


class MeanPoolCombineFn(beam.CombineFn):
    """Mean of ``k x d`` compressions (and partial pools); outputs ``(float32[k, d] mean, n_docs)``."""

    def __init__(self, num_embeddings: int, hidden_size: int):
        super().__init__()
        if num_embeddings < 1 or hidden_size < 1:
            raise ValueError("num_embeddings and hidden_size must be >= 1")
        self._shape = (num_embeddings, hidden_size)

    def create_accumulator(self) -> MeanPool:
        return MeanPool.empty(*self._shape)

    def add_input(self, accumulator: MeanPool, element: np.ndarray | MeanPool) -> MeanPool:
        """One document's ``k x d`` compression, or a partial pool (a previous run's users, incremental runs)."""
        if isinstance(element, MeanPool):
            if element.total.shape != self._shape:
                raise ValueError(f"partial pool has shape {element.total.shape}, expected {self._shape}")
            return accumulator.merge(element)
        element = np.asarray(element)
        if element.shape != self._shape:
            raise ValueError(f"compression has shape {element.shape}, expected {self._shape}")
        return accumulator.add(element)

    def merge_accumulators(self, accumulators: Iterable[MeanPool]) -> MeanPool:
        it = iter(accumulators)
        first = next(it, None)
        if first is None:
            return self.create_accumulator()
        for other in it:
            first.merge(other)  # only the first accumulator is mutated
        return first

    def compact(self, accumulator: MeanPool) -> MeanPool:
        return accumulator

    def extract_output(self, accumulator: MeanPool) -> tuple[np.ndarray, int]:
        return accumulator.mean(), int(accumulator.count)

    def get_accumulator_coder(self) -> beam.coders.Coder:
        return MeanPoolCoder()


def user_key(key: object) -> str:
    """The user id as a plain ``str`` (refuses numpy scalars and other look-alikes)."""
    if type(key) is not str:  # noqa: E721 - subclasses such as numpy.str_ are what we refuse
        raise TypeError(f"user keys must be plain str, got {type(key).__name__}")
    return key

