"""The guard before a new bundle is published: the candidate must not score worse than the
serving model, by more than ``margin`` points of HR@20 or of MRR@20, on the newest held-out
sessions of the stream (sessions neither model trained on), each scored as served (with its
item-neighbour blend, when the bundle has one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..core.features import ItemVocab
from ..model.examples import Session
from ..model.sasrec import SessionTransformer
from .cases import ItemBlend, hr_mrr, prefix_cases, ranks

__all__ = ["GuardDecision", "guard", "DEFAULT_MARGIN"]

DEFAULT_MARGIN = 0.5  # points (%) of HR@20 and of MRR@20


@dataclass(frozen=True)
class GuardDecision:
    publish: bool
    candidate_hr: float
    candidate_mrr: float
    serving_hr: float
    serving_mrr: float
    cases: int
    margin: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def guard(
    candidate: tuple[SessionTransformer, ItemVocab],
    serving: tuple[SessionTransformer, ItemVocab],
    held_out: Sequence[Session],
    margin: float = DEFAULT_MARGIN,
    blends: tuple[ItemBlend | None, ItemBlend | None] = (None, None),
) -> GuardDecision:
    """Score both models on every prefix of ``held_out`` (an item a model does not know is its
    miss) and decide. ``blends``: each one's item-neighbour blend, so each is scored as it is (or
    would be) served. With no case to score, nothing is published."""
    scores = []
    n = 0
    for (model, vocab), blend in zip((candidate, serving), blends):
        cases = prefix_cases(held_out, vocab, model.config.query_buckets, model.config.max_len)
        n = len(cases)
        scores.append(hr_mrr(ranks(model, cases, blend)))
    (c_hr, c_mrr), (s_hr, s_mrr) = scores
    if n == 0:
        return GuardDecision(
            False, c_hr, c_mrr, s_hr, s_mrr, 0, margin, "no held-out case to score"
        )
    worse = [
        name for name, c, s in (("HR@20", c_hr, s_hr), ("MRR@20", c_mrr, s_mrr)) if c < s - margin
    ]
    reason = (
        f"{' and '.join(worse)} more than {margin:g} points below the serving model"
        if worse
        else f"within {margin:g} points of the serving model or better"
    )
    return GuardDecision(not worse, c_hr, c_mrr, s_hr, s_mrr, n, margin, reason)
