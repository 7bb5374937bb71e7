"""Property tests (hypothesis, issue 11): arbitrary bytes never make the event decoder raise (an
event or a dead letter, always), arbitrary bytes decode as a session state or raise the
documented StateDecodeError, and arbitrary well-formed events, with out-of-order and duplicate
offsets and event ids, never make Recommender.step raise. Small and fast: run in the unit tier."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_rec.core.events import MAX_TS, REASON_CODES, Event, InvalidEvent, dead_letter
from stream_rec.core.intake import RecordLimits, parse_record, take_records
from stream_rec.core.session import SessionPolicy, SessionState, StateDecodeError, apply_event
from tests.unit.test_core import N_ITEMS, make

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = RecordLimits(max_record_bytes=4096)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
    st.text(max_size=40))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=10), inner, max_size=4), max_leaves=12)
FIELDS = ("event_id", "user_id", "type", "item_id", "query", "ts", "session_id")
event_like = st.fixed_dictionaries({}, optional={
    name: st.one_of(json_values, st.sampled_from(["click", "search", "purchase", "u1"]),
                    st.integers(0, MAX_TS + 10))
    for name in FIELDS})


def _check(parsed, raw):
    assert isinstance(parsed, (Event, InvalidEvent))
    if isinstance(parsed, InvalidEvent):
        assert parsed.code in REASON_CODES
        letter = dead_letter(parsed, "events", 0, 0, 0, max_original_bytes=256)
        assert len(letter) < 6 * 256 + 2048
    else:
        assert 0 <= parsed.ts <= MAX_TS


@FAST
@given(raw=st.binary(max_size=5000), key=st.none() | st.binary(max_size=40),
       timestamp=st.none() | st.integers(-(2**70), 2**70))
def test_arbitrary_bytes_are_an_event_or_a_dead_letter(raw, key, timestamp):
    _check(parse_record(key, raw, timestamp, LIMITS), raw)


@FAST
@given(obj=event_like, keyed=st.booleans(), timestamp=st.none() | st.integers(0, 2**45))
def test_arbitrary_json_objects_are_an_event_or_a_dead_letter(obj, keyed, timestamp):
    raw = orjson.dumps(obj)
    key = str(obj.get("user_id")).encode() if keyed else None
    _check(parse_record(key, raw, timestamp, LIMITS), raw)


@FAST
@given(raw=st.binary(max_size=3000))
def test_arbitrary_bytes_decode_as_a_state_or_raise_state_decode_error(raw):
    try:
        state = SessionState.from_bytes(raw)
    except StateDecodeError:
        return
    assert state.to_bytes() == raw  # what decodes is exactly what encodes


item_ids = st.one_of(st.integers(0, N_ITEMS - 1).map(lambda i: f"i{i}"), st.text(min_size=1,
                                                                                  max_size=8))
events = st.builds(
    Event,
    event_id=st.sampled_from(["e1", "e2", "e3"]) | st.text(min_size=1, max_size=8),
    user_id=st.sampled_from(["u1", "u2", "u3"]),
    type=st.sampled_from(["click", "search", "purchase"]),
    ts=st.integers(0, MAX_TS) | st.integers(1_700_000_000_000, 1_700_000_100_000),
    item_id=item_ids,
    query=st.text(min_size=1, max_size=30).filter(str.strip),  # parse rejects blank queries
    session_id=st.none() | st.sampled_from(["s1", "s2"]),
).map(lambda e: Event(e.event_id, e.user_id, e.type, e.ts,
                      None if e.type == "search" else e.item_id,
                      e.query if e.type == "search" else None, e.session_id))
CORE = make()


@FAST
@given(batches=st.lists(st.lists(events, min_size=1, max_size=12), min_size=1, max_size=4),
       data=st.data())
def test_well_formed_events_in_any_order_never_crash_the_core(batches, data):
    states: dict[str, SessionState] = {}
    for batch in batches:
        offsets = data.draw(st.lists(st.integers(-1, 20), min_size=len(batch),
                                     max_size=len(batch)))
        result = CORE.step({e.user_id: states.get(e.user_id) for e in batch}, batch, offsets)
        states.update(result.states)
        assert len(result.answers) <= len(batch)
        for state in result.states.values():
            assert len(state) <= CORE.max_len
            assert SessionState.from_bytes(state.to_bytes()).to_bytes() == state.to_bytes()


@FAST
@given(evs=st.lists(events, min_size=1, max_size=20))
def test_the_intake_takes_what_the_encoder_wrote(evs):
    from stream_rec.core.events import encode_event

    records = [(e.user_id.encode(), encode_event(e), i, None, None) for i, e in enumerate(evs)]
    intake = take_records(records)
    assert intake.events == evs and not intake.invalid
    state = SessionState.empty()
    for e in intake.events:
        state = apply_event(state, e, SessionPolicy(max_len=5))
    assert len(state) <= 5
