"""One contract for every CandidateIndex, plus HNSW recall against the exact reference."""

from __future__ import annotations

import numpy as np
import pytest

from stream_rec.core.seams import CandidateIndex
from stream_rec.errors import ConfigError, DataError
from stream_rec.runtime.index import ExactIndex, HnswIndex

DIM = 16


def clustered(
    n_items: int, dim: int, seed: int, n_clusters: int = 50, spread: float = 0.35
) -> np.ndarray:
    """(n_items + 1, dim) unit vectors around random centres; row 0 is the "no item" row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    v = centres[rng.integers(0, n_clusters, n_items)] + spread * rng.normal(size=(n_items, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.vstack([np.zeros((1, dim)), v]).astype(np.float32)


def queries_near(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = vectors[rng.integers(1, len(vectors), n)]
    q = base + 0.3 * rng.normal(size=base.shape) / np.sqrt(vectors.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def make_exact(vectors: np.ndarray, tmp_path) -> CandidateIndex:
    return ExactIndex(vectors)


def make_hnsw(vectors: np.ndarray, tmp_path) -> CandidateIndex:
    return HnswIndex.build(vectors, M=16, ef_construction=200, ef=64, seed=0)


def make_hnsw_reloaded(vectors: np.ndarray, tmp_path) -> CandidateIndex:
    path = tmp_path / "items.hnsw"
    HnswIndex.build(vectors, seed=0).save(path)
    return HnswIndex.load(path, vectors, ef=64)


IMPLEMENTATIONS = [
    pytest.param(make_exact, id="exact"),
    pytest.param(make_hnsw, id="hnsw"),
    pytest.param(make_hnsw_reloaded, id="hnsw-reloaded"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def factory(request):
    return request.param


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(300, DIM, seed=1, n_clusters=10)


def test_is_a_candidate_index(factory, vectors, tmp_path):
    index = factory(vectors, tmp_path)
    assert isinstance(index, CandidateIndex)
    assert index.dim == DIM
    assert len(index) == 300


def test_shapes_dtypes_and_best_first(factory, vectors, tmp_path):
    index = factory(vectors, tmp_path)
    q = queries_near(vectors, 7, seed=2)
    rows, scores = index.search(q, 10)
    assert rows.shape == (7, 10) and rows.dtype == np.int64
    assert scores.shape == (7, 10) and scores.dtype == np.float32
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores must be best first"
    assert np.all((rows >= 1) & (rows <= 300)), "row 0 must never be returned"
    assert all(len(set(r)) == 10 for r in rows.tolist()), "no duplicates within a result"
    # scores are the inner products of the returned rows
    expected = np.einsum("bd,bkd->bk", q, vectors[rows])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)


def test_row_zero_is_never_returned_even_when_it_scores_best(factory, tmp_path):
    v = clustered(50, DIM, seed=3)
    v[0] = 100.0  # would win every inner product if it were indexed
    index = factory(v, tmp_path)
    rows, _ = index.search(v[1:6] * 10, 50)
    assert rows.min() >= 1
    assert sorted(rows[0].tolist()) == list(range(1, 51))


def test_exact_top1_of_an_item_is_itself(factory, vectors, tmp_path):
    index = factory(vectors, tmp_path)
    rows, _ = index.search(vectors[[5, 17, 123]], 1)
    assert rows[:, 0].tolist() == [5, 17, 123]


def test_exclusion_still_returns_k(factory, vectors, tmp_path):
    index = factory(vectors, tmp_path)
    q = queries_near(vectors, 3, seed=4)
    plain, _ = index.search(q, 20)
    # exclude each query's own top 15, plus junk the index does not hold (0, -1, 10**6)
    exclude = [
        np.concatenate([plain[0, :15], [0, -1, 10**6]]),
        np.array([], np.int64),
        plain[2, :5],
    ]
    rows, scores = index.search(q, 20, exclude)
    assert rows.shape == (3, 20)
    for b in range(3):
        assert not set(rows[b].tolist()) & set(exclude[b].tolist())
        assert rows[b].min() >= 1
        assert np.all(np.diff(scores[b]) <= 1e-6)
    assert rows[1].tolist() == plain[1].tolist()
    assert rows[2, :15].tolist() == plain[2, 5:20].tolist()


def test_exclusion_of_most_of_the_catalogue(factory, tmp_path):
    v = clustered(40, DIM, seed=5)
    index = factory(v, tmp_path)
    keep = np.array([3, 9, 27, 31, 38])
    exclude = [np.setdiff1d(np.arange(1, 41), keep)]
    rows, _ = index.search(v[[1]], 5, exclude)
    assert sorted(rows[0].tolist()) == keep.tolist()


def test_k_larger_than_the_catalogue_pads_with_row_zero(factory, tmp_path):
    v = clustered(8, DIM, seed=6)
    index = factory(v, tmp_path)
    rows, scores = index.search(v[[2, 5]], 12, [np.array([1]), None])
    assert rows.shape == (2, 12)
    assert sorted(rows[0, :7].tolist()) == [2, 3, 4, 5, 6, 7, 8]
    assert rows[0, 7:].tolist() == [0] * 5 and np.all(np.isneginf(scores[0, 7:]))
    assert sorted(rows[1, :8].tolist()) == list(range(1, 9))
    assert rows[1, 8:].tolist() == [0] * 4


def test_accepts_non_contiguous_float64_queries(factory, vectors, tmp_path):
    index = factory(vectors, tmp_path)
    q64 = np.asfortranarray(queries_near(vectors, 4, seed=7).astype(np.float64))
    rows, _ = index.search(q64, 5)
    expected, _ = index.search(np.ascontiguousarray(q64, dtype=np.float32), 5)
    assert rows.tolist() == expected.tolist()


def test_empty_batch(factory, vectors, tmp_path):
    rows, scores = factory(vectors, tmp_path).search(np.zeros((0, DIM), np.float32), 5)
    assert rows.shape == (0, 5) and scores.shape == (0, 5)


def test_rejects_bad_input_with_clear_errors(factory, vectors, tmp_path):
    index = factory(vectors, tmp_path)
    with pytest.raises(DataError, match=r"shape \(batch, 16\); got \(3, 8\)"):
        index.search(np.zeros((3, 8), np.float32), 5)
    with pytest.raises(ConfigError, match="k must be a positive integer; got 0"):
        index.search(np.zeros((1, DIM), np.float32), 0)
    with pytest.raises(DataError, match="one array per query"):
        index.search(np.zeros((2, DIM), np.float32), 5, [np.array([1])])


def test_deterministic(factory, vectors, tmp_path):
    q = queries_near(vectors, 20, seed=8)
    a = factory(vectors, tmp_path / "a").search(q, 10)
    b = factory(vectors, tmp_path / "b").search(q, 10)
    assert a[0].tolist() == b[0].tolist()


# --------------------------------------------------------------------------- HNSW only
def test_hnsw_save_load_round_trip(vectors, tmp_path):
    built = HnswIndex.build(vectors, seed=3)
    path = tmp_path / "sub" / "items.hnsw"
    built.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["items.hnsw"], "no temp files left"
    q = queries_near(vectors, 30, seed=9)
    for loaded in (HnswIndex.load(path, vectors), HnswIndex.load(path, DIM)):
        assert len(loaded) == 300 and loaded.dim == DIM
        a, sa = built.search(q, 10)
        b, sb = loaded.search(q, 10)
        assert a.tolist() == b.tolist()
        np.testing.assert_array_equal(sa, sb)


def test_hnsw_load_checks_the_file_against_the_vectors(vectors, tmp_path):
    path = tmp_path / "items.hnsw"
    HnswIndex.build(vectors).save(path)
    with pytest.raises(DataError, match="holds 300 items; the item vectors have 299"):
        HnswIndex.load(path, vectors[:-1])
    with pytest.raises(DataError, match="does not exist"):
        HnswIndex.load(tmp_path / "missing.hnsw", DIM)


def test_hnsw_settings_are_validated():
    index = HnswIndex.build(clustered(10, DIM, seed=0))
    index.ef = 5  # below k: each search still uses ef >= k
    rows, _ = index.search(np.ones((1, DIM), np.float32), 10)
    assert sorted(rows[0].tolist()) == list(range(1, 11))
    with pytest.raises(ConfigError, match="ef must be >= 1"):
        index.ef = 0
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        index.threads = 0


def test_hnsw_sparse_graph_still_returns_every_item():
    # Identical vectors and a minimal graph leave items unreachable: hnswlib then raises
    # "cannot return the results in a contiguous 2D array"; the index answers exactly instead.
    rng = np.random.default_rng(0)
    v = np.vstack([np.zeros((1, 4)), np.tile(rng.normal(size=(1, 4)), (120, 1))]).astype(np.float32)
    index = HnswIndex.build(v, M=2, ef_construction=2, seed=0)
    rows, scores = index.search(
        rng.normal(size=(5, 4)).astype(np.float32), 120, [np.array([7])] * 5
    )
    assert all(sorted(r[:119]) == [i for i in range(1, 121) if i != 7] for r in rows.tolist())
    assert rows[:, 119].tolist() == [0] * 5 and np.all(np.isneginf(scores[:, 119]))


def test_hnsw_of_an_empty_catalogue():
    index = HnswIndex.build(np.zeros((1, DIM), np.float32))
    rows, _ = index.search(np.ones((2, DIM), np.float32), 3)
    assert len(index) == 0 and rows.tolist() == [[0, 0, 0]] * 2


def test_hnsw_recall_at_20_against_exact():
    # Wide, overlapping clusters: hard enough that a small ef visibly loses recall.
    v = clustered(5000, 64, seed=11, n_clusters=100, spread=1.5)
    q = queries_near(v, 500, seed=12)
    truth, _ = ExactIndex(v).search(q, 20)
    hnsw = HnswIndex.build(v, M=16, ef_construction=200, ef=128, seed=0)
    hnsw.threads = 2

    def recall() -> float:
        found, _ = hnsw.search(q, 20)
        pairs = zip(truth.tolist(), found.tolist(), strict=True)
        return float(np.mean([len(set(a) & set(b)) / 20 for a, b in pairs]))

    at_128 = recall()
    hnsw.ef = 20
    at_20 = recall()
    assert at_128 >= 0.95, f"HNSW recall@20 {at_128:.3f} at ef=128"
    assert at_20 <= at_128
