"""Item-to-item neighbours precomputed at bundle time, blended into the model's scores.

Why: a table of each item's nearest items by session co-occurrence (Item-KNN's similarity,
Ludewig et al.'s session-rec arithmetic) blended with the Transformer's softmax adds what a
similarity readout misses, item-to-item transitions: on validation +0.2 HR@20 / +0.1 MRR@20 on
Diginetica, +0.4 / +0.2 on Nowplaying, +7.6 / +6.4 on the generated log, whose structure
Item-KNN captures (docs/evaluation.md). Unlike a session-kNN per event (0.26-0.6 ms), the
table is looked up: one row gather per answer, and the blend of a whole micro-batch is a
handful of numpy array operations (:func:`item_blended_search`).

The table: for every item row, its ``N`` best neighbour rows (0 = none) and their scores
normalised to sum 1, both ``(n_items + 1, N)``. A session is scored by the rows of its
``recent`` last known items (newest first, weights 1, 0.9, 0.8, ... normalised to sum 1; an
item in several rows sums its shares): score = (1 - w) * softmax(model over the index's
candidates) + w * table score; the newest item brings its whole row, each earlier one its
best ``OLDER_NEIGHBOURS``. ``recent`` is tuned with ``w`` on validation (1 for bundles written
before it existed): the session's last few items are GraphFine's "item view".

The session's own items (``repeat``, 0 for bundles written before it existed): shoppers come
back to what they saw (a fifth of Diginetica's test targets are in their prefix; 45% in a
kept-back shop log), and a table row never holds its own item, so the blend pushed those items
out. Each of the session's last ``own_window`` known items adds ``repeat`` x its share
(decay^steps back, normalised to sum 1) on top of the blend: score = (1 - w) * softmax + w *
table + repeat * own share. ``repeat`` and the decay are tuned on validation after ``recent``
and ``w`` (``model/blend_weight.py``); 0 turns it off. The window is the last ``MAX_RECENT``
items, or the whole encoded session (``MAX_OWN``) where validation says so: on logs whose
shoppers go back to items seen long before in a long visit (SKNN, which weighs a session's
items alike, leads V-SKNN there), at the cost of a larger merge per answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "ItemNeighbours",
    "item_knn",
    "item_blended_search",
    "last_known_rows",
    "merged_entries",
    "recent_weights",
    "own_weights",
    "DEFAULT_CANDIDATES",
    "MAX_OWN",
    "MAX_RECENT",
    "OLDER_NEIGHBOURS",
]

# The model's top 20 (the answer's k) normalise its softmax: no more index breadth than the model
# alone needs, so HNSW keeps the ef validated for the model.
DEFAULT_CANDIDATES = 20
# Neighbours kept per item: the blend gathers their vectors per answer, so its cost grows with it.
DEFAULT_NEIGHBOURS = 30
# The most recent known items whose table rows the blend can use (up to 5 of them), and the
# session's own items' default window (``own_window``).
MAX_RECENT = 10
# The widest window of the session's own items: the positions the encoder reads (its max_len),
# which is also what encode_sequences keeps of each session's known items.
MAX_OWN = 50
# Neighbours of each earlier item in the blend (the newest item contributes all of its row): the
# blend's cost grows with the entries it gathers, and the tail of an older item's row, weighted
# down twice, rarely reaches a top 20.
OLDER_NEIGHBOURS = 10


def item_knn(
    clicks: np.ndarray,
    offsets: np.ndarray,
    n: int,
    n_neighbors: int = 100,
    lmbd: float = 20.0,
    alpha: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item-KNN over sessions given as item ids 0..n-1 (``clicks``, session ``offsets``).

    Returns CSR ``(indptr (n + 1,), indices, sims)``: item i's best ``n_neighbors`` neighbours,
    best first (ties: lower id). sim(i, j) = sessions with both / (support_i^alpha *
    support_j^(1 - alpha)), support = clicks + ``lmbd`` (session-rec's ``iknn``).
    """
    session_of_click = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    # Each session's distinct items (CSR), then every (click on i, distinct item j) pair of a
    # session: session-rec's counts (its `iarray[items_of_session] += 1` adds once per item).
    distinct = np.unique(session_of_click * n + clicks)
    d_session, d_item = np.divmod(distinct, n)
    d_offsets = np.searchsorted(d_session, np.arange(offsets.size))
    reps = np.diff(d_offsets)[session_of_click]  # (C,) distinct items in the click's session
    left = np.repeat(clicks, reps)
    block_start = np.repeat(np.cumsum(reps) - reps, reps)
    right = d_item[
        np.repeat(d_offsets[session_of_click], reps) + (np.arange(left.size) - block_start)
    ]
    keep = left != right
    pair_keys, counts = np.unique(left[keep] * n + right[keep], return_counts=True)
    i, j = np.divmod(pair_keys, n)
    support = np.bincount(clicks, minlength=n).astype(np.float64) + lmbd
    sims = counts / (support[i] ** alpha * support[j] ** (1.0 - alpha))
    order = np.lexsort((j, -sims, i))  # by (i, -sim, j); keep the first n_neighbors of each i
    i, j, sims = i[order], j[order], sims[order]
    row_start = np.searchsorted(i, np.arange(n))
    keep = (np.arange(i.size) - row_start[i]) < n_neighbors
    i, j, sims = i[keep], j[keep], sims[keep]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(i, minlength=n), out=indptr[1:])
    return indptr, j, sims


