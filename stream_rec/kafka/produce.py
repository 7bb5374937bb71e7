"""Send events to the events topic: generated shoppers or a JSONL file, at a controlled rate."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from ..settings import Settings

__all__ = ["ProduceOptions", "produce", "Pacer", "generated_records", "file_records",
           "forget_records"]


@dataclass(frozen=True)
class ProduceOptions:
    file: str | None = None
    count: int = 10_000
    rate: float = 0.0  # events/s, 0 = flat out
    invalid_rate: float = 0.0
    users: int = 2000
    items: int = 3000
    seed: int = 7
    live_time: bool = True


class Pacer:
    """Paces a loop to ``rate`` iterations per second (0 = no pacing), sleeping in slices."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.perf_counter()
        self.count = 0

    async def tick(self) -> None:
        self.count += 1
        if self.rate <= 0:
            if self.count % 2000 == 0:
                await asyncio.sleep(0)
            return
        due = self.start + self.count / self.rate
        delay = due - time.perf_counter()
        if delay > 0.001:
            await asyncio.sleep(delay)


def generated_records(
    opts: ProduceOptions, now_ms: int | None
) -> Iterator[tuple[bytes, bytes, bool]]:
    from ..generate import EventGenerator, GeneratorConfig

    gen = EventGenerator(GeneratorConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed))
    return iter(gen.records(opts.count, invalid_rate=opts.invalid_rate, now_ms=now_ms))


def file_records(path: str) -> Iterator[tuple[bytes | None, bytes, bool]]:
    """(key, value, valid-unknown) per JSONL line; the key is the line's user_id when it has one."""
    import orjson

    from ..generate import read_jsonl

    for line in read_jsonl(path):
        key = None
        try:
            obj = orjson.loads(line)
            if isinstance(obj, dict) and obj.get("user_id") is not None:
                key = str(obj["user_id"]).encode()
        except orjson.JSONDecodeError:
            pass
        yield key, line, True


def forget_records(users: Iterable[str]) -> Iterator[tuple[bytes | None, bytes, bool]]:
    """One ``forget`` event per user, keyed by the user (so it lands in the user's partition,
    after every event of theirs already sent)."""
    now = int(time.time() * 1000)
    for user in users:
        event = {"event_id": f"forget-{uuid.uuid4().hex}", "user_id": user, "type": "forget",
                 "ts": now}
        yield user.encode(), orjson.dumps(event), True


async def send_records(
    settings: Settings,
    records: Iterable[tuple[bytes | None, bytes, bool]],
    rate: float,
    progress: bool = True,
) -> int:
    from aiokafka import AIOKafkaProducer

    from .clients import producer_config
    from .reach import start_client

    producer = AIOKafkaProducer(**producer_config(settings, linger_ms=5))
    await start_client(producer, settings.bootstrap_servers)
    pacer = Pacer(rate)
    n = 0
    last = time.perf_counter()
    try:
        pending = []
        for key, value, _ in records:
            pending.append(await producer.send(settings.events_topic, value=value, key=key))
            n += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            await pacer.tick()
            if progress and time.perf_counter() - last > 2:
                last = time.perf_counter()
                print(f"  sent {n:,} records ({n / (last - pacer.start):,.0f}/s)", file=sys.stderr)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


def produce(settings: Settings, opts: ProduceOptions) -> int:
    if opts.file:
        records: Iterable[tuple[bytes | None, bytes, bool]] = file_records(opts.file)
    else:
        records = generated_records(opts, int(time.time() * 1000) if opts.live_time else None)
    return asyncio.run(send_records(settings, records, opts.rate))
