"""The gateway's two Kafka clients: the recommendations feed (in) and the events sink (out).

Each gateway process reads every partition of the recommendations topic in a consumer group of
its own (``<app id>-gateway-<random>``), from the beginning and without committing offsets: every
gateway sees every user, so gateways scale out behind any load balancer, and a restarted one
rebuilds its latest-per-user map from the (compactable) topic. Both clients take their
configuration from :mod:`stream_rec.kafka.clients`, so TLS and SASL are the workers' settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from ..core.events import decode_recommendation
from ..settings import Settings
from .latest import LatestRecommendations

__all__ = ["RecommendationFeed", "EventSink"]

log = logging.getLogger(__name__)


class RecommendationFeed:
    """Consumes the recommendations topic into a :class:`LatestRecommendations`."""

    def __init__(self, settings: Settings, latest: LatestRecommendations) -> None:
        self.settings, self.latest = settings, latest
        self.group_id = f"{settings.app_id}-gateway-{uuid.uuid4().hex[:12]}"
        self.consumed = 0
        self.undecodable = 0
        self.last_record_ts = 0
        self.assigned = 0
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from ..kafka.clients import consumer_config, group_timing_ms

        self._consumer = AIOKafkaConsumer(self.settings.recs_topic, **consumer_config(
            self.settings, group_id=self.group_id, auto_offset_reset="earliest",
            enable_auto_commit=False, fetch_max_wait_ms=50, **group_timing_ms(self.settings)))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="gateway-recommendation-feed")

    async def _run(self) -> None:
        consumer = self._consumer
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            self.assigned = len(consumer.assignment())
            for msgs in batch.values():
                for msg in msgs:
                    self._take(msg.key, msg.value, msg.timestamp)

    def _take(self, key: bytes | None, value: bytes | None, timestamp: int) -> None:
        if value is None and key is not None:  # a tombstone: the user was forgotten
            self.latest.forget(key.decode("utf-8", "replace"))
            return
        try:
            rec = decode_recommendation(value or b"")
        except (ValueError, KeyError, TypeError):
            self.undecodable += 1  # not ours to fix: count it, keep serving the others
            return
        if key is not None and key.decode("utf-8", "replace") != rec.user_id:
            self.undecodable += 1
            return
        self.consumed += 1
        self.last_record_ts = timestamp
        self.latest.publish(rec.user_id, value or b"")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # the feed's failure was already visible in /health
                log.exception("the recommendations feed had failed")
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class EventSink:
    """Produces validated events to the events topic, keyed by user id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.produced = 0
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        from ..kafka.clients import producer_config

        self._producer = AIOKafkaProducer(**producer_config(self.settings, linger_ms=1))
        await self._producer.start()

    async def send(self, user_id: str, value: bytes) -> None:
        """Send and wait for the broker's ack, so a 202 means the event is in the topic."""
        await self._producer.send_and_wait(
            self.settings.events_topic, value=value, key=user_id.encode(),
            timestamp_ms=int(time.time() * 1000))
        self.produced += 1

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
