"""What a fault run produced and what came back: every event, every answer, lost and duplicated.

The workers run with ``coalesce`` off, so every valid event gets exactly one answer (its
``source_event_id``): an event with no answer is lost, a second answer for it is a duplicate
(at-least-once redelivery after a crash or a rebalance). Event ids are ``<user>.<seq>``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..core.events import Event, encode_event
from ..settings import Settings

__all__ = ["Ledger", "SteadyProducer", "AnswerReader", "recovery_s"]


@dataclass
class Ledger:
    sent: dict[str, float] = field(default_factory=dict)  # acked event id -> when it was sent
    answered: dict[str, float] = field(default_factory=dict)  # event id -> first answer's arrival
    partition: dict[str, int] = field(default_factory=dict)  # event id -> partition of its answer
    answers: Counter[str] = field(default_factory=Counter)  # event id -> answers seen
    poison_sent: int = 0
    dead_letters: int = 0
    produce_retries: int = 0

    def lost(self) -> list[str]:
        return [e for e in self.sent if e not in self.answered]

    def max_latency_s(self, since: float) -> float | None:
        """The longest wait for an answer of an event sent at or after ``since``."""
        waits = [
            self.answered[e] - t for e, t in self.sent.items() if t >= since and e in self.answered
        ]
        return max(waits) if waits else None

    def duplicated(self) -> int:
        return sum(n - 1 for n in self.answers.values() if n > 1)

    def counts(self) -> dict[str, int]:
        return {
            "produced": len(self.sent),
            "answered": len(self.answered),
            "lost": len(self.lost()),
            "duplicated": self.duplicated(),
        }


def recovery_s(
    ledger: Ledger, t0: float, partitions: int, horizon_s: float = 120.0
) -> float | None:
    """Seconds from ``t0`` until every partition answered an event sent at or after ``t0``.

    An untouched partition answers within milliseconds; a partition whose worker died
    answers once another worker took it over. None if some partition never answered.
    """
    first: dict[int, float] = {}
    for event_id, t_sent in ledger.sent.items():
        t_ans = ledger.answered.get(event_id)
        if t_sent < t0 or t_ans is None or t_sent > t0 + horizon_s:
            continue
        p = ledger.partition[event_id]
        first[p] = min(first.get(p, t_ans), t_ans)
    if len(first) < partitions:
        return None
    return max(first.values()) - t0


class SteadyProducer:
    """Sends events at ``rate`` per second (skewed users and items) until stopped; a send that
    fails is sent again (the ledger counts it once, when it is acknowledged)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        item_ids: Sequence[str],
        users: int = 2000,
        rate: float = 100.0,
        seed: int = 0,
    ) -> None:
        self.settings, self.ledger = settings, ledger
        self.items, self.users, self.rate = list(item_ids), users, rate
        self.rng = random.Random(seed)
        self.seq: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        from ..kafka.clients import producer_config

        self.producer = AIOKafkaProducer(
            **producer_config(self.settings, linger_ms=1, request_timeout_ms=60_000)
        )
        await self.producer.start()
        self._task = asyncio.create_task(self._run())

    def _event(self) -> tuple[bytes, bytes, str]:
        user = (
            f"u{min(int(self.rng.paretovariate(1.2)), self.users)}-{self.rng.randrange(self.users)}"
        )
        self.seq[user] += 1
        item = self.items[min(int(self.rng.paretovariate(1.0)) - 1, len(self.items) - 1)]
        event_id = f"{user}.{self.seq[user]}"
        event = Event(event_id, user, "click", int(time.time() * 1000), item_id=item)
        return user.encode(), encode_event(event), event_id

    async def _send(self, key: bytes, value: bytes, event_id: str) -> None:
        t_send = time.perf_counter()  # the first try: a retried event's wait counts
        while True:
            try:
                await (await self.producer.send(self.settings.events_topic, key=key, value=value))
                self.ledger.sent[event_id] = t_send
                return
            except Exception:  # a frozen or restarting broker: send it again
                self.ledger.produce_retries += 1
                await asyncio.sleep(0.5)

    def send_now(self, key: bytes | None, value: bytes | None, event_id: str | None = None) -> None:
        """Send one record beside the steady stream (poison records have no event id)."""
        if event_id is None:
            self.ledger.poison_sent += 1
            task = asyncio.create_task(self._send_raw(key, value))
        else:
            assert key is not None and value is not None
            task = asyncio.create_task(self._send(key, value, event_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_raw(self, key: bytes | None, value: bytes | None) -> None:
        await (await self.producer.send(self.settings.events_topic, key=key, value=value))

    async def _run(self) -> None:
        t_next = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            due = int((now - t_next) * self.rate) + 1
            for _ in range(min(due, 1000)):
                self.send_now(*self._event())
            t_next = now + 1.0 / self.rate
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))

    def event(self) -> tuple[bytes, bytes, str]:
        return self._event()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self.producer is not None:
            await self.producer.stop()


class AnswerReader:
    """Reads the recommendations and dead-letter topics into the ledger from their start."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self.settings, self.ledger = settings, ledger
        self._task: asyncio.Task[None] | None = None
        self.consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from ..kafka.clients import consumer_config

        s = self.settings
        self.consumer = AIOKafkaConsumer(
            s.recs_topic,
            s.dlq_topic,
            **consumer_config(
                s,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=20,
            ),
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        ledger, recs = self.ledger, self.settings.recs_topic
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for tp, messages in batch.items():
                if tp.topic != recs:
                    ledger.dead_letters += len(messages)
                    continue
                for m in messages:
                    if m.value is None:
                        continue
                    event_id = orjson.loads(m.value)["source_event_id"]
                    ledger.answers[event_id] += 1
                    if event_id not in ledger.answered:
                        ledger.answered[event_id] = now
                        ledger.partition[event_id] = tp.partition

    async def settle(self, timeout_s: float = 60.0, quiet_s: float = 3.0) -> None:
        """Wait until every acknowledged event is answered, or nothing arrived for
        ``quiet_s`` after ``timeout_s``."""
        t_end = time.perf_counter() + timeout_s
        while time.perf_counter() < t_end and self.ledger.lost():
            await asyncio.sleep(0.2)
        await asyncio.sleep(quiet_s)  # late duplicates

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.stop()
