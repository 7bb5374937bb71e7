"""Ranking metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_rec.evaluation.metrics import (
    RankingAccumulator,
    by_target_note,
    coverage_at_k,
    hit_rate_at_k,
    hit_rate_by_length,
    length_bucket,
    mrr_at_k,
    ndcg_at_k,
    rank_of_target,
    ranks_of_targets,
    target_ranks,
    top_k,
)

# Targets at rank 1, rank 3 and missing.
RECOMMENDED = [["a", "b", "c"], ["x", "y", "z"], ["p", "q", "r"]]
TARGETS = ["a", "z", "nope"]


def test_ranks_from_lists_and_arrays():
    assert target_ranks(RECOMMENDED, TARGETS).tolist() == [1, 3, 0]
    assert target_ranks(np.array(RECOMMENDED), TARGETS).tolist() == [1, 3, 0]
    assert target_ranks([[5, 7, 7], [1]], [7, 2]).tolist() == [
        2,
        0,
    ]  # first occurrence; ragged lists


def test_hr_mrr_ndcg_by_hand():
    # HR = 2/3; MRR = (1 + 1/3 + 0) / 3 = 4/9; NDCG = (1/log2(2) + 1/log2(4) + 0) / 3 = 1.5 / 3.
    assert hit_rate_at_k(RECOMMENDED, TARGETS, 20) == pytest.approx(2 / 3, abs=1e-12)
    assert mrr_at_k(RECOMMENDED, TARGETS, 20) == pytest.approx(4 / 9, abs=1e-12)
    assert ndcg_at_k(RECOMMENDED, TARGETS, 20) == pytest.approx(0.5, abs=1e-12)
    # At k = 2 the rank-3 hit no longer counts: all three are 1/3.
    assert hit_rate_at_k(RECOMMENDED, TARGETS, 2) == pytest.approx(1 / 3, abs=1e-12)
    assert mrr_at_k(RECOMMENDED, TARGETS, 2) == pytest.approx(1 / 3, abs=1e-12)
    assert ndcg_at_k(RECOMMENDED, TARGETS, 2) == pytest.approx(1 / 3, abs=1e-12)
    assert hit_rate_at_k(RECOMMENDED, TARGETS, 20, percent=True) == pytest.approx(200 / 3, abs=1e-9)
    assert mrr_at_k(RECOMMENDED, TARGETS, 20, percent=True) == pytest.approx(400 / 9, abs=1e-9)


def test_rank_two_ndcg():
    # One hit at rank 2: NDCG = 1 / log2(3) = 0.6309...
    assert ndcg_at_k([["x", "t"]], ["t"]) == pytest.approx(0.6309297535714575, abs=1e-12)


def test_empty_input_is_nan_without_warnings():
    assert math.isnan(hit_rate_at_k([], []))
    assert math.isnan(mrr_at_k([], []))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="one target per list"):
        hit_rate_at_k([["a"]], ["a", "b"])


def test_coverage():
    assert coverage_at_k([[1, 2], [2, 3]], catalogue_size=10, k=20) == pytest.approx(0.3)
    assert coverage_at_k([[1, 2], [2, 3]], catalogue_size=10, k=1) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        coverage_at_k([[1]], catalogue_size=0)


def test_rank_of_target_ties_count_against_the_target():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    assert rank_of_target(scores, 3) == 1
    assert rank_of_target(scores, 1) == 3  # tied with item 2: ranked after it
    assert rank_of_target(scores, 0) == 4
    assert rank_of_target(np.zeros(5), 2) == 5  # a constant scorer ranks every target last
    batch = np.array([[0.1, 0.5, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert ranks_of_targets(batch, np.array([1, 2])).tolist() == [3, 3]


def test_top_k_breaks_ties_by_index():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    assert top_k(scores, 2).tolist() == [3, 1]
    assert top_k(scores, 3).tolist() == [3, 1, 2]
    assert top_k(scores, 10).tolist() == [3, 1, 2, 0]
    assert top_k(np.zeros(6), 3).tolist() == [0, 1, 2]


def test_length_buckets():
    assert [length_bucket(n) for n in (1, 2, 3, 5, 6, 50)] == ["1", "2", "3-5", "3-5", "6+", "6+"]
    with pytest.raises(ValueError):
        length_bucket(0)


def test_hit_rate_by_length():
    out = hit_rate_by_length(RECOMMENDED, TARGETS, [1, 4, 7])
    assert out["1"] == {"hr@20": 1.0, "prefixes": 1}
    assert out["3-5"] == {"hr@20": 1.0, "prefixes": 1}
    assert out["6+"] == {"hr@20": 0.0, "prefixes": 1}
    assert out["2"]["prefixes"] == 0 and math.isnan(out["2"]["hr@20"])


def test_accumulator_summary():
    acc = RankingAccumulator(k=20, catalogue_size=10)
    ranks = [acc.add(r, t, n) for r, t, n in zip(RECOMMENDED, TARGETS, [1, 4, 7], strict=True)]
    assert ranks == [1, 3, 0]
    s = acc.summary()
    assert s["hr@20"] == pytest.approx(2 / 3)
    assert s["mrr@20"] == pytest.approx(4 / 9)
    assert s["ndcg@20"] == pytest.approx(0.5)
    assert s["coverage@20"] == pytest.approx(0.9)  # 9 distinct items recommended, catalogue of 10
    assert s["prefixes"] == 3
    assert s["prefixes_by_length"] == {"1": 1, "2": 0, "3-5": 1, "6+": 1}
    assert s["hr@20_by_length"]["3-5"] == 1.0 and s["hr@20_by_length"]["6+"] == 0.0
    in_percent = acc.summary(percent=True)
    assert in_percent["hr@20"] == pytest.approx(200 / 3) and in_percent[
        "coverage@20"
    ] == pytest.approx(90.0)


def test_accumulator_cuts_at_k_and_handles_no_catalogue():
    acc = RankingAccumulator(k=2)
    assert acc.add(["x", "y", "t"], "t") == 0  # rank 3 is outside the top 2
    s = acc.summary()
    assert s["hr@2"] == 0.0 and s["coverage@2"] is None and s["prefixes_by_length"]["1"] == 0
    empty = RankingAccumulator().summary()
    assert empty["prefixes"] == 0 and math.isnan(empty["hr@20"])


def test_the_summary_splits_targets_already_in_their_prefix_from_the_others():
    acc = RankingAccumulator(k=20)
    for recommended, target, repeat in zip(RECOMMENDED, TARGETS, [True, True, False], strict=True):
        acc.add(recommended, target, 2, repeat=repeat)
    split = acc.summary(percent=True)["by_target"]
    assert split["in_prefix"] == {"hr@20": 100.0, "mrr@20": pytest.approx(100 * (1 + 1 / 3) / 2),
                                  "prefixes": 2}
    assert split["new"] == {"hr@20": 0.0, "mrr@20": 0.0, "prefixes": 1}
    assert by_target_note(acc.summary(percent=True)) == (
        "; targets in their prefix (66.7%) 100.00 / 66.67, the others 0.00 / 0.00")
    # without the flag on every prediction there is no split
    acc.add(["a"], "a", 1)
    assert "by_target" not in acc.summary() and by_target_note(acc.summary()) == ""
