"""Forgetting a user (issue 11): a forget event drops the user's earlier events of the batch,
deletes the stored state with a changelog tombstone and tombstones their recommendations; an
event after the forget starts a new state."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from stream_rec.core.intake import take_records
from stream_rec.kafka.produce import forget_records
from tests.unit.test_direct_batch import Record, click, worker


def _forget(user: str) -> bytes:
    (_, value, _), = forget_records([user])
    return value


def test_the_intake_drops_a_forgetting_users_events_up_to_the_forget():
    records = [(b"u1", click("a", "u1", "i1", 1), 0, None, "o0"),
               (b"u2", click("b", "u2", "i2", 2), 1, None, "o1"),
               (b"u1", _forget("u1"), 2, None, "o2"),
               (b"u1", click("c", "u1", "i3", 3), 3, None, "o3")]
    intake = take_records(records)
    assert [e.event_id for e in intake.events] == ["b", "c"]
    assert intake.offsets == [1, 3] and intake.sources == ["o1", "o3"]
    assert intake.forgotten == {"u1"} and not intake.invalid


def test_the_direct_worker_deletes_the_state_and_tombstones_both_topics(tmp_path):
    w = worker(tmp_path)
    tp = TopicPartition("events", 0)
    first = {tp: [Record("events", 0, 0, b"u1", click("a", "u1", "i1", 1)),
                  Record("events", 0, 1, b"u2", click("b", "u2", "i2", 2))]}
    forget = {tp: [Record("events", 0, 2, b"u1", _forget("u1")),
                   Record("events", 0, 3, b"u2", _forget("u2")),
                   Record("events", 0, 4, b"u2", click("c", "u2", "i3", 5))]}

    async def go():
        for batch in (first, forget):
            await (await w._process(batch))

    asyncio.run(go())
    from stream_rec.core.session import SessionState

    u1, u2 = w.db.get_many(0, [b"u1", b"u2"])
    w.db.close_all()
    assert u1 is None
    assert len(SessionState.from_bytes(u2)) == 1  # only the event after its forget
    assert [k for _, k, v, _ in w.producer.to(w.changelog) if v is None] == [b"u1"]
    assert [k for _, k, v, _ in w.producer.to("recs") if v is None] == [b"u1"]
    assert w.stats.forgotten == 2


def test_the_gateway_drops_a_forgotten_users_latest_recommendations():
    from stream_rec.gateway.latest import LatestRecommendations

    latest = LatestRecommendations(10)
    latest.publish("u1", b"{}")
    latest.forget("u1")
    assert latest.latest("u1") is None
