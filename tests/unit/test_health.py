"""/health/live and /health/ready tell the truth: a stall with work waiting, a run of failed
commits and a restore are seen (serving/health.py), on the direct worker's status server too."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from stream_rec.kafka.probe import free_port
from stream_rec.serving.health import Health
from tests.unit.test_direct_batch import worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_without_lag_is_healthy_and_a_stall_with_lag_is_not():
    clock = Clock()
    h = Health(stall_s=30, commit_failures=3, clock=clock)
    clock.now += 300
    assert h.report({0: 0, 1: 0}).live == []  # nothing to do: not stuck
    report = h.report({0: 0, 1: 12})
    assert report.live and "stalled" in report.live[0] and "12" in report.live[0]
    assert report.body("live")[0] == 503 and report.body("ready")[0] == 503
    h.progressed()
    assert h.report({1: 12}).body("live") == (200, {"status": "ok", "problems": []})


def test_a_run_of_failed_commits_fails_both_and_one_success_clears_it():
    h = Health(stall_s=30, commit_failures=3, clock=Clock())
    for _ in range(2):
        h.commit_failed(RuntimeError("UnknownTopicOrPartitionError"))
    assert h.report({}).live == []
    h.commit_failed(RuntimeError("UnknownTopicOrPartitionError"))
    assert "commits failing: 3 in a row" in h.report({}).live[0]
    h.commit_ok()
    assert h.report({}).ready == []


def test_restoring_fails_readiness_only_and_restarts_the_stall_clock():
    clock = Clock()
    h = Health(stall_s=30, clock=clock)
    h.restore_started([0, 2])
    clock.now += 600  # a long restore is not a stall
    report = h.report({0: 5000})
    assert report.live == [] and "restoring partitions [0, 2]" in report.ready[0]
    h.restore_finished([0, 2])
    assert h.report({0: 5000}).ready == []


def test_zero_turns_a_check_off():
    clock = Clock()
    h = Health(stall_s=0, commit_failures=0, clock=clock)
    clock.now += 1e6
    for _ in range(50):
        h.commit_failed(OSError("down"))
    assert h.report({0: 10}).ready == []


class FailingConsumer:
    def __init__(self) -> None:
        self.calls = 0

    async def commit(self, offsets):
        self.calls += 1
        raise RuntimeError("OffsetCommit failed: UnknownTopicOrPartitionError")


def test_the_direct_worker_keeps_failed_offsets_and_its_endpoints_say_so(tmp_path):
    w = worker(tmp_path)
    w.settings = w.settings.with_(worker_port=free_port())
    w.health.max_commit_failures = 2
    w.consumer = FailingConsumer()  # type: ignore[assignment]
    tp = TopicPartition("events", 0)

    async def go() -> list[tuple[int, dict]]:
        from aiohttp import ClientSession

        for _ in range(2):
            w._to_commit[tp] = 7
            w._last_commit = 0.0
            await w._commit()  # logged and counted, not raised
        assert w._to_commit == {tp: 7}  # kept for the next try
        web = await w._start_web()
        out = []
        try:
            async with ClientSession() as http:
                for which in ("live", "ready"):
                    url = f"http://127.0.0.1:{w.settings.worker_port}/health/{which}"
                    async with http.get(url) as response:
                        out.append((response.status, await response.json()))
        finally:
            await web.cleanup()
        return out

    answers = asyncio.run(go())
    w.db.close_all()
    assert [status for status, _ in answers] == [503, 503]
    assert "commits failing: 2 in a row" in answers[0][1]["problems"][0]
