"""The item-neighbour table a learner's bundle carries: the serving table updated by the window.

Why not the window's own table: the window holds a few thousand sessions, the serving table was
built from the whole training corpus. Rebuilding a known item's row from the window alone threw
that away (session 11, on the drifting generated stream: every candidate, even the serving model
with only new rows added, scored 1.5-11 HR@20 points below the serving bundle on the guard's
held-out sessions, and the guard refused half the updates). So a known item's row is the old
row and the window's row mixed in proportion to the sessions behind each (each normalised to sum
1, like Item-KNN over the union of the two corpora, approximately), its best ``N`` kept; a new
item's row is the window's. The window's older sessions, mixed in at earlier updates, count
again at each one: recent sessions weigh more than their number, which a table that follows
drift can afford.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.features import ItemVocab
from ..core.item_neighbours import ItemNeighbours, merged_entries

__all__ = ["updated_table", "table_sessions"]


def table_sessions(manifest: dict) -> int:
    """Sessions behind a bundle's item-neighbour table: recorded by the learner, else the
    bundle's training sessions (0 when unknown)."""
    entry = manifest.get("item_neighbours") or {}
    recorded = (entry.get("selection") or {}).get("sessions")
    if recorded:
        return int(recorded)
    training = manifest.get("training") or {}
    return int(training.get("train_sessions") or training.get("sessions") or 0)


def updated_table(
    old: ItemNeighbours, old_sessions: int, vocab: ItemVocab, rows: Sequence[np.ndarray]
) -> ItemNeighbours:
    """``old`` (``old_sessions`` behind it) updated by the window's sessions ``rows`` (item
    rows of the grown ``vocab``): known items mix both rows by their sessions, new items get
    the window's row."""
    width = int(old.rows.shape[1])
    fresh = ItemNeighbours.build(
        rows, len(vocab), n_neighbors=width, candidates=old.candidates
    ).shaped_like(old)
    n_old = old.rows.shape[0]
    share = len(rows) / max(len(rows) + old_sessions, 1)  # the window's weight
    mixed_rows = np.concatenate([old.rows, fresh.rows[:n_old]], axis=1)
    mixed_scores = np.concatenate(
        [old.scores * (1.0 - share), fresh.scores[:n_old] * share], axis=1
    )
    mixed_rows, mixed_scores = merged_entries(mixed_rows, mixed_scores)
    best = np.argsort(-mixed_scores, axis=1, kind="stable")[:, :width]
    top_rows = np.take_along_axis(mixed_rows, best, axis=1)
    top_scores = np.take_along_axis(mixed_scores, best, axis=1)
    top_rows[top_scores <= 0] = 0
    top_scores[top_rows == 0] = 0
    totals = top_scores.sum(axis=1, keepdims=True)
    fresh.rows[:n_old] = top_rows
    fresh.scores[:n_old] = top_scores / np.where(totals > 0, totals, 1.0)
    return fresh
