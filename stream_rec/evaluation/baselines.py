"""Reference recommenders from the session-based literature, and the harness every model goes through.

- :class:`Popularity` (POP): the most clicked training items, whatever the session.
- :class:`ItemKNN`: neighbours of the session's last item by session co-occurrence, as in
  Hidasi et al. (ICLR'16) and Ludewig & Jannach's ``session-rec`` ``iknn.py``:
  ``sim(i, j) = c(i, j) / ((n_i + lambda)^alpha * (n_j + lambda)^(1 - alpha))`` where n_i counts
  clicks on i and c(i, j) the clicks on i in sessions that hold j; ``lambda = 0, alpha = 0.5`` is
  the cosine of the two items' session vectors (exactly so when no session repeats an item).
- :class:`SessionKNN` (V-SKNN, Ludewig & Jannach's ``vsknn.py`` defaults): the most similar recent
  training sessions, the current session's items weighted by position.

Each has ``fit(train_sessions)`` and ``recommend(prefix, k) -> [(item_id, score), ...]`` (at most
k items, best first; fewer when the model has nothing more to say). Plain numpy.
:func:`evaluate` scores any object with such a ``recommend`` on (prefix, target) pairs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..core.cooccurrence import SessionNeighbours
from ..core.item_neighbours import item_knn
from .metrics import RankingAccumulator, top_k

__all__ = ["Recommender", "Popularity", "ItemKNN", "SessionKNN", "evaluate"]


class Recommender(Protocol):
    def recommend(self, prefix: Sequence[str], k: int = 20) -> list[tuple[str, float]]: ...


class _Vocab:
    """Item id <-> row 0..n-1, rows in order of first appearance in training."""

    def __init__(self, sessions: Sequence[Sequence[str]]):
        self.ids: list[str] = list(dict.fromkeys(i for s in sessions for i in s))
        self.row: dict[str, int] = {item: r for r, item in enumerate(self.ids)}

    def rows(self, items: Sequence[str]) -> np.ndarray:
        """Rows of the known items, unknown ones left out."""
        row = self.row
        return np.fromiter((row[i] for i in items if i in row), dtype=np.int64)

    def flat(self, sessions: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(rows of every click, session offsets (S + 1,))."""
        lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
        offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        row = self.row
        clicks = np.fromiter(
            (row[i] for s in sessions for i in s), dtype=np.int64, count=int(offsets[-1])
        )
        return clicks, offsets


def _not_fitted(name: str) -> RuntimeError:
    return RuntimeError(f"{name}.recommend called before fit(train_sessions)")


class Popularity:
    """POP: the k most clicked training items (ties: first seen first)."""

    def __init__(self) -> None:
        self._ranked: list[tuple[str, float]] | None = None
        self.n_items = 0

    def fit(self, train_sessions: Sequence[Sequence[str]]) -> Popularity:
        vocab = _Vocab(train_sessions)
        clicks, _ = vocab.flat(train_sessions)
        counts = np.bincount(clicks, minlength=len(vocab.ids)).astype(np.float64)
        order = top_k(counts, len(counts))
        self._ranked = [(vocab.ids[r], float(counts[r])) for r in order]
        self.n_items = len(vocab.ids)
        return self

    def recommend(self, prefix: Sequence[str], k: int = 20) -> list[tuple[str, float]]:
        if self._ranked is None:
            raise _not_fitted("Popularity")
        return self._ranked[:k]


class ItemKNN:
    """Item-to-item neighbours by session co-occurrence; recommends the last item's neighbours."""

    def __init__(self, n_neighbors: int = 100, lmbd: float = 20.0, alpha: float = 0.5):
        self.n_neighbors = n_neighbors
        self.lmbd = lmbd
        self.alpha = alpha
        self.n_items = 0
        self._vocab: _Vocab | None = None
        # Neighbour lists, CSR: row i's neighbours are indices[indptr[i]:indptr[i+1]], best first.
        self._indptr = np.zeros(1, dtype=np.int64)
        self._indices = np.zeros(0, dtype=np.int64)
        self._sims = np.zeros(0, dtype=np.float64)

    def fit(self, train_sessions: Sequence[Sequence[str]]) -> ItemKNN:
        vocab = _Vocab(train_sessions)
        n = len(vocab.ids)
        clicks, offsets = vocab.flat(train_sessions)
        self._indptr, self._indices, self._sims = item_knn(
            clicks, offsets, n, self.n_neighbors, self.lmbd, self.alpha)
        self._vocab, self.n_items = vocab, n
        return self

    def neighbors(self, item_id: str) -> list[tuple[str, float]]:
        """The item's neighbours with their similarities, best first ([] for an unknown item)."""
        if self._vocab is None:
            raise _not_fitted("ItemKNN")
        row = self._vocab.row.get(item_id)
        if row is None:
            return []
        lo, hi = self._indptr[row], self._indptr[row + 1]
        ids = self._vocab.ids
        return [
            (ids[c], float(s)) for c, s in zip(self._indices[lo:hi], self._sims[lo:hi], strict=True)
        ]

    def recommend(self, prefix: Sequence[str], k: int = 20) -> list[tuple[str, float]]:
        if not prefix:
            return []
        return self.neighbors(prefix[-1])[:k]


