"""--state-ttl-days (issue 11, direct engine): idle states are deleted with changelog tombstones;
active ones stay; an expired user's next event starts afresh."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from stream_rec.core.session import SessionState, state_last_ts
from tests.unit.test_direct_batch import Record, click, worker
from topologies.state_ttl import expire_idle_states, sweep_period_s

DAY_MS = 86_400_000


def test_the_header_gives_last_ts_without_a_full_decode():
    from stream_rec.core.events import Event
    from stream_rec.core.session import SessionPolicy, apply_event

    state = apply_event(SessionState.empty(), Event("e", "u", "click", 1234, item_id="i"),
                        SessionPolicy(), 3)
    assert state_last_ts(state.to_bytes()) == 1234
    assert state_last_ts(b"\x00" * 3) is None


@pytest.mark.parametrize("days, period", [(0.0001, 10.0), (1, 864.0), (30, 3600.0)])
def test_the_sweep_period_is_a_hundredth_of_the_ttl_within_bounds(days, period):
    assert sweep_period_s(days) == pytest.approx(period)


def test_idle_states_expire_with_changelog_tombstones_and_active_ones_stay(tmp_path):
    w = worker(tmp_path)
    w.settings = w.settings.with_(state_ttl_days=7)
    tp = TopicPartition("events", 0)
    w.consumer = SimpleNamespace(assignment=lambda: {tp})  # type: ignore[assignment]
    now = 100 * DAY_MS
    batch = {tp: [Record("events", 0, 0, b"old", click("a", "old", "i1", now - 8 * DAY_MS)),
                  Record("events", 0, 1, b"new", click("b", "new", "i2", now - 1 * DAY_MS))]}

    async def go():
        await (await w._process(batch))
        expired = await expire_idle_states(w, now)
        again = await expire_idle_states(w, now)
        return expired, again

    expired, again = asyncio.run(go())
    old, new = w.db.get_many(0, [b"old", b"new"])
    w.db.close_all()
    assert (expired, again) == (1, 0)
    assert old is None and new is not None
    tombstones = [(k, v) for _, k, v, _ in w.producer.to(w.changelog) if v is None]
    assert tombstones == [(b"old", None)]
