"""The item-neighbour table (Item-KNN on bundle rows) and its batch blend, against a plain
per-session reference; the blend version of a bundle is tuned, written and served."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_rec.core.features import ItemVocab
from stream_rec.core.item_neighbours import (
    MAX_OWN,
    MAX_RECENT,
    OLDER_NEIGHBOURS,
    ItemNeighbours,
    item_blended_search,
    last_known_rows,
    recent_weights,
)
from stream_rec.evaluation.baselines import ItemKNN
from stream_rec.runtime.index import ExactIndex

N_ITEMS = 50


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(N_ITEMS)]
    train = [list(rng.choice(ids, size=int(rng.integers(1, 7)))) for _ in range(400)]
    vocab = ItemVocab(list(dict.fromkeys(i for s in train for i in s)))
    rows = [np.array([vocab.row(i) for i in s]) for s in train]
    return train, vocab, ItemNeighbours.build(rows, len(vocab), n_neighbors=10)


def _vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n + 1, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[0] = 0
    return v


def test_the_table_is_the_item_knn_baseline_normalised(corpus):
    train, vocab, table = corpus
    knn = ItemKNN(n_neighbors=10).fit(train)
    for item in vocab.item_ids:
        want = knn.neighbors(item)
        row = vocab.row(item)
        got = [(vocab.item_ids[r - 1], s) for r, s in zip(table.rows[row], table.scores[row]) if r]
        assert [i for i, _ in got] == [i for i, _ in want]
        total = sum(s for _, s in want)
        assert [s for _, s in got] == pytest.approx([s / total for _, s in want], rel=1e-5)
    assert not table.rows[0].any()


def own(last, repeat, decay):
    """A session's own recent items (newest first): repeat x decay^i, normalised, per item."""
    present = [(int(r), decay**i) for i, r in enumerate(last.tolist()) if r]
    total = sum(w for _, w in present)
    out: dict[int, float] = {}
    for r, w in present:
        out[r] = out.get(r, 0.0) + repeat * w / total
    return out


def _reference(q, cand, cos, nb_rows, nb_scores, vectors, scale, weight, k, exclude, own_items):
    """One session, plainly: softmax over the index's candidates, neighbours added by weight,
    the session's own items by their repeat share."""
    keep = cand > 0
    cand, cos = cand[keep], cos[keep].astype(np.float64)
    top = cos.max() if len(cos) else 0.0
    z = np.exp(scale * (cos - top)).sum() if len(cos) else 1.0
    score = {int(r): (1 - weight) * np.exp(scale * (c - top)) / z for r, c in zip(cand, cos)}
    for r, s in zip(nb_rows.tolist(), nb_scores.tolist()):
        if r == 0 or r in exclude:
            continue
        base = score.get(r, (1 - weight) * np.exp(scale * (float(vectors[r] @ q) - top)) / z)
        score[r] = base + weight * s
    for r, s in own_items.items():
        if r in exclude:
            continue
        if r not in score:
            score[r] = (1 - weight) * np.exp(scale * (float(vectors[r] @ q) - top)) / z
        score[r] += s
    ranked = sorted(score.items(), key=lambda kv: -kv[1])[:k]
    return [r for r, _ in ranked], [s for _, s in ranked]


