"""The incremental encoder's cache: per-user positions in shared slabs, bounded, LRU.

:class:`StepCache` holds, for each cached user (a *slot*), the slab rows of its session's
positions, those positions' model inputs, their count and the session vector after the last; the
slabs (one per cache part, a row per position) are what ``encoder_step.onnx`` reads in place.
User slots and slab rows are sized from ``cache_bytes`` up front (allocated by the OS as they are
touched); when either runs out the least recently used users are evicted, never one of the
batch being encoded. :class:`stream_rec.runtime.incremental.IncrementalEncoder` drives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["StepCache", "NO_SLOT", "TOKENS"]

NO_SLOT = -1
TOKENS = 5  # a position's inputs: item row, type, 3 query buckets
_POSITIONS_PER_USER = 6  # how the budget is split between user slots and position rows


class StepCache:
    """Slabs of ``widths`` floats per position; ``dim``-sized vectors; ``max_len`` positions."""

    def __init__(self, widths: list[int], dim: int, max_len: int, cache_bytes: int) -> None:
        self.cache_bytes = cache_bytes
        self.row_bytes = 4 * sum(widths)
        self.user_bytes = max_len * (8 + 4 * TOKENS) + 4 * dim + 3 * 8 + 200  # + its key's entry
        users = max(2, cache_bytes // (self.user_bytes + _POSITIONS_PER_USER * self.row_bytes))
        rows = max(2, (cache_bytes - users * self.user_bytes) // self.row_bytes)
        # Slab row 0 stays zero: padding positions point at it.
        self.slabs = [np.zeros((rows, w), np.float32) for w in widths]
        self._free_rows = np.arange(rows - 1, 0, -1, dtype=np.int64)  # a stack
        self._rows_top = rows - 1
        self.rows = np.zeros((users, max_len), np.int64)  # a user's slab rows, by position
        self.tokens = np.zeros((users, max_len, TOKENS), np.int32)  # its positions' inputs
        self.n = np.zeros(users, np.int64)  # positions cached (0: none)
        self.vectors = np.zeros((users, dim), np.float32)
        self.used = np.zeros(users, np.int64)  # the batch clock when last used
        self.clock = 0
        self.slot: dict[str, int] = {}
        self.key: list[str | None] = [None] * users
        self._free_slots = list(range(users - 1, -1, -1))
        self.evictions = 0

    def store(
        self,
        keys: Sequence[str],
        rows: np.ndarray,
        slots: np.ndarray,
        store: np.ndarray,
        past: np.ndarray,
        total: np.ndarray,
        aligned: np.ndarray,
        session: np.ndarray,
        ran: list[tuple[np.ndarray, list[np.ndarray]]],
    ) -> None:
        """Keep the jobs' new positions. Eviction never takes a user of this batch (its slots are
        marked used at this batch's clock; new and reset slots hold no rows), so every job's slot
        is still its user's when its rows are written."""
        fresh = np.flatnonzero(store & (past == 0))  # from scratch: old rows go, a slot if none
        had = slots[fresh] != NO_SLOT
        self._release_rows(slots[fresh[had]])
        for j in fresh[~had].tolist():
            slot = self._new_slot()
            if slot is None:
                store[j] = False
                continue
            key = keys[rows[j]]
            slots[j], self.slot[key], self.key[slot] = slot, slot, key
        news = total - past
        need = int(news[store].sum())
        if not need:
            return
        free = self._take_rows(need)
        if free is None:  # more than the whole cache: these users stay uncached
            for slot in slots[store].tolist():
                self._forget_slot(slot)
            return
        start = 0
        for jobs, parts in ran:  # each chunk's new positions into the next free rows, in order
            keep = np.flatnonzero(store[jobs])
            if not len(keep):
                continue
            counts = news[jobs[keep]]
            at = np.repeat(keep, counts)  # a chunk row per new position
            step = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            mine = free[start : start + len(at)]
            start += len(at)
            for slab, part in zip(self.slabs, parts):
                slab[mine] = part[at, step]
            job = jobs[at]
            s, p = slots[job], past[job] + step
            self.rows[s, p] = mine
            self.tokens[s, p] = aligned[rows[job], p]
        done = np.flatnonzero(store)
        self.n[slots[done]] = total[done]
        self.vectors[slots[done]] = session[done, news[done] - 1]
        self.used[slots[done]] = self.clock

    def _new_slot(self) -> int | None:
        if not self._free_slots:
            self._evict(users=max(1, len(self.key) // 20))
        return self._free_slots.pop() if self._free_slots else None

    def _take_rows(self, n: int) -> np.ndarray | None:
        """``n`` free slab rows, evicting least recently used users as needed (None: more than
        the whole cache holds apart from this batch's users)."""
        while self._rows_top < n:
            if not self._evict(rows=n - self._rows_top):
                return None
        self._rows_top -= n
        return self._free_rows[self._rows_top : self._rows_top + n].copy()

    def _evict(self, users: int = 0, rows: int = 0) -> bool:
        """Evict the least recently used users (never this batch's) until ``users`` slots and
        ``rows`` slab rows are free, and a twentieth more; False when none could go."""
        candidates = np.flatnonzero((self.n > 0) & (self.used < self.clock))
        if not len(candidates):
            return False
        oldest = candidates[np.argsort(self.used[candidates], kind="stable")]
        held = np.cumsum(self.n[oldest])
        k = max(users, int(np.searchsorted(held, rows)) + 1, len(self.key) // 20)
        for slot in oldest[:k].tolist():
            self._forget_slot(slot)
            self.evictions += 1
        return True

    def _release_rows(self, slots: np.ndarray) -> None:
        for slot in slots.tolist():
            n = int(self.n[slot])
            self._free_rows[self._rows_top : self._rows_top + n] = self.rows[slot, :n]
            self._rows_top += n
            self.n[slot] = 0

    def _forget_slot(self, slot: int) -> None:
        key = self.key[slot]
        if key is None:
            return
        self._release_rows(np.array([slot]))
        del self.slot[key]
        self.key[slot] = None
        self._free_slots.append(slot)

    def forget(self, key: str) -> None:
        """Drop one user's cache (the next event encodes from the first)."""
        slot = self.slot.get(key)
        if slot is not None:
            self._forget_slot(slot)

    def clear(self) -> None:
        for key in list(self.slot):
            self.forget(key)

    def stats(self) -> dict[str, Any]:
        """Users and positions cached, their bytes and the bound, evictions since start."""
        cached = len(self._free_rows) - self._rows_top
        return {
            "users": len(self.slot),
            "cached_positions": cached,
            "bytes": cached * self.row_bytes + len(self.slot) * self.user_bytes,
            "limit_bytes": self.cache_bytes,
            "evictions": self.evictions,
        }
