import orjson
import pytest

from stream_rec.events import (
    Event,
    InvalidEvent,
    Recommendation,
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


def test_dead_letter_keeps_reason_original_and_origin():
    inv = parse_event(b"\xff\xfe garbage")
    assert isinstance(inv, InvalidEvent)
    rec = orjson.loads(dead_letter(inv, "events", 3, 17, 123))
    assert rec["source"] == {"topic": "events", "partition": 3, "offset": 17}
    assert rec["original_encoding"] == "base64" and rec["reason"]
    ok = orjson.loads(dead_letter(parse_event(b"{}"), "events", 0, 1, 2))
    assert ok["original"] == "{}" and ok["original_encoding"] == "utf-8"