@pytest.mark.parametrize("repeat", [0.0, 0.2])
@pytest.mark.parametrize("recent", [1, 3])
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_batch_blend_equals_the_per_session_reference(corpus, weight, recent, repeat):
    train, vocab, _ = corpus
    rows = [np.array([vocab.row(i) for i in s]) for s in train]
    # wider than OLDER_NEIGHBOURS, so the earlier items' rows are cut
    table = ItemNeighbours.build(rows, len(vocab), n_neighbors=15)
    table = table.with_recent(recent).with_repeat(repeat, 0.8)
    vectors = _vectors(len(vocab))
    rng = np.random.default_rng(5)
    queries = _vectors(12, seed=7)[1:]
    sessions = [rng.integers(0, len(vocab) + 1, size=int(rng.integers(1, 5))) for _ in range(12)]
    sessions[0][:] = 0  # no known item: the index alone
    exclude = [np.array([], np.int64)] * 6 + [s[s > 0] for s in sessions[6:]]
    last = last_known_rows(sessions, MAX_RECENT)
    index = ExactIndex(vectors)
    rows, scores = item_blended_search(
        index, queries, last, 10, table, vectors, 16.0, weight, 30, exclude
    )
    cand, cos = index.search(queries, 30, exclude)
    for b in range(len(queries)):
        mixed: dict[int, float] = {}  # the recent items' neighbours, weighted 1, 0.9, ...
        shares = recent_weights(last[b : b + 1, :recent])[0]
        for j, (r, share) in enumerate(zip(last[b, :recent].tolist(), shares.tolist())):
            width = None if j == 0 else OLDER_NEIGHBOURS  # earlier items: their best few
            for nr, ns in zip(table.rows[r][:width].tolist(), table.scores[r][:width].tolist()):
                if r and nr:
                    mixed[nr] = mixed.get(nr, 0.0) + share * ns
        want_rows, want_scores = _reference(
            queries[b],
            cand[b],
            cos[b],
            np.array(list(mixed), np.int64),
            np.array(list(mixed.values())),
            vectors,
            16.0,
            weight,
            10,
            set(exclude[b].tolist()),
            own(last[b], repeat, 0.8),
        )
        assert len(set(rows[b][rows[b] > 0].tolist())) == int((rows[b] > 0).sum())  # no duplicates
        np.testing.assert_allclose(scores[b][: len(want_scores)], want_scores, rtol=1e-5, atol=1e-7)
        assert not set(rows[b].tolist()) & set(exclude[b].tolist())
        if weight == 0.0 and repeat == 0.0:
            np.testing.assert_array_equal(rows[b], cand[b][:10])


@pytest.mark.parametrize("window", [MAX_RECENT, MAX_OWN])
def test_the_own_items_window_covers_the_sessions_last_items_it_names(corpus, window):
    """Long sessions: the share goes to the last ``window`` known items only, exactly as the
    per-session reference says."""
    train, vocab, _ = corpus
    rows = [np.array([vocab.row(i) for i in s]) for s in train]
    table = ItemNeighbours.build(rows, len(vocab), n_neighbors=15).with_repeat(0.3, 0.9, window)
    vectors = _vectors(len(vocab))
    rng = np.random.default_rng(11)
    queries = _vectors(10, seed=3)[1:]
    sessions = [rng.integers(0, len(vocab) + 1, size=int(rng.integers(2, 45))) for _ in range(10)]
    last = last_known_rows(sessions, MAX_OWN)
    index = ExactIndex(vectors)
    got_rows, got_scores = item_blended_search(index, queries, last, 10, table, vectors, 16.0,
                                               0.2, 30)
    cand, cos = index.search(queries, 30)
    for b in range(len(queries)):
        r = int(last[b, 0])
        want_rows, want_scores = _reference(
            queries[b], cand[b], cos[b], table.rows[r] if r else np.zeros(0, np.int64),
            table.scores[r] if r else np.zeros(0), vectors, 16.0, 0.2, 10, set(),
            own(last[b, :window], 0.3, 0.9))
        np.testing.assert_allclose(got_scores[b][: len(want_scores)], want_scores, rtol=1e-5,
                                   atol=1e-7)
    # short sessions only: the same answers from (B, MAX_RECENT) and (B, MAX_OWN) rows
    short = [s[:6] for s in sessions]
    a = item_blended_search(index, queries, last_known_rows(short, MAX_RECENT), 10, table,
                            vectors, 16.0, 0.2, 30)
    w = item_blended_search(index, queries, last_known_rows(short, MAX_OWN), 10, table,
                            vectors, 16.0, 0.2, 30)
    np.testing.assert_array_equal(a[0], w[0])
    np.testing.assert_allclose(a[1], w[1])


def test_last_known_rows_skips_unknown_items_newest_first():
    sessions = [np.array([3, 7, 0]), np.array([0, 0]), np.array([], np.int64)]
    assert last_known_rows(sessions).tolist() == [[7], [0], [0]]
    assert last_known_rows(sessions, 3).tolist() == [[7, 3, 0], [0, 0, 0], [0, 0, 0]]
    w = recent_weights(last_known_rows(sessions, 3))
    np.testing.assert_allclose(w[0], [1 / 1.9, 0.9 / 1.9, 0])
    assert not w[1].any()


