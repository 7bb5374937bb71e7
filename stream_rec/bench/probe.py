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
from .hops import HopClock

__all__ = ["FetchProbe"]


class FetchProbe:
    """Tells ``clock`` when each event of the events topic could first be had (epoch ms)."""

    def __init__(self, clock: HopClock) -> None:
        self.clock = clock
        self.fetched = 0
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, settings: Settings) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from ..kafka.clients import consumer_config

        wait_ms = max(1, int(settings.batch_wait_ms))
        c = AIOKafkaConsumer(**consumer_config(settings, group_id=None, enable_auto_commit=False,
                                               fetch_max_wait_ms=wait_ms,
                                               max_partition_fetch_bytes=4 << 20))
        await c.start()
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        c.assign(tps)
        await c.seek_to_end(*tps)
        for tp in tps:  # positions resolved before the phase produces anything
            await c.position(tp)
        self._consumer = c
        self._task = asyncio.create_task(self._read(wait_ms))

    async def _read(self, wait_ms: int) -> None:
        from ..kafka.fetch_wait import AdaptiveFetchWait

        fetch_wait = AdaptiveFetchWait(self._consumer, short_ms=wait_ms)  # as the worker's
        while True:
            batch = await self._consumer.getmany(timeout_ms=wait_ms, max_records=256)
            now_ms = time.time() * 1000.0
            n = sum(len(msgs) for msgs in batch.values())
            fetch_wait.update(n)
            self.fetched += n
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
