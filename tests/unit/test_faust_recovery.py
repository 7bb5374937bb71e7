"""The faust engine's end of table recovery positions the stream partitions before they flow.

The integration test (test_state_survives_restart_and_moving_host[faust]) caught the race about one
run in five; this pins the order itself, so a faust upgrade or a lost patch shows up at once.
"""

import asyncio
from unittest.mock import AsyncMock, MagicMock

from faust.tables.recovery import Recovery

from topologies.faust_recovery import install


def _recovery(calls: list[str], generation: int = 3) -> MagicMock:
    rec = MagicMock()
    consumer = rec.app.consumer
    consumer.assignment.return_value = {"events-0", "events-1", "sessions-changelog-0"}
    consumer.perform_seek = MagicMock(side_effect=lambda: calls.append("seek") or asyncio.sleep(0))
    consumer.resume_partitions.side_effect = lambda tps: calls.append(f"resume {sorted(tps)}")
    consumer.resume_flow.side_effect = lambda: calls.append("flow")
    rec._is_changelog_tp.side_effect = lambda tp: "changelog" in tp
    rec._wait = AsyncMock(side_effect=lambda coro, timeout=None: coro)
    rec.app.on_rebalance_complete.send = AsyncMock()
    rec.app._fetcher.maybe_start = AsyncMock()
    rec.app.consumer_generation_id = generation
    rec.tables.values.return_value = []
    rec.app.assignor.assigned_standbys.return_value = []
    return rec


def test_streams_are_sought_to_committed_offsets_before_they_resume():
    install()
    install()  # idempotent
    calls: list[str] = []
    asyncio.run(Recovery.on_recovery_completed(_recovery(calls), 3))
    assert calls == ["seek", "resume ['events-0', 'events-1']", "flow"]


def test_a_newer_rebalance_leaves_the_partitions_alone():
    install()
    calls: list[str] = []
    rec = _recovery(calls, generation=4)
    asyncio.run(Recovery.on_recovery_completed(rec, 3))
    assert calls == []
    rec.completed.set.assert_not_called()