def test_encoding_keeps_the_last_known_items_newest_first():
    from stream_rec.core.scoring import encode_sequences

    class Zeros:
        dim = 4

        def encode(self, inputs):
            return np.zeros((len(inputs.items), 4), np.float32)

    vocab = ItemVocab([f"i{n}" for n in range(10)])
    from stream_rec.core.features import MAX_QUERY_TOKENS, item_hash

    seqs = []
    for items in (["i1", "x", "i2", "i3"], ["x"], [f"i{n % 10}" for n in range(MAX_OWN + 3)]):
        hashes = np.array([item_hash(i) for i in items], np.int64)
        seqs.append(
            (
                hashes,
                np.zeros(len(items), np.uint8),
                np.zeros((len(items), MAX_QUERY_TOKENS), np.uint32),
            )
        )
    enc = encode_sequences(Zeros(), vocab, seqs, max_len=50, query_buckets=64, max_batch=2)
    assert enc.last_rows.shape == (3, MAX_OWN)
    assert enc.last_rows.tolist()[0] == [4, 3, 2] + [0] * (MAX_OWN - 3)  # rows of i3, i2, i1
    assert enc.last_rows.tolist()[1] == [0] * MAX_OWN
    last = [vocab.row(f"i{n % 10}") for n in range(MAX_OWN + 3)][::-1][:MAX_OWN]
    assert enc.last_rows.tolist()[2] == last  # the newest MAX_OWN (the encoder's window)


def test_save_load_round_trip(corpus, tmp_path):
    _, _, table = corpus
    table.save(tmp_path / "t.npz")
    back = ItemNeighbours.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.rows, table.rows)
    np.testing.assert_array_equal(back.scores, table.scores)
    assert (
        back.recent == 1 and ItemNeighbours.load(_saved(table.with_recent(3), tmp_path)).recent == 3
    )
    assert (back.repeat, back.repeat_decay) == (0.0, 1.0)
    again = ItemNeighbours.load(_saved(table.with_repeat(0.2, 0.8), tmp_path))
    assert (again.repeat, again.repeat_decay) == pytest.approx((0.2, 0.8))
    assert back.own_window == MAX_RECENT
    wide = ItemNeighbours.load(_saved(table.with_repeat(0.2, 0.8, MAX_OWN), tmp_path))
    assert wide.own_window == MAX_OWN
    older = dict(np.load(_saved(table, tmp_path)))  # a table written before the window existed
    del older["own_window"]
    np.savez(tmp_path / "old.npz", **older)
    assert ItemNeighbours.load(tmp_path / "old.npz").own_window == MAX_RECENT
    with pytest.raises(ValueError, match="own_window must be in"):
        table.with_repeat(0.2, 0.8, MAX_OWN + 1)
    with pytest.raises(ValueError, match="repeat must be"):
        table.with_repeat(-0.1)
    with pytest.raises(ValueError, match="must both be"):
        ItemNeighbours(table.rows, table.scores[:, :3])


