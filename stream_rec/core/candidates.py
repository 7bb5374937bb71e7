"""Small pieces the answer's rescoring steps share (core.repeat's merge, core.cooccurrence's blend):
a candidate list grown with rows from another source, where given rows sit in it, its padded top k.
"""

from __future__ import annotations

import numpy as np

__all__ = ["drop_excluded", "join_candidates", "positions_in", "padded_top_k"]


def drop_excluded(
    rows: np.ndarray, values: np.ndarray, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` and their ``values`` without the rows in ``exclude``."""
    if exclude is None or not len(exclude) or not len(rows):
        return rows, values
    keep = ~np.isin(rows, exclude)
    return rows[keep], values[keep]


def join_candidates(
    query: np.ndarray, cand: np.ndarray, cos: np.ndarray, more: np.ndarray, item_vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``cand`` (rows) and ``cos`` (their inner products with ``query``) with the rows of ``more``
    that are not candidates yet appended, in their order, scored from ``item_vectors``."""
    extra = more[~np.isin(more, cand)]
    if not len(extra):
        return cand, cos
    return np.concatenate([cand, extra]), np.concatenate([cos, item_vectors[extra] @ query])


def positions_in(cand: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The index in ``cand`` (distinct rows) of each of ``rows`` (all of them in ``cand``)."""
    order = np.argsort(cand, kind="stable")
    return order[np.searchsorted(cand, rows, sorter=order)]


def padded_top_k(cand: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k rows, k float32 scores), best first (ties: earlier candidate); row 0 / -inf pad."""
    best = np.argsort(-scores, kind="stable")[:k]
    out_rows = np.zeros(k, np.int64)
    out_scores = np.full(k, -np.inf, np.float32)
    out_rows[: len(best)], out_scores[: len(best)] = cand[best], scores[best]
    return out_rows, out_scores
