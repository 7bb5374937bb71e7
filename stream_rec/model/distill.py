"""Distillation: session-kNN (V-SKNN) as a teacher for the Transformer's next-item softmax.

Why: on Diginetica and Nowplaying V-SKNN beats the Transformer trained on next items alone,
and blending the two at serving time costs a per-event V-SKNN (~0.25 ms, three times the
Transformer's CPU). Training against V-SKNN's distribution as a soft target as well puts its
knowledge (which sessions look alike, recency) into the model, which then serves alone.

The teacher of a training session sees only the sessions before it (``before=``): the same
past that V-SKNN would see live, so the teacher never knows the session's own future.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..core.cooccurrence import SessionNeighbours
from .examples import Rows

__all__ = ["teacher_targets"]

_PROGRESS_EVERY_S = 60.0


def teacher_targets(
    featurized: Sequence[Rows],
    n_items: int,
    candidates: int = 50,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per session, (cols (n, C) int32, probs (n, C) float16): V-SKNN's best next-item columns
    after each position, over the sessions before it (-1 / 0 where it knows none)."""
    neighbours = SessionNeighbours.build([items for items, _, _ in featurized], n_items)
    out = []
    t0 = t_note = time.perf_counter()
    for s, (items, _, _) in enumerate(featurized):
        n = len(items)
        cols = np.full((n, candidates), -1, np.int32)
        probs = np.zeros((n, candidates), np.float16)
        for t in range(n - 1):
            rows, scores = neighbours.scores(items[: t + 1], candidates, before=s)
            cols[t, : len(rows)], probs[t, : len(rows)] = rows - 1, scores
        out.append((cols, probs))
        now = time.perf_counter()
        if progress is not None and now - t_note > _PROGRESS_EVERY_S:
            t_note = now
            eta = (now - t0) / (s + 1) * (len(featurized) - s - 1)
            progress(f"teacher: {s + 1:,}/{len(featurized):,} sessions, ~{eta / 60:.1f} min left")
    return out
