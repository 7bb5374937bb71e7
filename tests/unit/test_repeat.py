"""The repeat head: its loss, its ONNX export, and serving that ranks as training scores."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stream_rec.core.events import Event
from stream_rec.core.features import ItemVocab
from stream_rec.core.repeat import rerank, session_bonuses
from stream_rec.core.session import SessionPolicy
from stream_rec.datasets.eventlog import SessionSplit
from stream_rec.evaluation.cases import prefix_states, split_test_events
from stream_rec.model.bundle_writer import write_bundle
from stream_rec.model.loss import session_cross_entropy
from stream_rec.model.sasrec import SASRecConfig, SessionTransformer
from stream_rec.model.validation import session_scores
from stream_rec.serving.bundle import ModelBundle
from stream_rec.serving.compose import build_recommender
from stream_rec.settings import Settings


def _operands(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, v, d, m = 6, 40, 8, 4
    s = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=g)
    cols = torch.stack([torch.randperm(v, generator=g)[:m] for _ in range(n)])
    cols[0, 2] = -1  # unused slot
    cols[1, 0] = t[1]  # the target is one of the session's items
    b = torch.randn(n, m, generator=g, dtype=torch.float64, requires_grad=True)
    return s, w, t, cols, b


def _dense_logits(s, w, cols, b):
    logits = s @ w.T
    bonus = torch.zeros_like(logits)
    used = cols >= 0
    bonus = bonus.scatter_add(1, cols.clamp(min=0), torch.where(used, b, torch.zeros_like(b)))
    return logits + bonus


def test_full_softmax_with_bonuses_equals_cross_entropy_in_value_and_gradients():
    s, w, t, cols, b = _operands()
    want = F.cross_entropy(_dense_logits(s, w, cols, b), t)
    got = session_cross_entropy(s, w, t, extra_cols=cols, extra_bias=b)
    assert torch.allclose(got, want)
    for x, y in zip(torch.autograd.grad(got, (s, w, b)), torch.autograd.grad(want, (s, w, b))):
        assert torch.allclose(x, y)


def test_sampled_softmax_over_every_column_is_close_to_the_full_one():
    s, w, t, cols, b = _operands(1)
    negatives = torch.arange(w.shape[0])
    full = F.cross_entropy(_dense_logits(s, w, cols, b), t)
    sampled = session_cross_entropy(s, w, t, negatives=negatives, extra_cols=cols, extra_bias=b)
    # All V columns drawn, each non-target weighted (V - 1) / V: within a few percent.
    assert sampled.item() == pytest.approx(full.item(), rel=0.05)
    plain = session_cross_entropy(s, w, t, negatives=negatives)
    assert plain.item() == pytest.approx(F.cross_entropy(s @ w.T, t).item(), rel=0.05)
    sampled.backward()
    assert all(torch.isfinite(x.grad).all() for x in (s, w, b))


def test_session_bonuses_keep_each_items_most_recent_position():
    items = np.array([0, 0, 3, 5, 3, 0, 7])
    bonus = np.arange(7, dtype=np.float32)
    rows, got = session_bonuses(items, bonus)
    assert rows.tolist() == [3, 5, 7] and got.tolist() == [4.0, 3.0, 6.0]


def test_rerank_adds_bonuses_and_brings_in_session_items_the_index_missed():
    vectors = np.eye(4, dtype=np.float32)
    vectors = np.vstack([np.zeros((1, 4), np.float32), vectors])  # rows 1..4
    query = np.array([0.9, 0.5, 0.1, 0.0], np.float32)
    rows, scores = np.array([1, 2]), np.array([0.9, 0.5], np.float32)
    out_rows, out_scores = rerank(query, rows, scores, np.array([4, 2]), np.array([16.0, -16.0], np.float32),
                                  vectors, scale=16.0, k=2)
    assert out_rows.tolist() == [4, 1]  # item 4 (cosine 0, bonus +1) beats 1 (0.9); 2 drops
    assert out_scores.tolist() == pytest.approx([1.0, 0.9])
    excluded, _ = rerank(query, rows, scores, np.array([4]), np.array([16.0], np.float32), vectors,
                         scale=16.0, k=2, exclude=np.array([4]))
    assert excluded.tolist() == [1, 2]


@pytest.fixture(scope="module")
def repeat_bundle(tmp_path_factory):
    rng = np.random.default_rng(3)
    items = [f"i{n:02d}" for n in range(30)]
    train = [list(rng.choice(items, size=int(rng.integers(2, 8)))) for _ in range(40)]
    seen = list(dict.fromkeys(i for s in train for i in s))
    test = [list(rng.choice(seen[:8], size=int(rng.integers(3, 9)))) for _ in range(15)]  # repeats
    split = SessionSplit(train_sessions=train, test_sessions=test, items=tuple(seen))
    vocab = ItemVocab(seen)
    torch.manual_seed(0)
    model = SessionTransformer(SASRecConfig(n_items=len(vocab), dim=16, n_layers=1, ffn_dim=32, repeat=True))
    with torch.no_grad():  # a bonus large enough to reorder, and spread item vectors
        model.item_emb.weight.normal_(0.0, 1.0)
        model.item_emb.weight[0].zero_()
        model.repeat_recency.weight.normal_(0.0, 2.0)
        model.repeat_count.weight.normal_(0.0, 2.0)
    model.eval()
    path = write_bundle(tmp_path_factory.mktemp("bundles"), model, vocab, np.ones(len(vocab) + 1, np.float32),
                        {"data": "synthetic"}, {})
    return split, ModelBundle.load(path), model


def test_serving_ranks_as_the_training_scores_do(repeat_bundle):
    split, bundle, model = repeat_bundle
    settings = Settings.from_env({}, index="exact", filter_purchased=False, cold_start_trending=False)
    core = build_recommender(bundle, settings)
    assert core.repeat
    _, states = prefix_states(split_test_events(split), SessionPolicy(max_len=bundle.max_len))
    events = [Event(f"e{i}", "u", "click", 1000 + i, item_id="x") for i in range(len(states))]
    recs = core.recommend(list(zip(events, states)), now_ms=0).to_list()
    vocab = bundle.vocab
    changed = 0
    with torch.no_grad():
        for state, rec in zip(states, recs):
            rows = torch.from_numpy(vocab.rows_for_hashes(state.item_hashes)).unsqueeze(0)
            scores = session_scores(model, rows, torch.ones_like(rows), torch.zeros(*rows.shape, 3, dtype=torch.long))
            want = [vocab.item_id(int(c) + 1) for c in scores[0].topk(20).indices]
            got = [s.item_id for s in rec.items]
            assert got == want
            plain = model.logits(model.session_vector(rows, torch.ones_like(rows),
                                                      torch.zeros(*rows.shape, 3, dtype=torch.long)))
            changed += want != [vocab.item_id(int(c) + 1) for c in plain[0].topk(20).indices]
    assert changed > 0  # the bonuses reorder some answers


def test_the_blend_step_leaves_a_repeat_head_bundle_as_the_model_alone(repeat_bundle, tmp_path):
    # The item-neighbour blend cannot serve beside the head yet (search_sessions refuses), so
    # the train step's blend must not write a bundle that would fail at its first answer.
    from stream_rec.model.item_blend import add_item_neighbours

    _, bundle, _ = repeat_bundle
    lines: list[str] = []
    assert add_item_neighbours(bundle.path, tmp_path, [], lines.append) is None
    assert any("repeat head" in line for line in lines)