class ItemNeighbours:
    """Each item row's best neighbour rows and normalised scores, ``(n_items + 1, N)`` each."""

    def __init__(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        candidates: int = DEFAULT_CANDIDATES,
        recent: int = 1,
        repeat: float = 0.0,
        repeat_decay: float = 1.0,
        own_window: int = MAX_RECENT,
    ) -> None:
        if rows.shape != scores.shape or rows.ndim != 2:
            raise ValueError(
                "rows and scores must both be (n_items + 1, N); "
                f"got {rows.shape} and {scores.shape}"
            )
        self.rows = rows.astype(np.int64, copy=False)
        self.scores = scores.astype(np.float32, copy=False)
        # Index candidates the model's softmax is normalised over: part of the blend's definition
        # (its weight is tuned with it), and what the index must return (its ef floor).
        self.candidates = int(candidates)
        if not 1 <= recent <= MAX_RECENT:
            raise ValueError(f"recent must be in [1, {MAX_RECENT}]; got {recent}")
        self.recent = int(recent)  # the session's last known items whose rows are blended
        if repeat < 0 or not 0 < repeat_decay <= 1:
            raise ValueError(
                f"repeat must be >= 0 and repeat_decay in (0, 1]; got {repeat}, {repeat_decay}")
        # The session's own last MAX_RECENT items, each occurrence decay^steps back, normalised
        # to sum 1, weighted by ``repeat`` (0 = off): shoppers come back to what they saw.
        self.repeat = float(repeat)
        self.repeat_decay = float(repeat_decay)
        if not 1 <= own_window <= MAX_OWN:
            raise ValueError(f"own_window must be in [1, {MAX_OWN}]; got {own_window}")
        self.own_window = int(own_window)  # the session's last known items the share covers

    def with_recent(self, recent: int) -> ItemNeighbours:
        """The same table blending the session's last ``recent`` known items."""
        return ItemNeighbours(self.rows, self.scores, self.candidates, recent, self.repeat,
                              self.repeat_decay, self.own_window)

    def shaped_like(self, other: ItemNeighbours) -> ItemNeighbours:
        """The same table blended as ``other`` is: its recent items, repeat, decay and window."""
        return ItemNeighbours(self.rows, self.scores, self.candidates, other.recent, other.repeat,
                              other.repeat_decay, other.own_window)

    def with_repeat(
        self, repeat: float, decay: float | None = None, window: int | None = None
    ) -> ItemNeighbours:
        """The same table with the session's own items weighted ``repeat`` (decay per step back),
        over its last ``window`` known items."""
        return ItemNeighbours(self.rows, self.scores, self.candidates, self.recent, repeat,
                              self.repeat_decay if decay is None else decay,
                              self.own_window if window is None else window)

    @property
    def n_items(self) -> int:
        return int(self.rows.shape[0]) - 1

    @classmethod
    def build(
        cls,
        sessions: Sequence[np.ndarray],
        n_items: int,
        n_neighbors: int = DEFAULT_NEIGHBOURS,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> ItemNeighbours:
        """From training sessions as arrays of item rows (1..n_items; 0 = unknown, skipped)."""
        known = [s[s > 0] - 1 for s in (np.asarray(x, np.int64) for x in sessions)]
        offsets = np.zeros(len(known) + 1, np.int64)
        np.cumsum([len(s) for s in known], out=offsets[1:])
        clicks = np.concatenate(known) if known else np.zeros(0, np.int64)
        indptr, cols, sims = item_knn(clicks, offsets, n_items, n_neighbors)
        rows = np.zeros((n_items + 1, n_neighbors), np.int64)
        scores = np.zeros((n_items + 1, n_neighbors), np.float32)
        counts = np.diff(indptr)
        item = np.repeat(np.arange(n_items), counts)
        slot = np.arange(cols.size) - np.repeat(indptr[:-1], counts)
        rows[item + 1, slot] = cols + 1
        totals = np.bincount(item, weights=sims, minlength=n_items)
        scores[item + 1, slot] = sims / totals[item]
        return cls(rows, scores, candidates)

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:
            np.savez(
                f,
                rows=self.rows.astype(np.int32),
                scores=self.scores,
                candidates=self.candidates,
                recent=self.recent,
                repeat=self.repeat,
                repeat_decay=self.repeat_decay,
                own_window=self.own_window,
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ItemNeighbours:
        with np.load(path) as z:
            recent = int(z["recent"]) if "recent" in z.files else 1  # older tables: last item only
            repeat = float(z["repeat"]) if "repeat" in z.files else 0.0  # older tables: none
            decay = float(z["repeat_decay"]) if "repeat_decay" in z.files else 1.0
            window = int(z["own_window"]) if "own_window" in z.files else MAX_RECENT
            return cls(z["rows"], z["scores"], int(z["candidates"]), recent, repeat, decay,
                       window)

    def describe(self) -> dict[str, Any]:
        return {
            "items": self.n_items,
            "neighbours": int(self.rows.shape[1]),
            "candidates": self.candidates,
            "recent": self.recent,
            "repeat": self.repeat,
            "repeat_decay": self.repeat_decay,
            "own_window": self.own_window,
        }


def last_known_rows(sessions: Sequence[np.ndarray], m: int = 1) -> np.ndarray:
    """(B, m) each session's last ``m`` item rows the model knows, newest first (0 = none)."""
    out = np.zeros((len(sessions), m), np.int64)
    for b, s in enumerate(sessions):
        known = np.asarray(s)[np.asarray(s) > 0][::-1][:m]
        out[b, : len(known)] = known
    return out


def recent_weights(last_rows: np.ndarray) -> np.ndarray:
    """(B, m) weights of each session's recent items: 1, 0.9, 0.8, ... where there is an item,
    normalised to sum 1 per session (all 0 without any)."""
    m = last_rows.shape[1]
    w = np.where(last_rows > 0, 1.0 - 0.1 * np.arange(m), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return w / np.where(total > 0, total, 1.0)


def own_weights(last_rows: np.ndarray, decay: float) -> np.ndarray:
    """(B, m) float32 weights of each session's own recent items: decay^i where there is an
    item (i steps back, newest first), normalised to sum 1 per session (all 0 without any)."""
    w = np.where(last_rows > 0, decay ** np.arange(last_rows.shape[1], dtype=np.float64), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return (w / np.where(total > 0, total, 1.0)).astype(np.float32)


def merged_entries(rows: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each row's repeated items summed into one entry (the others become row 0, score 0), in
    each of the ``scores`` arrays; the entries come out in item order. One sort of (item,
    column) packed keys: cheaper than argsort."""
    k = rows.shape[1]
    shift = max(int(k).bit_length(), 1)
    key = np.sort((rows << shift) + np.arange(k), axis=1)
    r, col = key >> shift, key & ((1 << shift) - 1)
    first = np.ones(r.shape, bool)
    first[:, 1:] = r[:, 1:] != r[:, :-1]
    starts = np.flatnonzero(first.ravel())
    out = []
    for score in scores:
        sc = np.take_along_axis(score, col, axis=1)
        summed = np.zeros(sc.size, sc.dtype)
        summed[starts] = np.add.reduceat(sc.ravel(), starts)
        out.append(summed.reshape(sc.shape))
    return (np.where(first, r, 0), *out)


def item_blended_search(
    index: Any,
    queries: np.ndarray,
    last_rows: np.ndarray,
    k: int,
    table: ItemNeighbours,
    item_vectors: np.ndarray,
    scale: float,
    weight: float,
    candidates: int,
    exclude: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like ``index.search(queries, k, exclude)``, with ``table``'s neighbours of each session's
    last known items blended in, for a whole batch at once. ``last_rows``: (B,) or (B, m) rows,
    newest first, 0 = none (:func:`last_known_rows`); the table's ``recent`` first are used.

    The softmax (``scale``) is normalised over the index's ``candidates``; neighbours the index
    did not return get their inner product from ``item_vectors``. An item in both lists keeps
    its blended (larger) entry. Rows in ``exclude`` never appear; row 0 / -inf pad.
    """
    rows, cos = index.search(queries, max(k, candidates), exclude)  # (B, C) each
    valid = rows > 0
    top = np.where(valid, cos, -np.inf).max(axis=1, keepdims=True)  # (B, 1)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.where(valid, np.exp(scale * (cos - top)), 0.0)  # (B, C)
    z = p.sum(axis=1, keepdims=True)
    z[z == 0] = 1.0
    last = last_rows.reshape(len(last_rows), -1)[:, : table.recent]  # (B, m), newest first
    if last.shape[1] == 1:
        nb_rows, nb_scores = table.rows[last[:, 0]], table.scores[last[:, 0]]  # (B, N) each
        nb_rows = np.where(last > 0, nb_rows, 0)
    else:  # the newest item's row, the earlier items' best few, weighted; one entry per item
        w = recent_weights(last).astype(np.float32)  # (B, m)
        older = last[:, 1:]
        nb_rows = np.concatenate(
            [
                np.where(last[:, :1] > 0, table.rows[last[:, 0]], 0),
                np.where(older[:, :, None] > 0, table.rows[older, :OLDER_NEIGHBOURS], 0).reshape(
                    len(last), -1
                ),
            ],
            axis=1,
        )
        nb_scores = np.concatenate(
            [
                table.scores[last[:, 0]] * w[:, :1],
                (table.scores[older, :OLDER_NEIGHBOURS] * w[:, 1:, None]).reshape(len(last), -1),
            ],
            axis=1,
        )
        if table.repeat <= 0:  # else merged once below, with the session's own items
            nb_rows, nb_scores = merged_entries(nb_rows, nb_scores)
    own_scores: np.ndarray | float = 0.0
    if table.repeat > 0:  # the session's own items: each occurrence decay^steps back
        # Always the window's columns, whatever the batch: an entry's place in the merge (which
        # breaks exact ties) must not depend on which sessions share its micro-batch.
        own = last_rows.reshape(len(last_rows), -1)[:, : table.own_window]
        zeros = np.zeros(nb_scores.shape, np.float32)
        nb_rows, nb_scores, own_scores = merged_entries(
            np.concatenate([nb_rows, own], axis=1),
            np.concatenate([nb_scores, np.zeros(own.shape, np.float32)], axis=1),
            np.concatenate([zeros, table.repeat * own_weights(own, table.repeat_decay)], axis=1),
        )
    if exclude is not None:
        for b, ex in enumerate(exclude):
            if ex is not None and len(ex):
                nb_rows[b, np.isin(nb_rows[b], ex)] = 0
    nb_valid = nb_rows > 0
    nb_cos = np.matmul(item_vectors[nb_rows], queries[:, :, None])[..., 0]  # (B, N); einsum: 2x
    nb_p = np.exp(scale * (nb_cos - top))  # <= e^(2 scale): cosines are in [-1, 1]
    blended = (1.0 - weight) * nb_p / z + weight * nb_scores + own_scores
    index_part = (1.0 - weight) * p / z
    # An index candidate that is also a neighbour: its neighbour entry holds the larger score.
    dup = (rows[:, :, None] == np.where(nb_valid, nb_rows, -1)[:, None, :]).any(axis=2)  # (B, C)
    all_rows = np.concatenate([rows, nb_rows], axis=1)
    all_scores = np.concatenate(
        [np.where(valid & ~dup, index_part, -np.inf), np.where(nb_valid, blended, -np.inf)], axis=1
    )
    if all_scores.shape[1] > k:  # the k best unordered, then ordered: cheaper than a full sort
        part = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(all_scores, part, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
    else:
        best = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    out_rows = np.take_along_axis(all_rows, best, axis=1)
    out_scores = np.take_along_axis(all_scores, best, axis=1).astype(np.float32)
    out_rows[~np.isfinite(out_scores)] = 0
    return out_rows, out_scores
