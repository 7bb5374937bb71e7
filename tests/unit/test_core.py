"""The pure core: batching must never change what a user is recommended."""

import numpy as np
import pytest

from stream_rec.core.events import Event
from stream_rec.core.features import ItemVocab
from stream_rec.core.recommender import Recommender, ServingConfig
from stream_rec.core.session import SessionPolicy
from stream_rec.runtime.index import ExactIndex
from stream_rec.runtime.stores import MemoryStore
from stream_rec.testing import run_events, run_records

N_ITEMS, DIM = 60, 16


class LastItemsEncoder:
    """A transparent SessionEncoder: recency-weighted sum of the session's item vectors."""

    def __init__(self, vectors):
        self.vectors = vectors

    @property
    def dim(self):
        return self.vectors.shape[1]

    def encode(self, inputs):
        L = inputs.items.shape[1]
        w = 0.5 ** np.arange(L)[::-1]
        v = (self.vectors[inputs.items] * w[None, :, None]).sum(1)
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def make(config=ServingConfig(top_k=5)):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N_ITEMS + 1, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[0] = 0
    vocab = ItemVocab([f"i{i}" for i in range(N_ITEMS)])
    return Recommender(LastItemsEncoder(vectors), ExactIndex(vectors), vocab, model_version="t",
                       max_len=50, query_buckets=64, policy=SessionPolicy(max_len=50), config=config)


