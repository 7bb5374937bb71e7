"""Evaluation: ranking metrics, reference baselines, the offline harness every model goes through,
and the streaming replay through broker and worker."""

from .baselines import ItemKNN, Popularity, Recommender, SessionKNN, evaluate
from .cases import EvalCase, prefix_states, split_test_events
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
from .offline import (
    BASELINES,
    EvaluateOptions,
    OfflineResult,
    encode_states,
    evaluate_baselines,
    evaluate_bundle,
    load_split,
    rank_cases,
    run_evaluation,
)

__all__ = [
    "BASELINES",
    "EvalCase",
    "EvaluateOptions",
    "ItemKNN",
    "OfflineResult",
    "Popularity",
    "RankingAccumulator",
    "Recommender",
    "SessionKNN",
    "coverage_at_k",
    "encode_states",
    "evaluate",
    "evaluate_baselines",
    "evaluate_bundle",
    "hit_rate_at_k",
    "hit_rate_by_length",
    "load_split",
    "mrr_at_k",
    "ndcg_at_k",
    "prefix_states",
    "rank_cases",
    "rank_of_target",
    "ranks_of_targets",
    "run_evaluation",
    "split_test_events",
    "target_ranks",
    "top_k",
]
