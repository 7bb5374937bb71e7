"""Baselines on a four-session corpus whose answers are worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from stream_rec.evaluation.baselines import ItemKNN, Popularity, SessionKNN, evaluate

# Clicks: a 3, b 3, c 3 (twice in the third session), d 1.
CORPUS = [["a", "b", "c"], ["a", "b"], ["b", "c", "c"], ["d", "a"]]


def rounded(recs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return [(item, round(score, 6)) for item, score in recs]


def test_popularity():
    pop = Popularity().fit(CORPUS)
    assert pop.recommend(["d"], 3) == [("a", 3.0), ("b", 3.0), ("c", 3.0)]  # ties: first seen first
    assert pop.recommend([], 10)[-1] == ("d", 1.0) and pop.n_items == 4


def test_item_knn_cosine_by_hand():
    knn = ItemKNN(lmbd=0.0).fit(CORPUS)
    # c(a, j) = clicks on a in sessions holding j: b 2, c 1, d 1; all n = 3 except n_d = 1.
    assert rounded(knn.recommend(["x", "a"], 5)) == [
        ("b", round(2 / 3, 6)),
        ("d", round(1 / math.sqrt(3), 6)),
        ("c", round(1 / 3, 6)),
    ]
    # c(c, b) counts both clicks on c in the third session: 3 / 3. The reverse c(b, c) is 2.
    assert rounded(knn.recommend(["c"], 5)) == [("b", 1.0), ("a", round(1 / 3, 6))]
    assert rounded(knn.neighbors("b")) == [("a", round(2 / 3, 6)), ("c", round(2 / 3, 6))]
    assert knn.recommend(["a"], 1) == knn.recommend(["a"], 5)[:1]
    assert knn.recommend(["unknown"], 5) == [] and knn.recommend([], 5) == []


def test_item_knn_regularisation_and_neighbour_cap():
    knn = ItemKNN(n_neighbors=1).fit(CORPUS)  # lambda 20: sim(a, b) = 2 / (23^0.5 * 23^0.5)
    assert rounded(knn.recommend(["a"], 5)) == [("b", round(2 / 23, 6))]


def test_vsknn_by_hand():
    model = SessionKNN().fit(CORPUS)
    # Prefix c a b: weights c 1/3, a 2/3, b 3/3. Similarities: s1 2, s2 5/3, s3 4/3, s4 2/3;
    # s4 shares only a (2nd from the end): decay 1/2. a = 2 + 5/3 + 1/3, b = 2 + 5/3 + 4/3.
    assert rounded(model.recommend(["c", "a", "b"], 10)) == [
        ("b", 5.0),
        ("a", 4.0),
        ("c", round(10 / 3, 6)),
        ("d", round(1 / 3, 6)),
    ]
    assert rounded(model.recommend(["a"], 3)) == [("a", 3.0), ("b", 2.0), ("c", 1.0)]


def test_vsknn_sampling_keeps_the_most_recent_sessions():
    # Sessions holding a: 1, 2, 4. The two most recent are 2 {a, b} and 4 {d, a}.
    assert SessionKNN(sample_size=2).fit(CORPUS).recommend(["a"], 5) == [
        ("a", 2.0),
        ("b", 1.0),
        ("d", 1.0),
    ]
    # One neighbour, all tied: the most recent wins.
    assert SessionKNN(k_sessions=1).fit(CORPUS).recommend(["a"], 5) == [("a", 1.0), ("d", 1.0)]


def test_sknn_cosine():
    model = SessionKNN(position_weights=False).fit(CORPUS)
    r3, r2 = 1 / math.sqrt(3), 1 / math.sqrt(2)
    assert rounded(model.recommend(["a"], 3)) == [
        ("a", round(r3 + 2 * r2, 6)),
        ("b", round(r3 + r2, 6)),
        ("d", round(r2, 6)),
    ]


def test_recommend_before_fit_raises():
    for model in (Popularity(), ItemKNN(), SessionKNN()):
        with pytest.raises(RuntimeError, match="before fit"):
            model.recommend(["a"], 5)


def test_evaluate_harness():
    knn = ItemKNN(lmbd=0.0).fit(CORPUS)
    # a -> [b, d, c]: d at rank 2; b c -> [b, a]: a at rank 2; d -> [a]: z missed.
    out = evaluate(knn, [["a"], ["b", "c"], ["d"]], ["d", "a", "z"], k=20, catalogue_size=4)
    assert out["hr@20"] == pytest.approx(2 / 3)
    assert out["mrr@20"] == pytest.approx(1 / 3)
    assert out["ndcg@20"] == pytest.approx(2 / 3 / math.log2(3))
    assert out["coverage@20"] == pytest.approx(1.0)
    assert out["prefixes_by_length"] == {"1": 2, "2": 1, "3-5": 0, "6+": 0}
    assert out["seconds"] >= 0.0
    assert evaluate(knn, [["a"]], ["d"], k=1)["hr@1"] == 0.0


def test_evaluate_takes_any_recommender():
    class Echo:
        def recommend(self, prefix: Sequence[str], k: int = 20) -> list[tuple[str, float]]:
            return [(item, 1.0) for item in reversed(prefix)][:k]

    out = evaluate(Echo(), [["a", "b"], ["c"]], ["a", "x"], percent=True)
    assert out["hr@20"] == pytest.approx(50.0) and out["mrr@20"] == pytest.approx(25.0)
    with pytest.raises(ValueError):
        evaluate(Echo(), [["a"]], [])