@pytest.mark.usefixtures("one_torch_thread")
def test_training_writes_a_tuned_blend_bundle_that_serves_it(tmp_path, capsys):
    pytest.importorskip("torch")
    from stream_rec.cli import main
    from stream_rec.serving.bundle import ModelBundle, bundles_newest_first
    from stream_rec.serving.compose import blend_args
    from stream_rec.settings import Settings

    bundles = tmp_path / "bundles"
    args = [
        "--events",
        "6000",
        "--users",
        "300",
        "--items",
        "200",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--bundles-dir",
        str(bundles),
    ]
    run = tmp_path / "run"
    assert main(["train", *args, "--checkpoint-dir", str(run)]) == 0
    served = capsys.readouterr().out.strip().splitlines()[-1]
    newest, model_only = bundles_newest_first(bundles)[:2]
    assert str(newest) == served
    bundle = ModelBundle.load(served)
    info = bundle.manifest["item_neighbours"]
    assert bundle.manifest["derived_from"] == model_only.name
    tried = info["selection"]["tried"]
    best = max(tried, key=lambda t: t["hr@20"] + t["mrr@20"])
    assert info["selection"]["cases"] > 0 and (info["weight"] > 0 or info["repeat"] > 0)
    assert best["hr@20"] + best["mrr@20"] == max(t["hr@20"] + t["mrr@20"] for t in tried
                                                 if t["weight"] == info["weight"]
                                                 and t["repeat"] == info["repeat"])
    # Weight 0 without repeat is the selected model alone: the figures training selected it on.
    alone = next(t for t in tried if t["weight"] == 0 and t["repeat"] == 0)
    metrics = bundle.manifest["metrics"]
    assert alone["hr@20"] == pytest.approx(100 * metrics["valid_hr@20"], abs=0.05)
    assert alone["mrr@20"] == pytest.approx(100 * metrics["valid_mrr@20"], abs=0.05)
    blend = blend_args(bundle, Settings(bundles_dir=str(bundles)))
    assert (
        isinstance(blend["neighbours"], ItemNeighbours) and blend["blend_weight"] == info["weight"]
    )
    assert blend_args(bundle, Settings(bundles_dir=str(bundles), cooccurrence_weight=0.0)) == {}

    def neighbours(bundle_path, *extra):
        return main(
            [
                "neighbours",
                "--bundle",
                str(bundle_path),
                "--dataset",
                "generated",
                *args[:6],
                "--bundles-dir",
                str(bundles),
                *extra,
            ]
        )

    # The same table, weight and figures from the model bundle, by the command: tuned with the
    # run's selected model from before its refit (which trained on the validation slice).
    assert neighbours(model_only, "--checkpoint-dir", str(run)) == 0
    again = ModelBundle.load(capsys.readouterr().out.strip().splitlines()[-1])
    assert again.manifest["item_neighbours"]["weight"] == info["weight"]
    assert again.manifest["item_neighbours"]["selection"]["tried"] == info["selection"]["tried"]
    np.testing.assert_array_equal(again.item_neighbours().rows, bundle.item_neighbours().rows)
    json.dumps(again.manifest)
    # HNSW's ef is chosen through the blend as served, beside the model alone's.
    hnsw, model_hnsw = bundle.manifest["hnsw"], ModelBundle.load(model_only).manifest["hnsw"]
    selection = hnsw["ef_selection"]
    assert "served item-neighbour blend" in selection["rule"]
    assert selection["model_ef"] == model_hnsw["ef"]
    assert selection["model_selection"] == model_hnsw["ef_selection"]
    assert hnsw["ef"] == selection["tried"][-1]["ef"] and bundle.serving_ef() == hnsw["ef"]
    assert again.manifest["hnsw"] == hnsw
    from stream_rec.serving.compose import ef_floor, served_ef

    on = Settings(bundles_dir=str(bundles))
    off = Settings(bundles_dir=str(bundles), cooccurrence_weight=0.0)  # the model alone's ef
    assert served_ef(bundle, on) == max(hnsw["ef"], ef_floor(on, bundle))
    assert served_ef(bundle, off) == max(model_hnsw["ef"], ef_floor(off, bundle))
    # --ef-only: a blended bundle of before gets the ef chosen through its blend, nothing else.
    assert neighbours(again.path, "--ef-only") == 0
    chosen = ModelBundle.load(capsys.readouterr().out.strip().splitlines()[-1])
    assert chosen.manifest["derived_from"] == again.version
    assert chosen.manifest["item_neighbours"] == again.manifest["item_neighbours"]
    assert chosen.manifest["hnsw"]["ef_selection"]["model_ef"] == model_hnsw["ef"]
    assert chosen.manifest["hnsw"]["ef"] == hnsw["ef"]
    assert neighbours(model_only, "--ef-only") != 0
    assert "has no item-neighbour blend" in capsys.readouterr().err


def _saved(table, tmp_path):
    path = tmp_path / "r.npz"
    table.save(path)
    return path


def test_choose_blend_tries_every_recent_count_and_weight(corpus):
    from stream_rec.model.blend_weight import BLEND_WEIGHTS, choose_blend

    _, vocab, table = corpus
    vectors = _vectors(len(vocab))
    rng = np.random.default_rng(8)
    sessions = [rng.integers(1, len(vocab) + 1, size=4) for _ in range(200)]
    targets = np.array([table.rows[s[-1], 0] - 1 for s in sessions])  # the top neighbour's column
    queries = _vectors(200, seed=9)[1:]
    last = last_known_rows(sessions, 5)
    choice = choose_blend(queries, targets, last, table, vectors, 16.0, repeats=(0.0,))
    assert len(choice.tried) == 3 * len(BLEND_WEIGHTS)
    assert {t["recent"] for t in choice.tried} == {1, 3, 5}
    # the target is the last item's neighbour: one item suffices, and no repeat
    assert choice.recent == 1 and choice.weight > 0 and choice.repeat == 0
    empty = choose_blend(queries[:0], targets[:0], last[:0], table, vectors, 16.0)
    assert (empty.recent, empty.weight, empty.repeat, empty.tried) == (1, 0.0, 0.0, [])


