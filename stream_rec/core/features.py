"""What the model sees: stable hashes for item ids and query tokens, and padded batches.

Session state stores *hashes* of item ids and query tokens, never a model's row
numbers, so state stays valid when a new model bundle (with a new item
vocabulary) is swapped in. :class:`ItemVocab` maps hashes to one model's rows,
vectorised with ``searchsorted``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b

import numpy as np

__all__ = [
    "PAD",
    "CLICK",
    "SEARCH",
    "PURCHASE",
    "TYPE_CODES",
    "MAX_QUERY_TOKENS",
    "item_hash",
    "query_token_hashes",
    "ItemVocab",
    "ModelInputs",
    "featurize",
]

# Event type codes as stored in state and fed to the model. 0 marks padding.
PAD, CLICK, SEARCH, PURCHASE = 0, 1, 2, 3
TYPE_CODES = {"click": CLICK, "search": SEARCH, "purchase": PURCHASE}
MAX_QUERY_TOKENS = 3
_TOKEN = re.compile(r"[0-9a-z]+")


@lru_cache(maxsize=1 << 16)  # a catalogue's ids repeat: blake2b costs ~2 us, a hit ~0.1 us
def item_hash(item_id: str) -> int:
    """A stable, non-negative 63-bit hash of an item id (0 is reserved for "no item")."""
    h = int.from_bytes(blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little")
    return (h >> 1) or 1


def query_token_hashes(query: str) -> list[int]:
    """Up to MAX_QUERY_TOKENS stable 32-bit hashes (never 0) of the query's first tokens."""
    out = []
    for tok in _TOKEN.findall(query.lower())[:MAX_QUERY_TOKENS]:
        h = int.from_bytes(blake2b(tok.encode("utf-8"), digest_size=4).digest(), "little")
        out.append(h or 1)
    return out


class ItemVocab:
    """Maps item ids (via their hashes) to a model's rows 1..n; row 0 means no/unknown item."""

    def __init__(self, item_ids: Sequence[str]):
        self.item_ids: list[str] = list(item_ids)  # row r (1-based) -> item_ids[r - 1]
        hashes = np.fromiter((item_hash(i) for i in self.item_ids), dtype=np.int64, count=len(self.item_ids))
        order = np.argsort(hashes, kind="stable")
        self._sorted_hashes = hashes[order]
        if len(self._sorted_hashes) > 1 and np.any(np.diff(self._sorted_hashes) == 0):
            raise ValueError("item id hash collision or duplicate item ids in vocabulary")
        self._sorted_rows = (order + 1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows_for_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """Rows for an int64 array of item hashes (any shape); 0 where unknown or 0."""
        flat = np.asarray(hashes, dtype=np.int64).ravel()
        if len(self._sorted_hashes) == 0:
            return np.zeros(np.shape(hashes), dtype=np.int64)
        pos = np.searchsorted(self._sorted_hashes, flat)
        pos = np.minimum(pos, len(self._sorted_hashes) - 1)
        found = self._sorted_hashes[pos] == flat
        rows = np.where(found, self._sorted_rows[pos], 0)
        return rows.reshape(np.shape(hashes))

    def row(self, item_id: str) -> int:
        return int(self.rows_for_hashes(np.array([item_hash(item_id)]))[0])

    def item_id(self, row: int) -> str:
        return self.item_ids[row - 1]


@dataclass(frozen=True)
class ModelInputs:
    """A left-padded batch. Padding positions have type PAD (0).

    items:   (B, L) int64 item rows (0 = no item: padding, search, unknown item)
    types:   (B, L) int64 event type codes
    queries: (B, L, Q) int64 query-token buckets (0 = none)
    """

    items: np.ndarray
    types: np.ndarray
    queries: np.ndarray

    def __len__(self) -> int:
        return int(self.items.shape[0])


def featurize(
    sequences: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    vocab: ItemVocab,
    query_buckets: int,
    max_len: int,
) -> ModelInputs:
    """Turn per-session (item_hashes (n,), types (n,), query_hashes (n, Q)) into model inputs.

    Keeps the last ``max_len`` events of each session, left-pads to the longest
    session in the batch, maps item hashes to rows and query hashes to buckets
    1..query_buckets-1.
    """
    b = len(sequences)
    length = max(1, min(max_len, max((len(s[0]) for s in sequences), default=1)))
    item_h = np.zeros((b, length), dtype=np.int64)
    types = np.zeros((b, length), dtype=np.int64)
    qh = np.zeros((b, length, MAX_QUERY_TOKENS), dtype=np.int64)
    for i, (ih, ty, q) in enumerate(sequences):
        n = min(len(ih), length)
        if n:
            item_h[i, length - n :] = ih[-n:]
            types[i, length - n :] = ty[-n:]
            qh[i, length - n :] = q[-n:]
    items = vocab.rows_for_hashes(item_h)
    queries = np.where(qh > 0, 1 + (qh % (query_buckets - 1)), 0)
    return ModelInputs(items=items, types=types, queries=queries)
