"""Offline evaluation: ranking metrics, reference baselines and the harness every model goes through."""

from .baselines import ItemKNN, Popularity, Recommender, SessionKNN, evaluate
from .metrics import (
    RankingAccumulator,
    coverage_at_k,
    hit_rate_at_k,
    hit_rate_by_length,
    mrr_at_k,
    ndcg_at_k,
    rank_of_target,
    ranks_of_targets,
    target_ranks,
    top_k,
)

__all__ = [
    "ItemKNN",
    "Popularity",
    "RankingAccumulator",
    "Recommender",
    "SessionKNN",
    "coverage_at_k",
    "evaluate",
    "hit_rate_at_k",
    "hit_rate_by_length",
    "mrr_at_k",
    "ndcg_at_k",
    "rank_of_target",
    "ranks_of_targets",
    "target_ranks",
    "top_k",
]
