"""Model selection on validation: the epoch rule and the HNSW ef rule."""

import math

import numpy as np
import pytest

pytest.importorskip("torch")

from stream_rec.model.validation import choose_ef, selection_score  # noqa: E402
from stream_rec.runtime.index import ExactIndex  # noqa: E402


def test_the_epoch_rule_weighs_hr_and_mrr_alike_and_nan_never_wins():
    assert selection_score(0.50, 0.18) > selection_score(0.505, 0.17)  # +0.5 HR does not buy -1 MRR
    assert selection_score(0.50, 0.18) < selection_score(0.49, 0.195)
    assert selection_score(math.nan, 0.2) == -math.inf


class _EfIndex:
    """An index that answers exactly from ``good_from`` on and misses every target below it."""

    def __init__(self, exact: ExactIndex, good_from: int) -> None:
        self.exact, self.good_from, self.ef = exact, good_from, 0

    def search(self, queries, k, exclude=None):
        rows, scores = self.exact.search(queries, k, exclude)
        if self.ef < self.good_from:
            rows = rows[:, ::-1].copy()  # same items, reversed: ranks change, HR stays
            rows[:, -1] = 0  # and the best item (now last) is lost
        return rows, scores


def test_choose_ef_takes_the_smallest_ef_within_a_tenth_of_a_point():
    rng = np.random.default_rng(0)
    vectors = np.vstack([np.zeros((1, 8)), rng.normal(size=(50, 8))]).astype(np.float32)
    exact = ExactIndex(vectors)
    queries = rng.normal(size=(200, 8)).astype(np.float32)
    targets = exact.search(queries, 1)[0][:, 0] - 1  # each query's best item, as a column
    ef, tried = choose_ef(_EfIndex(exact, 64), exact, queries, targets)  # type: ignore[arg-type]
    assert ef == 64
    assert [t["ef"] for t in tried] == [20, 32, 48, 64]
    assert tried[0]["hr@20_cost"] == 100.0 and tried[-1] == {
        "ef": 64,
        "hr@20_cost": 0.0,
        "mrr@20_cost": 0.0,
    }
    assert (
        choose_ef(_EfIndex(exact, 10_000), exact, queries, targets)[0] == 384
    )  # never good: the largest
    assert choose_ef(_EfIndex(exact, 1), exact, queries[:0], targets[:0]) == (384, [])


def test_choose_ef_can_rank_through_what_is_served():
    """``rank`` scores each ef on the answer as served: here a rescoring that restores the lost
    best item, so every ef passes and the smallest is taken."""
    rng = np.random.default_rng(1)
    vectors = np.vstack([np.zeros((1, 8)), rng.normal(size=(50, 8))]).astype(np.float32)
    exact = ExactIndex(vectors)
    queries = rng.normal(size=(200, 8)).astype(np.float32)
    targets = exact.search(queries, 1)[0][:, 0] - 1

    def served(index, q):
        index.search(q, 20)  # the index's candidates, then a rescoring that finds the best again
        return exact.search(q, 20)[0]

    assert choose_ef(_EfIndex(exact, 64), exact, queries, targets, rank=served)[0] == 20  # type: ignore[arg-type]
