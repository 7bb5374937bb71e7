"""A range of a topic as replay input: per partition, from a start to an end offset (or times).

Records come as the intake's shape ``(key, value, offset, timestamp ms, partition)``, each
partition in offset order (partitions interleaved as fetched: a user's records are all in one
partition, so each user's order is the log's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError
from ..settings import Settings

__all__ = ["TopicRange"]

Record = tuple[bytes | None, bytes, int, int | None, int]


@dataclass
class TopicRange:
    """``topic`` from ``start`` (offset, or the first offset at ``start_ms``) to ``end``
    (exclusive; default: the end offsets when the replay starts, or the first at ``end_ms``)."""

    settings: Settings
    topic: str
    start_offset: int | None = None
    end_offset: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    next_offsets: dict[int, int] = field(default_factory=dict)  # a resumed replay's positions
    bounds: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> [start, end)
    _consumer: Any = None

    @property
    def describe(self) -> str:
        return (f"topic:{self.topic}:{self.start_offset}:{self.end_offset}:"
                f"{self.start_ms}:{self.end_ms}")

    def total(self) -> int:
        return sum(max(0, e - s) for s, e in self.bounds.values())

    async def _bounds(self, consumer: Any, tps: list[Any]) -> None:
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)

        async def at(ms: int | None, default: dict[Any, int]) -> dict[Any, int]:
            if ms is None:
                return default
            found = await consumer.offsets_for_times({tp: ms for tp in tps})
            return {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in tps}

        starts, ends = await at(self.start_ms, begin), await at(self.end_ms, end)
        for tp in tps:
            s = starts[tp] if self.start_offset is None else max(begin[tp], self.start_offset)
            e = ends[tp] if self.end_offset is None else min(end[tp], self.end_offset)
            self.bounds[tp.partition] = (s, e)

    async def start(self, max_records: int = 5000) -> None:
        """Connect (a BrokerError of one line when Kafka cannot be reached)."""
        from aiokafka import AIOKafkaConsumer

        from .clients import consumer_config
        from .reach import start_client

        self._consumer = AIOKafkaConsumer(**consumer_config(
            self.settings, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=max_records))
        await start_client(self._consumer, self.settings.bootstrap_servers)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def records(self, max_records: int = 5000) -> AsyncIterator[list[Record]]:
        """The range's records, in batches of at most ``max_records`` (after :meth:`start`)."""
        from aiokafka import TopicPartition

        consumer = self._consumer
        assert consumer is not None, "TopicRange.start() first"
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise DataError(f"topic {self.topic!r} does not exist on "
                            f"{self.settings.bootstrap_servers}")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        await self._bounds(consumer, tps)
        todo = {}
        consumer.assign(tps)
        for tp in tps:
            start, end = self.bounds[tp.partition]
            start = max(start, self.next_offsets.get(tp.partition, start))
            if start < end or (self.end_offset is None and self.end_ms is None):
                consumer.seek(tp, start)
                todo[tp] = end
        consumer.pause(*[tp for tp in tps if tp not in todo])
        # Without an end given, read until the end offsets *and* until fetches come back
        # empty: Tansu 0.6 under-reports end offsets after multi-record batches.
        open_end = self.end_offset is None and self.end_ms is None
        idle = 0
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=max_records)
            out: list[Record] = []
            for tp, messages in batch.items():
                if tp not in todo:
                    continue
                end = todo[tp]
                out.extend((m.key, m.value, m.offset, m.timestamp, tp.partition)
                           for m in messages if open_end or m.offset < end)
                if messages[-1].offset + 1 >= end and not open_end:
                    del todo[tp]
                    consumer.pause(tp)
            idle = 0 if batch else idle + 1
            if not batch and (idle >= 2 or not open_end):
                # gaps (compaction, transaction markers) may hide the last offset
                done = [tp for tp, end in todo.items() if await consumer.position(tp) >= end]
                for tp in done:
                    del todo[tp]
                    consumer.pause(tp)
            if out:
                yield out
