"""What every bench module shares: the progress line and the record tuple that is produced."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Record", "consumer_at_end", "say"]

Record = tuple[bytes, bytes, str, str]  # key, value, event_id, user_id


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


async def consumer_at_end(settings: Any, topic: str, **config: Any) -> Any:
    """A started group-less consumer of every partition of ``topic`` (``settings.partitions``),
    positioned at the end: nothing produced from here on is missed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ..kafka.clients import consumer_config

    c = AIOKafkaConsumer(**consumer_config(settings, group_id=None, enable_auto_commit=False,
                                           **config))
    await c.start()
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    c.assign(tps)
    await c.seek_to_end(*tps)
    for tp in tps:  # resolve positions now
        await c.position(tp)
    return c