class SessionKNN:
    """V-SKNN: score items of the ``k_sessions`` training sessions most similar to the prefix.

    Candidates are the ``sample_size`` most recent training sessions sharing an item with the
    prefix (training sessions are taken to be in time order). A candidate's similarity is the sum,
    over the prefix's distinct items it contains, of the item's weight: its last position in the
    prefix (1-based) over the prefix length ("div" weighting; session-rec divides by the number of
    distinct items instead, the same ranking). A neighbour contributes
    ``similarity / step`` to each of its distinct items, where step counts back from the end of the
    prefix to the most recent item the two share. With ``position_weights=False`` this is plain
    SKNN: weights 1, no decay, similarity = shared items / sqrt(|prefix| * |neighbour|) (cosine).
    """

    def __init__(
        self, k_sessions: int = 100, sample_size: int = 1000, position_weights: bool = True
    ):
        self.k_sessions = k_sessions
        self.sample_size = sample_size
        self.position_weights = position_weights
        self.n_items = 0
        self._vocab: _Vocab | None = None
        self._neighbours: SessionNeighbours | None = None  # V-SKNN (position_weights)

    def fit(self, train_sessions: Sequence[Sequence[str]]) -> SessionKNN:
        vocab = _Vocab(train_sessions)
        n = len(vocab.ids)
        # Distinct items per session (CSR) and, inverted, the sessions holding each item (sorted).
        sets = [np.unique(vocab.rows(s)) for s in train_sessions]
        lengths = np.fromiter((x.size for x in sets), dtype=np.int64, count=len(sets))
        self._s_indptr = np.zeros(len(sets) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self._s_indptr[1:])
        self._s_items = np.concatenate(sets) if sets else np.zeros(0, dtype=np.int64)
        self._s_len = lengths.astype(np.float64)
        session_of = np.repeat(np.arange(len(sets)), lengths)
        order = np.lexsort((session_of, self._s_items))
        self._i_sessions = session_of[order]
        self._i_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(self._s_items, minlength=n), out=self._i_indptr[1:])
        self._vocab, self.n_items = vocab, n
        # V-SKNN itself is the serving blend's SessionNeighbours (rows shifted by one: 0 = unknown).
        self._neighbours = SessionNeighbours(
            self._s_indptr, self._s_items + 1, np.concatenate(([0], self._i_indptr)), self._i_sessions,
            k_sessions=self.k_sessions, sample_size=self.sample_size,
        ) if self.position_weights else None
        return self

    def recommend(self, prefix: Sequence[str], k: int = 20) -> list[tuple[str, float]]:
        if self._vocab is None:
            raise _not_fitted("SessionKNN")
        row = self._vocab.row
        if self._neighbours is not None:
            rows, scores = self._neighbours.scores(np.array([row.get(i, -1) + 1 for i in prefix], np.int64), k,
                                                   normalise=False)
            return [(self._vocab.ids[r - 1], float(sc)) for r, sc in zip(rows.tolist(), scores.tolist())]
        # Plain SKNN (V-SKNN is SessionNeighbours above): cosine of shared items, no decay.
        items = np.unique([row[i] for i in prefix if i in row]).astype(np.int64)
        if not len(items):
            return []
        starts, ends = self._i_indptr[items], self._i_indptr[items + 1]
        cand = np.concatenate([self._i_sessions[s:e] for s, e in zip(starts, ends, strict=True)])
        sessions, inverse = np.unique(cand, return_inverse=True)
        if sessions.size > self.sample_size:  # keep the most recent ones
            cutoff = sessions.size - self.sample_size
            keep = inverse >= cutoff
            sessions, inverse = sessions[cutoff:], inverse[keep] - cutoff
        shared = np.bincount(inverse, minlength=sessions.size).astype(np.float64)
        sims = shared / np.sqrt(len(items) * self._s_len[sessions])
        # The k most similar; ties go to the more recent session.
        best = np.lexsort((-sessions, -sims))[: self.k_sessions]
        neighbors, weights = sessions[best], sims[best]
        lo, hi = self._s_indptr[neighbors], self._s_indptr[neighbors + 1]
        scored = np.concatenate([self._s_items[a:b] for a, b in zip(lo, hi, strict=True)])
        item_rows, item_inv = np.unique(scored, return_inverse=True)
        scores = np.bincount(
            item_inv, weights=np.repeat(weights, hi - lo), minlength=item_rows.size
        )
        top = top_k(scores, k)
        ids = self._vocab.ids
        return [(ids[item_rows[t]], float(scores[t])) for t in top]


def evaluate(
    model: Recommender,
    prefixes: Sequence[Sequence[str]],
    targets: Sequence[str],
    k: int = 20,
    *,
    catalogue_size: int | None = None,
    percent: bool = False,
) -> dict[str, Any]:
    """Score ``model.recommend(prefix, k)`` against each target: the accumulator's summary
    (HR, MRR, NDCG, coverage at k, HR by prefix length) plus ``seconds`` spent recommending."""
    if len(prefixes) != len(targets):
        raise ValueError(
            f"expected one target per prefix; got {len(prefixes)} prefixes, {len(targets)} targets"
        )
    acc = RankingAccumulator(k, catalogue_size)
    t0 = time.perf_counter()
    for prefix, target in zip(prefixes, targets, strict=True):
        acc.add([item for item, _ in model.recommend(prefix, k)], target, len(prefix),
                repeat=target in prefix)
    out = acc.summary(percent=percent)
    out["seconds"] = time.perf_counter() - t0
    return out
