"""Candidate indexes: top-k items by inner product with a session vector.

Implementations: :class:`HnswIndex` (hnswlib, approximate) for serving and
:class:`ExactIndex` (numpy, exact) as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["CandidateIndex"]


@runtime_checkable
class CandidateIndex(Protocol):
    """Rows are the model's item rows 1..n (row 0, "no item", is never returned)."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries (B, dim) float32 -> (rows (B, k) int64, scores (B, k) float32), best first.

        ``exclude[b]`` holds rows never to return for query b; the result still
        has k items per query whenever the index holds at least k + len(exclude[b]).
        """
        ...
