"""The repeat head at serving time: the session's own items rescored with the model's bonus.

Why: shoppers and listeners come back to items they already saw in the session (about a fifth
of Diginetica's test targets were in the prefix). A session vector alone ranks them like any
other item; the model's repeat head (``SASRecConfig.repeat``) adds a learned logit bonus to
each item of the session, from its recency, its count and how well it fits the session state
(RepeatNet's repeat/explore idea, GraphFine's "item view"). The index cannot know that bonus,
so the core merges: the index's top candidates plus the session's items, each scored
``scale * cosine + bonus``, the best k kept. Items outside both sets score no higher than the
index's k-th candidate, so the merge is as exact as the index.
"""

from __future__ import annotations

import numpy as np

from .candidates import drop_excluded, join_candidates, padded_top_k, positions_in

__all__ = ["session_bonuses", "rerank"]


def session_bonuses(items: np.ndarray, bonus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct item rows, their bonus) of one encoded session, at each item's last occurrence.

    ``items`` (L,) left-padded rows as encoded (0 = no item), ``bonus`` (L,) the encoder's
    repeat output for the same positions.
    """
    rev = items[::-1]
    rows, first = np.unique(rev, return_index=True)  # first in reverse = most recent occurrence
    known = rows > 0
    return rows[known], bonus[::-1][first[known]].astype(np.float32)


def rerank(
    query: np.ndarray,
    rows: np.ndarray,
    scores: np.ndarray,
    bonus_rows: np.ndarray,
    bonus: np.ndarray,
    item_vectors: np.ndarray,
    scale: float,
    k: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(k rows, k scores) from the index's candidates (``rows``, inner products ``scores``; row 0 =
    padding) and the session's items with their bonus; score = cosine + bonus / scale, so a
    session without repeats keeps the index's scores. Rows in ``exclude`` never appear."""
    bonus_rows, bonus = drop_excluded(bonus_rows, bonus, exclude)
    valid = rows > 0
    cand_rows, cand = rows[valid], scores[valid].astype(np.float32)
    if len(bonus_rows):
        cand_rows, cand = join_candidates(query, cand_rows, cand, bonus_rows, item_vectors)
        cand = cand.copy()  # never the caller's scores
        cand[positions_in(cand_rows, bonus_rows)] += bonus / scale
    return padded_top_k(cand_rows, cand, k)