def test_choose_blend_gives_the_sessions_own_items_a_weight_when_shoppers_come_back(corpus):
    from stream_rec.model.blend_weight import (
        BLEND_RECENT,
        BLEND_REPEAT,
        BLEND_REPEAT_DECAY,
        BLEND_WEIGHTS,
        choose_blend,
    )

    _, vocab, table = corpus
    vectors = _vectors(len(vocab))
    rng = np.random.default_rng(8)
    sessions = [rng.integers(1, len(vocab) + 1, size=4) for _ in range(200)]
    targets = np.array([s[-3] - 1 for s in sessions])  # back to the item two steps before the last
    queries = _vectors(200, seed=9)[1:]
    last = last_known_rows(sessions, MAX_RECENT)
    choice = choose_blend(queries, targets, last, table, vectors, 16.0)
    repeats = [r for r in BLEND_REPEAT if r > 0]
    # (recent, weight) grid, then repeat x decay at that pair, then the weight again
    assert len(choice.tried) == (len(BLEND_RECENT) * len(BLEND_WEIGHTS)
                                 + len(repeats) * len(BLEND_REPEAT_DECAY) + len(BLEND_WEIGHTS) - 1)
    assert choice.repeat > 0
    best = max(choice.tried, key=lambda t: t["hr@20"] + t["mrr@20"])
    assert best["hr@20"] == 100.0  # the session's own item is always in the top 20
    shaped = choice.table(table)
    assert (shaped.recent, shaped.repeat, shaped.repeat_decay) == (choice.recent, choice.repeat,
                                                                   choice.repeat_decay)


def test_choose_blend_widens_the_own_items_to_the_whole_window_only_where_it_pays(corpus):
    from stream_rec.model.blend_weight import choose_blend

    _, vocab, table = corpus
    vectors = _vectors(len(vocab))
    rng = np.random.default_rng(8)
    # Long visits going back to an item 20 steps before the last: beyond the last MAX_RECENT.
    sessions = [rng.integers(1, len(vocab) + 1, size=30) for _ in range(200)]
    queries = _vectors(200, seed=9)[1:]
    last = last_known_rows(sessions, MAX_OWN)
    far = choose_blend(queries, np.array([s[-21] - 1 for s in sessions]), last, table, vectors,
                       16.0)
    assert far.repeat > 0 and far.own_window == MAX_OWN
    assert far.table(table).own_window == MAX_OWN
    assert {t["own_window"] for t in far.tried} == {MAX_RECENT, MAX_OWN}
    # Going back two steps: the narrow window does as well, and costs less.
    near = choose_blend(queries, np.array([s[-3] - 1 for s in sessions]), last, table, vectors,
                        16.0)
    assert near.repeat > 0 and near.own_window == MAX_RECENT


def test_a_table_with_the_sessions_own_items_blends_even_at_weight_zero():
    from types import SimpleNamespace

    from stream_rec.serving.compose import _blend_choice
    from stream_rec.settings import Settings

    def bundle(weight, repeat):
        return SimpleNamespace(manifest={"item_neighbours": {"weight": weight, "repeat": repeat}},
                               item_neighbours_weight=weight, cooccurrence_weight=0.0)

    assert _blend_choice(bundle(0.0, 0.2), Settings()) == ("item_neighbours", 0.0)
    assert _blend_choice(bundle(0.0, 0.0), Settings()) == (None, 0.0)
    assert _blend_choice(bundle(0.3, 0.0), Settings()) == ("item_neighbours", 0.3)
    # --cooccurrence-weight 0 is the model alone, whatever the table holds
    assert _blend_choice(bundle(0.0, 0.2), Settings(cooccurrence_weight=0.0)) == (None, 0.0)
