"""A worker batch's output, handed to the producer as one record batch per topic partition.

``AIOKafkaProducer.send`` costs ~10-15 us of Python per record (size checks, a partition list
copied twice, a coroutine, a future and, on delivery, a metadata tuple and a callback each) and a
worker sends two records per event (the answer and the user's state). :class:`OutputBatches`
appends them to aiokafka's ``BatchBuilder`` (a C record-batch writer) instead, one per topic
partition, and submits each with ``send_batch``: one future per partition per worker batch. The
records, their partitions (Kafka's default partitioner for keyed records, as ``send`` gives them),
timestamps (append time) and order within a partition are what per-record sends would produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .partitioning import CachedPartitioner

__all__ = ["OutputBatches", "SentBatch"]


@dataclass(frozen=True, slots=True)
class SentBatch:
    """A submitted batch: its delivery future (the first record's metadata, so its last record's
    offset is that offset + ``records`` - 1) and its record count."""

    topic: str
    partition: int
    future: Any
    records: int


class OutputBatches:
    """Collect records by topic partition (:meth:`add`, or :meth:`add_keyed` with the topic's
    partition count: ``len(await producer.partitions_for(topic))``), then submit them
    (:meth:`send`)."""

    def __init__(self, producer: Any, partitioner: CachedPartitioner) -> None:
        self._producer = producer
        self._partitioner = partitioner
        self._open: dict[tuple[str, int], list[Any]] = {}  # (topic, p) -> [builder, records]
        self._closed: list[tuple[str, int, Any, int]] = []

    def add(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        entry = self._open.get((topic, partition))
        if entry is None:
            entry = self._open[(topic, partition)] = [self._producer.create_batch(), 0]
        if entry[0].append(timestamp=None, key=key, value=value) is None:  # full: start another
            self._closed.append((topic, partition, entry[0], entry[1]))
            entry[0], entry[1] = self._producer.create_batch(), 0
            if entry[0].append(timestamp=None, key=key, value=value) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch")
        entry[1] += 1

    def add_keyed(self, topic: str, key: bytes, value: bytes | None, partitions: int) -> None:
        """A record to the partition Kafka's default partitioner gives ``key``."""
        self.add(topic, key, value, self._partitioner.partition(key, partitions))

    async def send(self) -> list[SentBatch]:
        """Submit every batch (closed first, so no later ``send`` joins it), in the order each
        partition's records were added; empties this collection."""
        batches = self._closed + [(t, p, b, n) for (t, p), (b, n) in self._open.items()]
        self._open, self._closed = {}, []
        out = []
        for topic, p, builder, n in batches:
            builder.close()
            future = await self._producer.send_batch(builder, topic, partition=p)
            out.append(SentBatch(topic, p, future, n))
        return out
