"""Trending items over a recent window, kept in the stream: the answer for cold sessions.

Exponentially decayed event counts per item row (a purchase counts more than a
click), updated from every micro-batch. A session with no item the model knows
(a first search, an unknown item) gets the trending top-k instead of a vector
computed from nothing. Memory: one float64 per catalogue item.

The clock follows event time, but never beyond the processing time plus ``max_ahead_ms``
(60 s): one event stamped far in the future would otherwise decay every count to nothing and
leave its own item alone on top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["TrendingItems"]


class TrendingItems:
    def __init__(self, n_items: int, half_life_s: float = 3600.0, prior: np.ndarray | None = None,
                 purchase_weight: float = 3.0, max_ahead_ms: int = 60_000) -> None:
        """``prior`` (n_items + 1,) seeds the counts (e.g. training popularity) until the stream speaks."""
        self.half_life_ms = half_life_s * 1000.0
        self.purchase_weight = purchase_weight
        self.scores = np.zeros(n_items + 1, np.float64)
        if prior is not None:
            p = np.asarray(prior, np.float64)
            self.scores[:] = p / max(p.sum(), 1.0)  # a prior worth one event in total
        self.scores[0] = 0.0
        self.clock_ms: int | None = None
        self.max_ahead_ms = max_ahead_ms

    def update(self, rows: np.ndarray, ts_ms: int, purchases: np.ndarray | None = None,
               now_ms: int | None = None) -> None:
        """Count item rows seen up to ``ts_ms`` (0 rows = no item are ignored), a time
        clamped to ``now_ms + max_ahead_ms`` when the processing time ``now_ms`` is given."""
        if now_ms is not None:
            ts_ms = min(ts_ms, now_ms + self.max_ahead_ms)
        if self.clock_ms is not None and ts_ms > self.clock_ms:
            self.scores *= math.pow(0.5, (ts_ms - self.clock_ms) / self.half_life_ms)
        self.clock_ms = ts_ms if self.clock_ms is None else max(self.clock_ms, ts_ms)
        weights = np.ones(len(rows)) if purchases is None else np.where(purchases, self.purchase_weight, 1.0)
        np.add.at(self.scores, rows, weights)
        self.scores[0] = 0.0

    def top(self, k: int, exclude: Sequence[np.ndarray] | None, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (B, k), scores (B, k)) best first, skipping each query's excluded rows."""
        need = k + max((len(e) for e in exclude), default=0) if exclude else k
        need = min(need, len(self.scores) - 1)
        cand = np.argpartition(-self.scores[1:], need - 1)[:need] + 1 if need < len(self.scores) - 1 else np.arange(1, len(self.scores))
        cand = cand[np.argsort(-self.scores[cand], kind="stable")]
        total = float(self.scores.sum()) or 1.0
        rows = np.zeros((batch, k), np.int64)
        scores = np.zeros((batch, k), np.float32)
        for b in range(batch):
            keep = cand if not exclude or not len(exclude[b]) else cand[~np.isin(cand, exclude[b])]
            keep = keep[:k]
            rows[b, : len(keep)] = keep
            scores[b, : len(keep)] = self.scores[keep] / total
        return rows, scores
