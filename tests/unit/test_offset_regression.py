"""Offset regressions are detected, never silent (issue 11): a record at or below a state's last
applied offset is a redelivery only if its event time is not later than the state's; otherwise
the events topic was re-created or truncated, and by default the record starts a new epoch."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from stream_rec.core.events import Event, decode_recommendation
from stream_rec.core.session import (
    SessionPolicy,
    SessionState,
    apply_event,
    count_offset_checks,
    fold_events,
    is_redelivery,
    is_regression,
)
from tests.unit.test_direct_batch import Record, click, worker


def ev(eid: str, item: str, ts: int, user: str = "u1") -> Event:
    return Event(event_id=eid, user_id=user, type="click", ts=ts, item_id=item)


def applied(offsets_ts, policy=SessionPolicy()) -> SessionState:
    state = SessionState.empty()
    for i, (offset, ts) in enumerate(offsets_ts):
        state = apply_event(state, ev(f"e{i}", f"i{i}", ts), policy, offset)
    return state


def test_a_redelivery_is_skipped_and_a_regression_starts_a_new_epoch():
    state = applied([(100, 1_000), (101, 2_000)])
    assert is_redelivery(state, 2_000, 101) and is_redelivery(state, 1_000, 100)
    assert not is_regression(state, 2_000, 101)
    assert apply_event(state, ev("e1", "i1", 2_000), SessionPolicy(), 101) is state
    # the topic was re-created: offset 0 again, but a later event
    assert is_regression(state, 5_000, 0)
    after = apply_event(state, ev("n0", "i9", 5_000), SessionPolicy(), 0)
    assert len(after) == 3 and after.last_offset == 0 and after.last_ts == 5_000
    # redeliveries within the new epoch are skipped again
    assert apply_event(after, ev("n0", "i9", 5_000), SessionPolicy(), 0) is after


def test_the_skip_policy_leaves_the_state_alone():
    state = applied([(100, 1_000)])
    policy = SessionPolicy(new_epoch_on_regression=False)
    assert apply_event(state, ev("n0", "i9", 5_000), policy, 0) is state


@pytest.mark.parametrize("new_epoch", [True, False])
def test_the_batch_fold_agrees_with_one_event_at_a_time(new_epoch):
    policy = SessionPolicy(new_epoch_on_regression=new_epoch)
    state = applied([(100, 1_000), (101, 2_000)])
    batch = [ev("r", "i1", 2_000), ev("n0", "i7", 5_000), ev("n1", "i8", 6_000)]
    offsets = [101, 0, 1]
    one = state
    for e, o in zip(batch, offsets):
        one = apply_event(one, e, policy, o)
    folded = fold_events({"u1": state}, batch, policy, offsets)["u1"]
    assert folded.to_bytes() == one.to_bytes()
    assert len(one) == (4 if new_epoch else 2)


def test_a_batch_is_counted_as_redeliveries_and_regressions():
    state = applied([(100, 1_000), (101, 2_000)])
    batch = [ev("r", "i1", 2_000), ev("n0", "i7", 5_000), ev("x", "i2", 9_000, user="u2"),
             ev("m", "i3", 9_500)]
    assert count_offset_checks({"u1": state, "u2": None}, batch, [101, 0, 0, 102]) == (1, 1)


def test_the_direct_worker_applies_counts_and_answers_a_new_epoch(tmp_path):
    w = worker(tmp_path)
    tp = TopicPartition("events", 0)
    old = {tp: [Record("events", 0, 500 + i, b"u1", click(f"a{i}", "u1", f"i{i}", 1_000 + i))
                for i in range(3)]}
    redelivered = {tp: old[tp][1:]}
    new = {tp: [Record("events", 0, i, b"u1", click(f"n{i}", "u1", f"i{i + 5}", 9_000 + i))
                for i in range(2)]}

    async def go():
        for batch in (old, redelivered, new):
            await (await w._process(batch))

    asyncio.run(go())
    state = SessionState.from_bytes(w.db.get_many(0, [b"u1"])[0])
    w.db.close_all()
    assert w.stats.redeliveries == 2 and w.stats.offset_regressions == 2
    assert len(state) == 5 and state.last_offset == 1
    answered = [decode_recommendation(value).source_event_id
                for _, _, value, _ in w.producer.to("recs")]
    assert answered[-1] == "n1", answered  # the new epoch's last event is answered
