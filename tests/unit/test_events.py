import numpy as np
import orjson
import pytest

from stream_rec.core.events import (
    Event,
    InvalidEvent,
    Recommendation,
    RecommendationBatch,
    ScoredItem,
    dead_letter,
    decode_recommendation,
    encode_event,
    encode_recommendation,
    parse_event,
)


def _raw(**kw):
    base = {"event_id": "e1", "user_id": "u1", "type": "click", "item_id": "i1", "ts": 1000}
    base.update(kw)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_valid_events_of_each_type():
    assert parse_event(_raw()) == Event("e1", "u1", "click", 1000, item_id="i1")
    e = parse_event(_raw(type="search", item_id=..., query="red shoes", session_id="s1"))
    assert e == Event("e1", "u1", "search", 1000, query="red shoes", session_id="s1")
    assert parse_event(_raw(type="purchase", item_id=42)).item_id == "42"  # int ids become strings


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object; got list"),
        (_raw(event_id=...), "missing field `event_id`"),
        (_raw(user_id=...), "missing field `user_id`"),
        (_raw(type=...), "missing field `type`"),
        (_raw(type="view"), "unknown event type 'view'"),
        (_raw(ts=...), "missing field `ts`"),
        (_raw(ts="yesterday"), "field `ts` must be a non-negative integer"),
        (_raw(ts=-5), "field `ts` must be a non-negative integer"),
        (_raw(item_id=...), "missing field `item_id`"),
        (_raw(item_id=[1]), "field `item_id` must be a string or integer; got list"),
        (_raw(type="search", item_id=..., query=""), "a search event needs a non-empty string `query`"),
        (_raw(user_id=True), "field `user_id` must be a string or integer; got bool"),
    ],
)
def test_invalid_events_carry_a_reason_and_the_original_bytes(raw, reason):
    out = parse_event(raw)
    assert isinstance(out, InvalidEvent)
    assert reason in out.reason
    assert out.raw == raw


def test_key_must_match_user():
    assert isinstance(parse_event(_raw(), key=b"u1"), Event)
    bad = parse_event(_raw(), key=b"u2")
    assert isinstance(bad, InvalidEvent) and "does not match user_id" in bad.reason


def test_event_round_trip():
    e = Event("e1", "u1", "search", 5, query="boots", session_id="s")
    assert parse_event(encode_event(e)) == e


def test_recommendation_round_trip_and_fields():
    rec = Recommendation("u1", (ScoredItem("i1", 0.9), ScoredItem("i2", 0.5)), "v1", "e9", 100, 107)
    raw = encode_recommendation(rec)
    assert set(orjson.loads(raw)) == {"user_id", "items", "model_version", "source_event_id", "event_ts", "emitted_ts"}
    assert decode_recommendation(raw) == rec


@pytest.mark.parametrize("because", [None, [[2, 0, 1], [0, 0, 0]]])
def test_a_batch_publishes_the_bytes_of_its_recommendations(because):
    """Workers publish RecommendationBatch.records() without building the objects: same bytes,
    rows of 0 (no item) dropped, the supporting item resolved from its row."""
    batch = RecommendationBatch(
        users=["u1", "ü2"], source_event_ids=["e1", "e2"], event_ts=[10, 11], emitted_ts=12,
        model_version="v1", item_ids=["i1", "i2", "i3"], rows=np.array([[3, 1, 2], [2, 0, 0]]),
        scores=np.array([[0.91234567, 0.5, -0.25], [0.1, 0.0, 0.0]], np.float32), because=because,
    )
    recs = batch.to_list()
    assert [len(r.items) for r in recs] == [3, 1]
    assert recs[0].items[0] == ScoredItem("i3", 0.912346, "i2" if because else None)  # as published
    assert batch.records() == [(r.user_id.encode(), encode_recommendation(r)) for r in recs]
    assert orjson.loads(batch.records()[0][1])["items"][0]["score"] == 0.912346


def test_dead_letter_keeps_reason_original_and_origin():
    inv = parse_event(b"\xff\xfe garbage")
    assert isinstance(inv, InvalidEvent)
    rec = orjson.loads(dead_letter(inv, "events", 3, 17, 123))
    assert rec["source"] == {"topic": "events", "partition": 3, "offset": 17}
    assert rec["original_encoding"] == "base64" and rec["reason"]
    ok = orjson.loads(dead_letter(parse_event(b"{}"), "events", 0, 1, 2))
    assert ok["original"] == "{}" and ok["original_encoding"] == "utf-8"
