"""The recommendations topic as our consumer reads it: arrivals, and latency per answered event."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from ..settings import Settings
from .common import Record, consumer_at_end, say
from .hops import HopClock
from .monitor import Monitor


class _Answers:
    """Reads the recommendations topic; latency per answered event, and who is still waiting."""

    def __init__(self, keep: bool = False) -> None:
        self.kept: list[bytes] | None = [] if keep else None  # every record's value, as it came
        self.sent_at: dict[str, float] = {}
        self.clock = HopClock()  # the latency phases' hops (bench/hops.py)
        self.last_sent: dict[str, str] = {}  # user -> last event id sent
        self.waiting: set[str] = set()  # users whose last sent event is not answered yet
        self.latencies: list[float] = []
        self.recs = 0
        self.received = 0  # records read from the topic, all phases
        self.arrivals: list[tuple[float, int]] = []  # (time, received so far) per fetch
        self.parse = False  # saturation only counts; the latency phases parse each record
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    def on_send(self, rec: Record) -> None:
        _, _, event_id, user = rec
        self.sent_at[event_id] = time.perf_counter()
        self.clock.on_send(event_id)
        self.last_sent[user] = event_id
        self.waiting.add(user)

    def on_ack(self, rec: Record) -> None:
        self.clock.on_ack(rec[2])

    def reset(self) -> None:
        """A new latency phase: forget the previous phase's events and latencies."""
        self.parse = True
        self.sent_at.clear()
        self.last_sent.clear()
        self.waiting.clear()
        self.latencies = []
        self.recs = 0
        self.clock.clear()

    async def start(self, settings: Settings, fetch_max_wait_ms: int) -> None:
        c = await consumer_at_end(settings, settings.recs_topic, auto_offset_reset="earliest",
                                  fetch_max_wait_ms=fetch_max_wait_ms)
        self._consumer, self._fetch_max_wait_ms = c, fetch_max_wait_ms
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from ..kafka.fetch_wait import AdaptiveFetchWait

        fetch_wait = AdaptiveFetchWait(self._consumer, short_ms=self._fetch_max_wait_ms)
        while True:
            batch = await self._consumer.getmany(timeout_ms=50, max_records=5000)
            now, now_ms = time.perf_counter(), time.time() * 1000.0
            n = sum(len(msgs) for msgs in batch.values())
            fetch_wait.update(n)  # Tansu answers short fetches with nothing on long logs
            if not n:
                continue
            self.received += n
            self.arrivals.append((now, self.received))
            if self.kept is not None:
                self.kept.extend(msg.value for msgs in batch.values() for msg in msgs)
            if not self.parse:
                continue
            for msgs in batch.values():
                for msg in msgs:
                    obj = orjson.loads(msg.value)
                    eid, user = obj["source_event_id"], obj["user_id"]
                    self.recs += 1
                    sent = self.sent_at.pop(eid, None)
                    if sent is not None:
                        self.latencies.append((now - sent) * 1000.0)
                        self.clock.on_answer(eid, obj["emitted_ts"], msg.timestamp, now_ms)
                    if self.last_sent.get(user) == eid:
                        self.waiting.discard(user)

    async def wait_received(self, count: int, monitor: Monitor, timeout: float) -> tuple[float, bool]:
        """Until ``count`` records have arrived: (the arrival time, False), or (now, True) at
        the timeout. /stats counts a recommendation when the worker hands it to its producer;
        this is when it reached us."""
        deadline = time.perf_counter() + timeout
        while self.received < count:
            monitor.fleet.check_alive()
            monitor.check_stalled(count - self.received)
            if self._task is not None and self._task.done():
                self._task.result()
            if time.perf_counter() > deadline:
                say(f"timed out after {timeout:.0f}s: {self.received:,} of {count:,} recommendations arrived")
                return time.perf_counter(), True
            await asyncio.sleep(0.005)
        return next(t for t, c in self.arrivals if c >= count), False

    async def wait_answered(self, monitor: Monitor, timeout: float) -> tuple[float, bool]:
        """Until every user's last sent event is answered: (that time, False), or at the
        timeout (the time, True): an overloaded phase reports the answers it got."""
        deadline = time.perf_counter() + timeout
        while self.waiting:
            monitor.fleet.check_alive()
            monitor.check_stalled(len(self.waiting))
            if self._task is not None and self._task.done():
                self._task.result()
            if time.perf_counter() > deadline:
                say(f"timed out after {timeout:.0f}s: {len(self.waiting):,} users' last events have no "
                    "recommendation yet; reporting the answers received")
                return time.perf_counter(), True
            await asyncio.sleep(0.005)
        return time.perf_counter(), False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
