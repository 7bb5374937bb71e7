"""The served-model bench's workload, its scoring of arrived answers, and the latency hops."""

from __future__ import annotations

import pytest

from stream_rec.bench.hops import HOPS, HopClock
from stream_rec.bench.served import ServedOptions, ServedWorkload, interleaved, served_quality
from stream_rec.core.events import Event, Recommendation, ScoredItem, encode_recommendation
from stream_rec.core.session import SessionPolicy
from stream_rec.errors import ConfigError
from stream_rec.evaluation.cases import prefix_states

SESSIONS = [
    (Event("a1", "ua", "click", 1, "i1"), Event("a2", "ua", "click", 2, "i2"),
     Event("a3", "ua", "click", 3, "i3")),
    (Event("b1", "ub", "click", 1, "i4", session_id="s"), Event("b2", "ub", "click", 2, "i5",
                                                                 session_id="s")),
]


def workload() -> ServedWorkload:
    cases, _ = prefix_states(SESSIONS, SessionPolicy(max_len=50))
    return ServedWorkload("events", SESSIONS, cases)


def answer(source: str, *items: str) -> bytes:
    return encode_recommendation(Recommendation(
        "u", tuple(ScoredItem(i, 1.0) for i in items), "v1", source, 1, 2))


def test_the_stream_is_the_test_events_interleaved_then_rounds_under_fresh_ids():
    w = workload()
    assert w.n_events == 5
    events = list(w.events(12))
    # Round 0: exactly the test events, the open sessions taking turns, each user's in order.
    assert [e.event_id for e in events[:5]] == ["a1", "b1", "a2", "b2", "a3"]
    assert [e.event_id for e in events[5:10]] == ["a1~r1", "b1~r1", "a2~r1", "b2~r1", "a3~r1"]
    assert {e.user_id for e in events[5:10]} == {"ua~r1", "ub~r1"}
    assert events[6].session_id == "s~r1" and events[5].session_id is None
    assert [e.event_id for e in events[10:]] == ["a1~r2", "b1~r2"]
    key, value, valid = next(w.records(1))
    assert key == b"ua" and b'"event_id":"a1"' in value and valid


def test_interleaving_keeps_each_sessions_order_and_opens_the_next_when_one_ends():
    sessions = [[Event(f"{u}{j}", u, "click", j, "i") for j in range(n)]
                for u, n in (("a", 3), ("b", 1), ("c", 2), ("d", 2))]
    ids = [e.event_id for e in interleaved(sessions, 2)]
    assert ids == ["a0", "b0", "a1", "c0", "a2", "c1", "d0", "d1"]
    back_to_back = [e.event_id for s in sessions for e in s]
    assert [e.event_id for e in interleaved(sessions, 1)] == back_to_back
    assert sorted(ids) == sorted(e.event_id for e in interleaved(sessions, 1000))


def test_a_users_sessions_never_overlap():
    # a's second visit waits for its first to end, and the others take turns meanwhile
    sessions = [[Event(f"{name}{j}", user, "click", j, "i") for j in range(n)]
                for name, user, n in (("a", "a", 3), ("A", "a", 2), ("b", "b", 2), ("c", "c", 1))]
    ids = [e.event_id for e in interleaved(sessions, 2)]
    assert ids == ["a0", "b0", "a1", "b1", "a2", "c0", "A0", "A1"]
    assert sorted(ids) == sorted(e.event_id for s in sessions for e in s)
    users_open: dict[str, str] = {}
    for e in interleaved(sessions, 1000):
        session = e.event_id[0]
        assert users_open.setdefault(e.user_id, session) == session or e.event_id.endswith("0")
        users_open[e.user_id] = session


def test_quality_ranks_each_prefix_in_the_answer_to_its_last_event():
    w = workload()  # prefixes: a1 -> i2, a2 -> i3, b1 -> i5
    answers = [answer("a1", "i9", "i2"), answer("a1", "i2"),  # a redelivery: the first counts
               answer("a2", "i3"), answer("a1~r1", "i2"), answer("a3", "i1")]  # b1: never answered
    out = served_quality(w, answers, k=20, catalogue_size=10)
    q = out["quality"]
    assert q["prefixes"] == 3 and q["unanswered_prefixes"] == 1
    assert q["events"] == 5 and q["answered_events"] == 3 and q["unanswered_events"] == 2
    assert out["hr@20"] == pytest.approx(200 / 3) and out["hr@10"] == out["hr@20"]
    assert out["mrr@20"] == pytest.approx(100 * (1 / 2 + 1) / 3)


def test_served_options_name_what_is_missing():
    with pytest.raises(ConfigError, match="--events-file"):
        ServedOptions(dataset="events").validated()
    with pytest.raises(ConfigError, match="one of"):
        ServedOptions(dataset="generated").validated()


def test_hops_add_up_to_the_latency():
    clock = HopClock()
    clock.sent["e"], clock.acked["e"] = 1000.0, 1003.0
    clock.on_answer("e", emitted_ts=1010, record_ts=1012, received_ms=1020.0)
    clock.on_answer("unknown", 1, 2, 3.0)  # not sent in this phase: no sample
    out = clock.summary([20.0], {"compute_ms_per_batch": 4.0, "events_per_batch": 2.0})
    assert [out[h]["mean"] for h in HOPS] == [3.0, 7.0, 2.0, 8.0]
    assert out["samples"] == 1 and out["latency_mean"] == 20.0
    assert out["fetch_and_batch_wait_ms_inferred"] == 3.0
    assert "broker_to_answer_split" not in out  # no fetch probe ran


def test_a_fetch_probe_splits_the_workers_hop_into_the_brokers_fetch_and_the_rest():
    clock = HopClock()
    clock.on_fetch("early", 1000.0)  # fetched before it was sent in this phase: ignored
    clock.sent["e"], clock.acked["e"] = 1000.0, 1003.0
    clock.on_fetch("e", 1008.0)
    clock.on_answer("e", emitted_ts=1010, record_ts=1012, received_ms=1020.0)
    split = clock.summary([20.0])["broker_to_answer_split"]
    assert (split["broker_fetch"]["mean"], split["worker_after_fetch"]["mean"]) == (5.0, 2.0)
    assert split["samples"] == 1 and not clock.fetched
