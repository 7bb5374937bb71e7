"""A fetch probe: a plain consumer of the events topic beside the workers, fetching as they do.

Why: the worker's hop (the broker's acknowledgement of an event -> the worker's answer) holds
the broker's fetch path as well as the worker's own batch cycle. Tansu holds a fetch for much
of its wait even when records arrive meanwhile (kafka/fetch_wait.py); Apache Kafka answers as
soon as ``fetch.min.bytes`` are there. The probe fetches with the worker's settings (its fetch
wait, adapted the same way) and does nothing else, so the time it has each event is what the
broker's fetch path costs any such consumer; the rest of the hop is the worker's own
(bench/hops.py, ``broker_to_answer_split``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from ..settings import Settings
from .common import consumer_at_end
from .hops import HopClock

__all__ = ["FetchProbe"]


class FetchProbe:
    """Tells ``clock`` when each event of the events topic could first be had (epoch ms)."""

    def __init__(self, clock: HopClock) -> None:
        self.clock = clock
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, settings: Settings) -> None:
        wait_ms = max(1, int(settings.batch_wait_ms))
        self._consumer = await consumer_at_end(settings, settings.events_topic,
                                               fetch_max_wait_ms=wait_ms,
                                               max_partition_fetch_bytes=4 << 20)
        self._task = asyncio.create_task(self._read(wait_ms))

    async def _read(self, wait_ms: int) -> None:
        from ..kafka.fetch_wait import AdaptiveFetchWait

        fetch_wait = AdaptiveFetchWait(self._consumer, short_ms=wait_ms)  # as the worker's
        while True:
            batch = await self._consumer.getmany(timeout_ms=wait_ms, max_records=256)
            now_ms = time.time() * 1000.0
            fetch_wait.update(sum(len(msgs) for msgs in batch.values()))
            for msgs in batch.values():
                for msg in msgs:
                    try:
                        event_id = orjson.loads(msg.value)["event_id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue  # not one of ours
                    self.clock.on_fetch(event_id, now_ms)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
