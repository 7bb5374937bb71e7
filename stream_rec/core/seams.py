"""The core's seams: what the recommender needs from the world, as protocols.

Implementations live apart from the core (``stream_rec.runtime``): ONNX Runtime and the
PyTorch reference behind :class:`SessionEncoder`, HNSW and exact search behind
:class:`CandidateIndex`, memory, RocksDB and the partitioned worker tables behind
:class:`SessionStore`. Each seam has a contract suite in ``tests/unit``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from .features import ModelInputs
from .session import SessionState

__all__ = ["SessionEncoder", "RepeatEncoder", "KeyedEncoder", "CandidateIndex", "SessionStore"]


@runtime_checkable
class SessionEncoder(Protocol):
    """Encodes sessions into vectors whose inner product with item vectors is the score."""

    @property
    def dim(self) -> int: ...

    def encode(self, inputs: ModelInputs) -> np.ndarray:
        """(B, L) left-padded inputs -> (B, dim) float32 session vectors."""
        ...


@runtime_checkable
class RepeatEncoder(SessionEncoder, Protocol):
    """An encoder that may carry a repeat head (``repeat``): a logit bonus per session item."""

    @property
    def repeat(self) -> bool: ...

    def encode_sessions(self, inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, dim) session vectors and, when ``repeat``, the (B, L) bonus of each position's
        item (read at the item's most recent occurrence; see ``core.repeat``), else None."""
        ...


@runtime_checkable
class KeyedEncoder(SessionEncoder, Protocol):
    """An encoder that keeps per-user caches (``runtime.incremental``): ``keys[b]`` names the
    user whose whole current session is row b, so a session one event longer than the one
    last encoded for that user costs one position."""

    def encode_keyed(self, keys: Sequence[str], inputs: ModelInputs) -> np.ndarray:
        """(B, L) left-padded inputs of ``keys``' sessions -> (B, dim) float32 session vectors."""
        ...


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


@runtime_checkable
class SessionStore(Protocol):
    """Where per-user :class:`SessionState` lives between events."""

    def get(self, user_id: str) -> SessionState | None: ...

    def put(self, user_id: str, state: SessionState) -> None: ...

    def delete(self, user_id: str) -> None: ...

    def __len__(self) -> int: ...

    def users(self) -> Iterator[str]: ...

    def close(self) -> None: ...
