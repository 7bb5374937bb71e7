"""The guard before a new bundle is published: the candidate must not score worse than the
serving model, by more than ``margin`` points of HR@20 or of MRR@20, on the newest held-out
sessions of the stream (sessions neither model trained on), each scored as served (with its
item-neighbour blend, when the bundle has one).

"Worse" is decided with the held-out slice's noise in view: a short update interval leaves a few
hundred cases, where one model's HR@20 moves by 2-3 points from sampling alone, and a guard that
refused every shortfall beyond 0.5 points refused a third of the updates on the drifting stream
(session 11) though the candidates were no worse on average. The two models rank the same cases,
so the per-case differences give the shortfall's standard error; a metric counts as worse when
its shortfall exceeds ``margin`` by more than ``z`` standard errors (one-sided, 95% at the
default 1.645; ``z`` 0 is the plain margin)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.features import ItemVocab
from ..model.examples import Session
from ..model.sasrec import SessionTransformer
from .cases import ItemBlend, hr_mrr, prefix_cases, ranks

__all__ = ["GuardDecision", "guard", "DEFAULT_MARGIN", "DEFAULT_Z"]

DEFAULT_MARGIN = 0.5  # points (%) of HR@20 and of MRR@20
DEFAULT_Z = 1.645  # standard errors of the shortfall beyond the margin (one-sided 95%)


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
    hr_se: float = 0.0  # standard error (points) of the candidate's HR@20 minus the serving one's
    mrr_se: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def guard(
    candidate: tuple[SessionTransformer, ItemVocab],
    serving: tuple[SessionTransformer, ItemVocab],
    held_out: Sequence[Session],
    margin: float = DEFAULT_MARGIN,
    blends: tuple[ItemBlend | None, ItemBlend | None] = (None, None),
    z: float = DEFAULT_Z,
) -> GuardDecision:
    """Score both models on every prefix of ``held_out`` (an item a model does not know is its
    miss) and decide (see the module's doc for ``margin`` and ``z``). ``blends``: each one's
    item-neighbour blend, so each is scored as it is (or would be) served. With no case to
    score, nothing is published."""
    scores, per_case = [], []
    for (model, vocab), blend in zip((candidate, serving), blends):
        cases = prefix_cases(held_out, vocab, model.config.query_buckets, model.config.max_len)
        r = ranks(model, cases, blend)
        scores.append(hr_mrr(r))
        per_case.append((100.0 * (r > 0), np.where(r > 0, 100.0 / np.maximum(r, 1), 0.0)))
    (c_hr, c_mrr), (s_hr, s_mrr) = scores
    n = len(per_case[1][0])
    if n == 0:
        return GuardDecision(
            False, c_hr, c_mrr, s_hr, s_mrr, 0, margin, "no held-out case to score"
        )
    hr_se, mrr_se = (_paired_se(per_case[0][i], per_case[1][i]) for i in (0, 1))
    worse = [
        name
        for name, c, s_, se in (("HR@20", c_hr, s_hr, hr_se), ("MRR@20", c_mrr, s_mrr, mrr_se))
        if c < s_ - margin - z * se
    ]
    noise = f" (beyond {z:g} standard errors of the difference)" if z else ""
    reason = (
        f"{' and '.join(worse)} more than {margin:g} points below the serving model{noise}"
        if worse
        else f"within {margin:g} points of the serving model or better{noise}"
    )
    return GuardDecision(
        not worse, c_hr, c_mrr, s_hr, s_mrr, n, margin, reason, round(hr_se, 3), round(mrr_se, 3)
    )


def _paired_se(candidate: np.ndarray, serving: np.ndarray) -> float:
    """Standard error of mean(candidate) - mean(serving) over the same cases (unpaired when the
    two case lists differ in length)."""
    if len(candidate) == len(serving) and len(candidate) > 1:
        return float(np.std(candidate - serving, ddof=1) / np.sqrt(len(candidate)))
    var = sum(float(np.var(x, ddof=1)) / len(x) for x in (candidate, serving) if len(x) > 1)
    return float(np.sqrt(var))
