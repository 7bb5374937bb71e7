"""Print recommendations as they arrive: for one user or for everyone."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from ..core.events import decode_recommendation
from ..settings import Settings

__all__ = ["tail", "format_recommendation"]


def format_recommendation(raw: bytes, width: int = 5) -> str:
    rec = decode_recommendation(raw)
    top = ", ".join(f"{s.item_id} {s.score:.2f}" for s in rec.items[:width])
    lag = rec.emitted_ts - rec.event_ts
    return (f"{rec.user_id:<12} after {rec.source_event_id:<14} -> {top} ... "
            f"({len(rec.items)} items, {rec.model_version}, event->emit {lag} ms)")


async def _tail(
    settings: Settings, user: str | None, from_beginning: bool, limit: int | None, as_json: bool
) -> None:
    from aiokafka import AIOKafkaConsumer

    from .clients import consumer_config

    consumer = AIOKafkaConsumer(settings.recs_topic, **consumer_config(
        settings,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    ))
    from .reach import start_client

    await start_client(consumer, settings.bootstrap_servers)
    who = f"user {user}'s" if user is not None else "all"
    where = ("from the oldest retained record" if from_beginning else
             "from now on: new records only (--from-beginning for the retained ones)")
    print(f"tail: {who} recommendations on {settings.recs_topic}, {where}", file=sys.stderr,
          flush=True)
    wanted = user.encode() if user is not None else None
    n = 0
    try:
        async for msg in consumer:
            if wanted is not None and msg.key != wanted:
                continue
            if msg.value is None:  # a tombstone: the user was forgotten (stream-rec forget)
                who_key = (msg.key or b"").decode("utf-8", "replace")
                line = (orjson.dumps({"user_id": who_key, "forgotten": True}).decode() if as_json
                        else f"{time.strftime('%H:%M:%S')} {who_key:<12} forgotten (tombstone)")
            elif as_json:
                line = msg.value.decode()
            else:
                line = f"{time.strftime('%H:%M:%S')} {format_recommendation(msg.value)}"
            print(line)
            sys.stdout.flush()
            n += 1
            if limit is not None and n >= limit:
                break
    finally:
        await consumer.stop()


def tail(settings: Settings, user: str | None = None, from_beginning: bool = False,
         limit: int | None = None, as_json: bool = False) -> None:
    asyncio.run(_tail(settings, user, from_beginning, limit, as_json))
