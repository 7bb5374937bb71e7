"""The direct worker's changelog restore: a newly assigned partition's database catches up.

A partition's RocksDB holds the last changelog offset it applied, so a restart on the same disk
replays only the changelog's tail, and a partition new to this worker replays all of it.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_rec.kafka.clients import consumer_config
from stream_rec.runtime.partitioned_store import PartitionedSessionDB
from stream_rec.settings import Settings

__all__ = ["ChangelogRestorer"]


class ChangelogRestorer:
    """One consumer of the changelog, kept from the first restore on: it holds the topic's
    metadata (a new consumer spent ~1 s finding the leader before its first offset request,
    most of a restore) and keeps every partition paused between restores."""

    def __init__(self, settings: Settings, db: PartitionedSessionDB, changelog: str) -> None:
        self.settings, self.db, self.changelog = settings, db, changelog
        self._consumer: AIOKafkaConsumer | None = None

    async def restore(self, partitions: list[int]) -> int:
        """Replay each partition's changelog after the offset its database already holds.

        Reads until the end offset *and* until two short fetches come back empty: Tansu 0.6
        under-reports end offsets after multi-record batches.
        """
        consumer = await self._started()
        tps = [TopicPartition(self.changelog, p) for p in partitions]
        for tp in tps:
            consumer.seek(tp, self.db.changelog_offset(tp.partition) + 1)
        consumer.resume(*tps)
        n = 0
        try:
            ends = await consumer.end_offsets(tps)
            idle = 0
            while idle < 2:
                batch = await consumer.getmany(*tps, timeout_ms=50, max_records=5000)
                if not batch:
                    behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                    idle = 0 if behind else idle + 1
                    continue
                idle = 0
                for tp, messages in batch.items():
                    items = [(m.key, m.value) for m in messages if m.key and m.key[:1] != b"\x00"]
                    self.db.write(tp.partition, items, changelog_offset=messages[-1].offset)
                    n += len(messages)
        finally:
            consumer.pause(*tps)
        return n

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(self.changelog, **consumer_config(
                self.settings, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=20))  # fmt: skip
            await consumer.start()
            t_end = time.perf_counter() + 30.0
            while not consumer.assignment() and time.perf_counter() < t_end:
                await asyncio.sleep(0.02)  # every partition, assigned once the metadata is in
            consumer.pause(*consumer.assignment())
            self._consumer = consumer
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
