"""Validation: the held-out sessions' last items, HR@20 / MRR@20, the selection rule, HNSW ef.

The last ``valid_fraction`` of training sessions (chronological order) is held out; each one's
last known item is predicted from the events before it. No test data is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.features import ItemVocab
from .examples import Example, Rows, Session, featurize_sessions, pad_examples
from .sasrec import SessionTransformer

if TYPE_CHECKING:
    from ..core.seams import CandidateIndex
    from ..runtime.index import HnswIndex

    Ranker = Callable[[CandidateIndex, np.ndarray], np.ndarray]

__all__ = ["K", "valid_cases", "rank_metrics", "evaluate", "session_scores", "popularity_metrics",
           "selection_score", "validation_set", "held_out_cases", "validation_queries", "choose_ef", "EF_CANDIDATES", "MAX_HNSW_COST"]

K = 20


def valid_cases(featurized: list[Rows], max_len: int) -> tuple[list[Rows], np.ndarray]:
    """Every (prefix, next known item's column) of each held-out session, as the test protocol
    scores a test session (SR-GNN's augmentation): not only its last item, so short prefixes
    weigh in selection as they do in the test set."""
    prefixes, targets = [], []
    for items, types, queries in featurized:
        for j in np.flatnonzero(items > 0).tolist():
            if j == 0:
                continue
            start = max(0, j - max_len)
            prefixes.append((items[start:j], types[start:j], queries[start:j]))
            targets.append(items[j] - 1)
    return prefixes, np.asarray(targets, np.int64)


def rank_metrics(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Sums of HR@K and reciprocal rank@K for (N, n_items) scores."""
    k = min(K, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, K)
    hit = top == targets.unsqueeze(1)  # (N, K)
    ranks = torch.arange(1, k + 1, dtype=torch.float32)
    return float(hit.any(dim=1).sum()), float((hit.float() / ranks).sum())


def evaluate(
    model: SessionTransformer, prefixes: list[Rows], targets: np.ndarray, batch_size: int = 256
) -> tuple[float, float]:
    """HR@20 and MRR@20 of ``model`` predicting each target column from its prefix."""
    if len(targets) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    hr = mrr = 0.0
    with torch.no_grad():
        for s in range(0, len(targets), batch_size):
            batch = [Example(*p, np.zeros(len(p[0]), np.int64)) for p in prefixes[s : s + batch_size]]
            items, types, queries, _ = pad_examples(batch)
            scores = session_scores(model, items, types, queries)
            h, m = rank_metrics(scores, torch.from_numpy(targets[s : s + batch_size]))
            hr, mrr = hr + h, mrr + m
    model.train(was_training)
    return hr / len(targets), mrr / len(targets)


def session_scores(
    model: SessionTransformer, items: torch.Tensor, types: torch.Tensor, queries: torch.Tensor
) -> torch.Tensor:
    """(B, n_items) logits of the next item for left-padded sessions, repeat bonuses included."""
    cfg = model.config
    h, session = model.session_states(items, types, queries, last_only=True)  # (B, 1, D) each
    scores = model.logits(session[:, -1])  # (B, n_items)
    if cfg.repeat:
        cols, bonus = model.repeat_bonus(h, items, last_only=True)  # (B, 1, L)
        cols, bonus = cols[:, 0], bonus[:, 0]
        scores.scatter_add_(1, cols.clamp(min=0), torch.where(cols >= 0, bonus, 0.0))
    return scores


def popularity_metrics(popularity: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    if len(targets) == 0:
        return math.nan, math.nan
    scores = torch.from_numpy(popularity[1:].astype(np.float32)).expand(len(targets), -1)
    hr, mrr = rank_metrics(scores, torch.from_numpy(targets))
    return hr / len(targets), mrr / len(targets)


def selection_score(hr20: float, mrr20: float) -> float:
    """The model-selection rule: validation HR@20 + MRR@20, equal weights.

    Both metrics count: an epoch that trades a little HR@20 for more MRR@20 (or back) wins
    when the sum grows. NaN (no validation cases) never wins.
    """
    return -math.inf if math.isnan(hr20) or math.isnan(mrr20) else hr20 + mrr20


EF_CANDIDATES = (20, 32, 48, 64, 96, 128, 192, 256, 384)
MAX_HNSW_COST = 0.1  # points of HR@20 and MRR@20 that HNSW may cost against exact search


def validation_set(
    model: SessionTransformer, sessions: Sequence[Session], vocab: ItemVocab, valid_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """(session vectors (N, D), target columns (N,)) of the held-out sessions' last items: the
    same cases training selected its epoch on."""
    n_valid = int(len(sessions) * valid_fraction)
    if n_valid == 0:
        return np.zeros((0, model.config.dim), np.float32), np.zeros(0, np.int64)
    cfg = model.config
    prefixes, targets = held_out_cases(sessions, n_valid, vocab, cfg.query_buckets, cfg.max_len)
    return validation_queries(model, prefixes), targets


def held_out_cases(
    sessions: Sequence[Session], n_valid: int, vocab: ItemVocab, query_buckets: int, max_len: int
) -> tuple[list[Rows], np.ndarray]:
    """:func:`valid_cases` of the last ``n_valid`` sessions, featurised as serving maps them."""
    featurized = featurize_sessions(sessions[len(sessions) - n_valid :], vocab, query_buckets)
    return valid_cases(featurized, max_len)


def validation_queries(
    model: SessionTransformer, prefixes: Sequence[Rows], batch_size: int = 512
) -> np.ndarray:
    """(N, D) float32 session vectors of validation prefixes, as the exported encoder gives them."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(prefixes), batch_size):
            batch = [Example(*p, np.zeros(len(p[0]), np.int64)) for p in prefixes[s : s + batch_size]]
            items, types, queries, _ = pad_examples(batch)
            out.append(model.session_vector(items, types, queries).numpy().astype(np.float32))
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.config.dim), np.float32)


def _index_top(index: CandidateIndex, queries: np.ndarray) -> np.ndarray:
    return index.search(queries, K)[0]


def _search_metrics(
    index: CandidateIndex, queries: np.ndarray, targets: np.ndarray, rank: Ranker = _index_top
) -> tuple[float, float]:
    rows = rank(index, queries)
    hit = rows == (targets + 1)[:, None]  # targets are columns (row - 1)
    ranks = np.arange(1, K + 1)
    return 100 * float(hit.any(1).mean()), 100 * float((hit / ranks).sum(1).mean())


def choose_ef(
    hnsw: HnswIndex, exact: CandidateIndex, queries: np.ndarray, targets: np.ndarray,
    candidates: Sequence[int] = EF_CANDIDATES, max_cost: float = MAX_HNSW_COST,
    rank: Ranker = _index_top,
) -> tuple[int, list[dict[str, float]]]:
    """The smallest HNSW ``ef`` whose HR@20 and MRR@20 on the validation queries are at most
    ``max_cost`` points below exact search; and the measurements (ef, HR/MRR cost in points).
    ``rank(index, queries)`` gives each query's top K rows through ``index``: the index's own
    top K, or the answer as served (a blend over the index's candidates).
    Without validation queries, the largest candidate."""
    if len(queries) == 0:
        return max(candidates), []
    want_hr, want_mrr = _search_metrics(exact, queries, targets, rank)
    tried = []
    for ef in sorted(candidates):
        hnsw.ef = ef
        hr, mrr = _search_metrics(hnsw, queries, targets, rank)
        tried.append({"ef": ef, "hr@20_cost": round(want_hr - hr, 4), "mrr@20_cost": round(want_mrr - mrr, 4)})
        if want_hr - hr <= max_cost and want_mrr - mrr <= max_cost:
            return ef, tried
    return max(candidates), tried
