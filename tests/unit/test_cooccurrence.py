"""SessionNeighbours is V-SKNN on vocabulary rows; blend mixes it with the index's candidates."""

import numpy as np
import pytest

from stream_rec.core.cooccurrence import SessionNeighbours, blend
from stream_rec.core.features import ItemVocab
from stream_rec.evaluation.baselines import SessionKNN


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(60)]
    train = [list(rng.choice(ids[:50], size=int(rng.integers(1, 7)))) for _ in range(400)]
    vocab = ItemVocab(list(dict.fromkeys(i for s in train for i in s)))
    rows = [np.array([vocab.row(i) for i in s]) for s in train]
    return train, vocab, SessionNeighbours.build(rows, len(vocab), sample_size=150, k_sessions=30)


def test_scores_equal_the_v_sknn_baseline(corpus):
    train, vocab, nb = corpus
    knn = SessionKNN(k_sessions=30, sample_size=150).fit(train)
    rng = np.random.default_rng(4)
    for _ in range(50):
        prefix = list(rng.choice([*vocab.item_ids, "unknown-a"], size=int(rng.integers(1, 6))))
        want = dict(knn.recommend(prefix, 1000))
        rows, scores = nb.scores(np.array([vocab.row(i) for i in prefix]), n=1000)
        got = {vocab.item_ids[r - 1]: s for r, s in zip(rows.tolist(), scores.tolist())}
        assert set(got) == set(want)
        total = sum(want.values())
        for item, s in got.items():
            assert s == pytest.approx(want[item] / total)


def test_no_known_item_gives_nothing(corpus):
    _, _, nb = corpus
    for rows in (np.zeros(0, np.int64), np.array([0, 0])):
        r, s = nb.scores(rows)
        assert len(r) == 0 and len(s) == 0


def test_save_and_load_round_trip(corpus, tmp_path):
    _, _, nb = corpus
    nb.save(tmp_path / "n.npz")
    back = SessionNeighbours.load(tmp_path / "n.npz", sample_size=150, k_sessions=30)
    q = np.array([3, 0, 5, 3])
    for a, b in zip(nb.scores(q), back.scores(q)):
        np.testing.assert_array_equal(a, b)


def _vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n + 1, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[0] = 0
    return v


def test_weight_zero_keeps_the_index_order_and_weight_one_the_cooccurrence_order():
    vecs = _vectors(30)
    q = vecs[7]
    rows = np.argsort(-(vecs[1:] @ q))[:10] + 1
    scores = vecs[rows] @ q
    knn_rows, knn_scores = np.array([25, 3, 7]), np.array([0.5, 0.3, 0.2])
    r0, _ = blend(q, rows, scores, knn_rows, knn_scores, vecs, 16.0, 0.0, 5)
    assert r0.tolist() == rows[:5].tolist()
    r1, s1 = blend(q, rows, scores, knn_rows, knn_scores, vecs, 16.0, 1.0, 3)
    assert r1.tolist() == [25, 3, 7] and np.allclose(s1, [0.5, 0.3, 0.2])


def test_blend_respects_exclusions_and_pads():
    vecs = _vectors(5)
    q = vecs[2]
    rows = np.array([2, 4, 0])
    scores = np.array([1.0, 0.3, -np.inf], np.float32)
    r, s = blend(q, rows, scores, np.array([5, 1]), np.array([0.6, 0.4]), vecs, 16.0, 0.5, 5,
                 exclude=np.array([5]))
    assert 5 not in r.tolist()
    assert sorted(r[:3].tolist()) == [1, 2, 4] and r[3] == 0 and s[3] == -np.inf
