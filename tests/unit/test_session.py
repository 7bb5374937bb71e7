import numpy as np
import pytest

from stream_rec.core.events import Event
from stream_rec.core.features import CLICK, PURCHASE, SEARCH, ItemVocab, featurize, item_hash
from stream_rec.core.session import SessionPolicy, SessionState, StateDecodeError, apply_event


def ev(i, typ="click", item=None, ts=None, session=None, query=None):
    item = item if item is not None else (f"i{i}" if typ != "search" else None)
    query = query if query is not None else ("red shoes" if typ == "search" else None)
    return Event(f"e{i}", "u", typ, ts if ts is not None else 1000 * i, item, query, session)


def fold(events, policy=SessionPolicy(), offsets=None):
    s = SessionState.empty()
    for n, e in enumerate(events):
        s = apply_event(s, e, policy, None if offsets is None else offsets[n])
    return s


def test_keeps_last_n_events_in_order_and_bounded_bytes():
    s = fold([ev(i, ["click", "search", "purchase"][i % 3]) for i in range(200)])
    assert len(s) == 50
    assert s.ts.tolist() == [1000 * i for i in range(150, 200)]
    assert len(s.purchased) == 20
    assert len(s.to_bytes()) <= 2048  # the persisted-state budget per user


def test_binary_round_trip_is_exact():
    s = fold([ev(1), ev(2, "search"), ev(3, "purchase", item="i1")], offsets=[5, 6, 7])
    back = SessionState.from_bytes(s.to_bytes())
    for a, b in zip(back.sequence() + (back.ts, back.purchased), s.sequence() + (s.ts, s.purchased)):
        np.testing.assert_array_equal(a, b)
    assert (back.last_offset, back.last_ts, back.session_key) == (7, s.last_ts, s.session_key)
    assert back.types.tolist() == [CLICK, SEARCH, PURCHASE]
    assert back.purchased.tolist() == [item_hash("i1")]


@pytest.mark.parametrize("data", [b"", b"\x09" + b"\x00" * 40, SessionState.empty().to_bytes() + b"x"])
def test_bad_bytes_raise_a_clear_error(data):
    with pytest.raises(StateDecodeError):
        SessionState.from_bytes(data)


def test_redelivered_offsets_are_no_ops():
    s = fold([ev(1), ev(2)], offsets=[10, 11])
    again = apply_event(s, ev(2), SessionPolicy(), offset=11)
    assert again is s


def test_new_session_by_id_or_gap_keeps_purchases():
    p = SessionPolicy(session_gap_ms=10_000)
    s = fold([ev(1, "purchase", ts=0), ev(2, ts=1000)], p)
    s2 = apply_event(s, ev(3, ts=100_000), p)  # 99 s gap > 10 s
    assert len(s2) == 1 and len(s2.purchased) == 1
    s3 = fold([ev(1, session="a"), ev(2, session="a"), ev(3, session="b")], p)
    assert len(s3) == 1


def test_featurize_left_pads_and_maps_unknown_items_to_zero():
    vocab = ItemVocab(["i1", "i2"])
    a = fold([ev(1, item="i1"), ev(2, "search"), ev(3, item="zzz")])
    b = fold([ev(1, item="i2")])
    x = featurize([a.sequence(), b.sequence()], vocab, query_buckets=100, max_len=50)
    assert x.items.tolist() == [[1, 0, 0], [0, 0, 2]]
    assert x.types.tolist() == [[CLICK, SEARCH, CLICK], [0, 0, CLICK]]
    assert (x.queries[0, 1] > 0).sum() == 2 and x.queries.max() < 100
    assert x.queries[1].sum() == 0


def test_vocab_vectorised_lookup():
    vocab = ItemVocab([f"i{i}" for i in range(1000)])
    hashes = np.array([[item_hash("i5"), 0], [item_hash("nope"), item_hash("i999")]])
    assert vocab.rows_for_hashes(hashes).tolist() == [[6, 0], [0, 1000]]
    assert vocab.item_id(6) == "i5" and vocab.row("i999") == 1000