def stream(n=200, users=7, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        typ = rng.choice(["click", "click", "search", "purchase"])
        out.append(Event(f"e{i}", f"u{rng.integers(users)}", str(typ), 1000 + i,
                         item_id=None if typ == "search" else f"i{rng.integers(N_ITEMS)}",
                         query="red shoes" if typ == "search" else None))
    return out


def test_coalesced_step_answers_each_users_last_event():
    rec = make()
    events = stream(50)
    result = rec.step({}, events)
    last = {e.user_id: e.event_id for e in events}
    assert {r.user_id: r.source_event_id for r in result.recommendations} == last
    assert len(result.recommendations) == len(last)
    assert all(len(r.items) == 5 for r in result.recommendations)
    assert set(result.states) == set(last)


@pytest.mark.parametrize("batch_size", [1, 3, 17, 1000])
def test_batching_never_changes_a_recommendation(batch_size):
    """Per-event answers through any micro-batch size equal one-event-at-a-time answers."""
    events = stream()
    ref = {r.source_event_id: r.items for r in run_events(make(ServingConfig(top_k=5, coalesce=False)), events, batch_size=1)}
    got = run_events(make(ServingConfig(top_k=5, coalesce=False)), events, batch_size=batch_size)
    assert len(got) == len(events)
    for r in got:
        assert [i.item_id for i in r.items] == [i.item_id for i in ref[r.source_event_id]]
        np.testing.assert_allclose([i.score for i in r.items], [i.score for i in ref[r.source_event_id]], atol=1e-6)
    coalesced = run_events(make(), events, batch_size=batch_size)
    for r in coalesced:  # a coalesced answer is the answer the per-event path gives for that event
        assert [i.item_id for i in r.items] == [i.item_id for i in ref[r.source_event_id]]


def test_purchased_items_are_filtered_and_k_is_kept():
    rec = make(ServingConfig(top_k=N_ITEMS - 3))
    events = [Event(f"e{i}", "u", "purchase", i, item_id=f"i{i}") for i in range(3)]
    (r,) = rec.step({}, events).recommendations
    ids = [i.item_id for i in r.items]
    assert len(ids) == N_ITEMS - 3 and not {"i0", "i1", "i2"} & set(ids)


def test_clicked_filter_is_optional():
    events = [Event("e1", "u", "click", 1, item_id="i5")]
    on = make(ServingConfig(top_k=N_ITEMS, filter_clicked=True)).step({}, events).recommendations[0]
    off = make(ServingConfig(top_k=N_ITEMS)).step({}, events).recommendations[0]
    assert "i5" not in [i.item_id for i in on.items] and "i5" in [i.item_id for i in off.items]


def test_redelivered_batch_does_not_change_state():
    rec = make()
    events = stream(20, users=2)
    offsets = list(range(20))
    first = rec.step({}, events, offsets)
    again = rec.step(first.states, events, offsets)
    for user, st in again.states.items():
        np.testing.assert_array_equal(st.item_hashes, first.states[user].item_hashes)


def test_unknown_items_and_search_only_sessions_still_get_k_items():
    rec = make()
    events = [Event("e1", "new", "search", 1, query="anything"), Event("e2", "new2", "click", 2, item_id="never-seen")]
    recs = rec.step({}, events).recommendations
    assert [len(r.items) for r in recs] == [5, 5]


def test_run_records_sends_invalid_ones_back_as_data():
    recs, invalid = run_records(make(), [(b"u", b'{"event_id":"a","user_id":"u","type":"click","item_id":"i1","ts":1}'),
                                         (b"u", b"{oops")])
    assert len(recs) == 1 and len(invalid) == 1 and "JSON" in invalid[0].reason


def test_store_keeps_state_between_runs():
    store = MemoryStore()
    rec = make()
    run_events(rec, stream(30, users=3), store=store)
    assert len(store) == 3 and all(len(store.get(u)) > 0 for u in store.users())


def test_cold_sessions_get_trending_items_kept_in_the_stream():
    rec = make(ServingConfig(top_k=3))
    hot = [Event(f"h{i}", f"shopper{i}", "click", 10_000 + i, item_id=f"i{7 + i % 3}") for i in range(30)]
    rec.step({}, hot)
    (cold,) = rec.step({}, [Event("c1", "newcomer", "search", 20_000, query="anything")]).recommendations
    assert {i.item_id for i in cold.items} == {"i7", "i8", "i9"}
    unknown = rec.step({}, [Event("c2", "other", "click", 20_001, item_id="not-in-catalogue")]).recommendations[0]
    assert {i.item_id for i in unknown.items} == {"i7", "i8", "i9"}
    warm = rec.step({}, [Event("w1", "warm", "click", 20_002, item_id="i40")]).recommendations[0]
    assert {i.item_id for i in warm.items} != {"i7", "i8", "i9"}  # known items use the model
    off = make(ServingConfig(top_k=3, cold_start_trending=False))
    off.step({}, hot)
    (model_only,) = off.step({}, [Event("c1", "newcomer", "search", 20_000, query="anything")]).recommendations
    assert len(model_only.items) == 3


def test_trending_decays_and_respects_exclusions():
    from stream_rec.core.trending import TrendingItems

    t = TrendingItems(10, half_life_s=1.0)
    t.update(np.array([1, 1, 1, 2]), ts_ms=0)
    t.update(np.array([3, 3]), ts_ms=10_000)  # 10 half-lives later: item 1's 3 counts are ~0.003
    rows, scores = t.top(2, None, batch=1)
    assert rows[0].tolist() == [3, 1] and scores[0, 0] > scores[0, 1]
    rows, _ = t.top(2, [np.array([3])], batch=1)
    assert rows[0].tolist() == [1, 2]


def test_explanations_point_at_the_most_similar_session_item():
    base = make()
    rec = Recommender(base.encoder, base.index, base.vocab, model_version="t", max_len=50, query_buckets=64,
                      config=ServingConfig(top_k=5, explain=True), item_vectors=base.encoder.vectors)
    events = [Event("e1", "u", "click", 1, item_id="i3"), Event("e2", "u", "click", 2, item_id="i11")]
    (r,) = rec.step({}, events).recommendations
    v = base.encoder.vectors
    for item in r.items:
        row = base.vocab.row(item.item_id)
        best = max(["i3", "i11"], key=lambda s: float(v[row] @ v[base.vocab.row(s)]))
        assert item.because == best
    plain = make().step({}, events).recommendations[0]
    assert [i.item_id for i in plain.items] == [i.item_id for i in r.items]
    assert all(i.because is None for i in plain.items)


def test_warm_up_runs_the_largest_batch_and_changes_no_answer():
    seen = []

    class Recording(LastItemsEncoder):
        def encode(self, inputs):
            seen.append(inputs.items.shape)
            return super().encode(inputs)

    cold, warm = make(), make()
    warm.encoder = Recording(warm.encoder.vectors)
    warm.warm_up()
    assert seen == [(warm.config.max_encode_batch, warm.max_len)]
    events = stream(40)
    answers = [[(r.source_event_id, r.items) for r in run_events(rec, events)] for rec in (warm, cold)]
    assert answers[0] == answers[1]
