"""The item-neighbour blend of a new bundle: its table and its weight, chosen on validation.

The weight is chosen on the held-out sessions training selected its epoch on, with a table
built from the other training sessions only (no held-out session informs its own score), and
through the serving function itself (:func:`stream_rec.core.item_neighbours.item_blended_search`
over exact search), by the same rule as the epoch: HR@20 + MRR@20. The bundle then serves a
table built from every training session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.item_neighbours import MAX_OWN, MAX_RECENT, ItemNeighbours, item_blended_search
from ..runtime.index import ExactIndex
from .validation import K, selection_score

__all__ = [
    "BLEND_WEIGHTS", "BLEND_RECENT", "BLEND_REPEAT", "BLEND_REPEAT_DECAY", "BlendChoice",
    "choose_blend", "blend_metrics", "configs_metrics", "blended_ranker",
]

BLEND_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
BLEND_RECENT = (1, 3, 5)  # the session's last known items whose neighbours are blended
# The session's own items (ItemNeighbours.repeat) and their decay per step back.
BLEND_REPEAT = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
BLEND_REPEAT_DECAY = (1.0, 0.8, 0.5)
# The session's own items: its last MAX_RECENT, or its whole encoded window (a larger merge per
# answer, so kept only where validation gains by more than BLEND_WIDE_GAIN).
BLEND_WIDE_DECAY = (1.0, 0.9, 0.8)  # far items matter only at a slow decay
BLEND_WIDE_GAIN = 0.1  # HR@20 + MRR@20 points on validation
_CHUNK = 2048  # validation queries blended at once (the duplicate check is chunk x 100 x 100)


class _Searched:
    """An index whose search was already done: the blend re-ranks the same candidates per weight."""

    def __init__(self, rows: np.ndarray, scores: np.ndarray) -> None:
        self.rows, self.scores = rows, scores

    def search(
        self, queries: np.ndarray, k: int, exclude: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.rows, self.scores


def blend_metrics(
    queries: np.ndarray,
    targets: np.ndarray,
    last_rows: np.ndarray,
    table: ItemNeighbours,
    item_vectors: np.ndarray,
    scale: float,
    weights: Sequence[float] = BLEND_WEIGHTS,
) -> list[dict[str, float]]:
    """HR@20 and MRR@20 (%) of the blend at each weight on validation queries (exact search)."""
    return configs_metrics(queries, targets, last_rows, [(table, w) for w in weights],
                           item_vectors, scale)


def configs_metrics(
    queries: np.ndarray,
    targets: np.ndarray,
    last_rows: np.ndarray,
    configs: Sequence[tuple[ItemNeighbours, float]],
    item_vectors: np.ndarray,
    scale: float,
) -> list[dict[str, float]]:
    """HR@20 and MRR@20 (%) of each (table, weight) blend on validation queries: one exact
    search per chunk of queries, re-ranked by every configuration."""
    exact = ExactIndex(item_vectors)
    hits = np.zeros(len(configs))
    rr = np.zeros(len(configs))
    ranks = np.arange(1, K + 1)
    candidates = max((t.candidates for t, _ in configs), default=K)
    for lo in range(0, len(queries), _CHUNK):
        q, want = queries[lo : lo + _CHUNK], targets[lo : lo + _CHUNK] + 1  # columns -> rows
        searched = _Searched(*exact.search(q, max(K, candidates)))
        for i, (table, w) in enumerate(configs):
            c = max(K, table.candidates)  # the exact search's first c (views)
            rows, _ = item_blended_search(
                _Searched(searched.rows[:, :c], searched.scores[:, :c]), q,
                last_rows[lo : lo + _CHUNK], K, table, item_vectors, scale, w, table.candidates,
            )
            hit = rows == want[:, None]
            hits[i] += hit.any(axis=1).sum()
            rr[i] += (hit / ranks).sum()
    n = max(len(queries), 1)
    return [
        {"weight": w, "hr@20": round(100 * h / n, 4), "mrr@20": round(100 * r / n, 4)}
        for (_, w), h, r in zip(configs, hits, rr)
    ]


@dataclass(frozen=True)
class BlendChoice:
    """The blend chosen on validation, and every configuration tried with its figures."""

    recent: int = 1
    weight: float = 0.0
    repeat: float = 0.0
    repeat_decay: float = 1.0
    own_window: int = MAX_RECENT
    tried: list[dict[str, float]] = field(default_factory=list)

    def table(self, table: ItemNeighbours) -> ItemNeighbours:
        """``table`` shaped as chosen (its recent items, repeat and own items' window)."""
        return table.with_recent(self.recent).with_repeat(self.repeat, self.repeat_decay,
                                                          self.own_window)


def _best(tried: Sequence[dict[str, float]]) -> dict[str, float]:
    """Best HR@20 + MRR@20; ties go to the cheaper and smaller: fewer items, no repeat, less
    weight."""
    return max(tried, key=lambda t: (selection_score(t["hr@20"], t["mrr@20"]), -t["recent"],
                                     -t["own_window"], -t["repeat"],
                                     t["repeat_decay"], -t["weight"]))


def choose_blend(
    queries: np.ndarray,
    targets: np.ndarray,
    last_rows: np.ndarray,
    table: ItemNeighbours,
    item_vectors: np.ndarray,
    scale: float,
    weights: Sequence[float] = BLEND_WEIGHTS,
    recents: Sequence[int] = BLEND_RECENT,
    repeats: Sequence[float] = BLEND_REPEAT,
    decays: Sequence[float] = BLEND_REPEAT_DECAY,
) -> BlendChoice:
    """The blend with the best HR@20 + MRR@20, by coordinate ascent: the number of the
    session's last items blended and the weight (no repeat); then the session's own items'
    ``repeat`` and decay at that pair (and over the whole window, :func:`_wider`); then the
    weight again at that repeat. ``last_rows``: (N, MAX_OWN) from :func:`last_known_rows`;
    ``tried`` holds every configuration."""
    if len(queries) == 0:
        return BlendChoice()
    tried: list[dict[str, float]] = []
    windows = {MAX_RECENT}  # the own items' windows a choice may use

    def measure(configs: list[tuple[ItemNeighbours, float]]) -> dict[str, float]:
        """Score a stage's configurations (one search) and return the best so far."""
        got = configs_metrics(queries, targets, last_rows, configs, item_vectors, scale)
        tried.extend(
            {"recent": t.recent, "repeat": t.repeat, "repeat_decay": t.repeat_decay,
             "own_window": t.own_window, **m}
            for (t, _), m in zip(configs, got)
        )
        return _best([t for t in tried if t["own_window"] in windows])

    plain = table.with_repeat(0.0, 1.0)
    best = measure([(plain.with_recent(m), w) for m in recents for w in weights])
    recent, weight = int(best["recent"]), float(best["weight"])
    at = plain.with_recent(recent)
    shares = [(at.with_repeat(r, d), weight) for r in repeats if r > 0 for d in decays]
    if shares:
        best = measure(shares)
        if best["repeat"] > 0 and _longer_than_recent(last_rows):
            wide = _wider(best, at, weight, measure, tried)
            if wide is not None:
                windows, best = {MAX_RECENT, MAX_OWN}, wide
        if best["repeat"] > 0:
            chosen = at.with_repeat(best["repeat"], best["repeat_decay"], int(best["own_window"]))
            best = measure([(chosen, w) for w in weights if w != weight])
    return BlendChoice(int(best["recent"]), float(best["weight"]), float(best["repeat"]),
                       float(best["repeat_decay"]), int(best["own_window"]), tried)


def _longer_than_recent(last_rows: np.ndarray) -> bool:
    """Whether any validation session has more than MAX_RECENT known items."""
    return last_rows.shape[1] > MAX_RECENT and bool((last_rows[:, MAX_RECENT:] > 0).any())


def _wider(
    narrow: dict[str, float],
    at: ItemNeighbours,
    weight: float,
    measure: Callable[[list[tuple[ItemNeighbours, float]]], dict[str, float]],
    tried: list[dict[str, float]],
) -> dict[str, float] | None:
    """The best of the own items over the whole encoded window (MAX_OWN), at the chosen share
    and its neighbours in BLEND_REPEAT x BLEND_WIDE_DECAY, if it gains more than
    BLEND_WIDE_GAIN on validation (it costs a larger merge per answer); else None."""
    share = narrow["repeat"]
    shares = sorted({share, *(r for r in BLEND_REPEAT if r > 0 and 0.5 <= r / share <= 2)})
    measure([(at.with_repeat(r, d, MAX_OWN), weight) for r in shares for d in BLEND_WIDE_DECAY])
    top = _best([t for t in tried if t["own_window"] == MAX_OWN])
    gain = selection_score(top["hr@20"], top["mrr@20"]) - selection_score(
        narrow["hr@20"], narrow["mrr@20"])
    return top if gain > BLEND_WIDE_GAIN else None


def blended_ranker(
    last_rows: np.ndarray,
    table: ItemNeighbours,
    item_vectors: np.ndarray,
    scale: float,
    weight: float,
) -> Callable[[Any, np.ndarray], np.ndarray]:
    """``rank(index, queries)`` -> the top K rows of each query as served: the index's candidates
    blended with ``table`` at ``weight`` (``last_rows`` line up with the queries). For
    :func:`.validation.choose_ef`: HNSW's ef chosen on what the bundle serves."""

    def rank(index: Any, queries: np.ndarray) -> np.ndarray:
        out = np.zeros((len(queries), K), np.int64)
        for lo in range(0, len(queries), _CHUNK):
            out[lo : lo + _CHUNK] = item_blended_search(
                index,
                queries[lo : lo + _CHUNK],
                last_rows[lo : lo + _CHUNK],
                K,
                table,
                item_vectors,
                scale,
                weight,
                table.candidates,
            )[0]
        return out

    return rank
