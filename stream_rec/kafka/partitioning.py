"""The partition Kafka's default partitioner gives a key: where a producer puts a user's events.

A replay from a file has no broker to ask, and must put each user's state in the partition a
worker would hold it in (the events record's partition); murmur2 of the key, positive, modulo
the partition count, as the Java client and aiokafka do for keyed records.

:class:`CachedPartitioner` is aiokafka's default partitioner with each key's hash remembered:
aiokafka hashes in pure Python (~8 us for a 10-byte key) on every keyed send, and a worker sends
one answer per event to a shopper it has usually answered before.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

__all__ = ["partition_for", "CachedPartitioner"]


def _positive_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    return _positive_hash(key) % partitions


class CachedPartitioner:
    """``AIOKafkaProducer(partitioner=CachedPartitioner())``: the same partition as aiokafka's
    ``DefaultPartitioner`` (and the Java client's) for every key, each key hashed once while it
    is among the last ``max_keys`` distinct keys (the memory bound: the cache is emptied when it
    is full). A ``None`` key goes to a random available partition, as the default does."""

    def __init__(self, max_keys: int = 1 << 18) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1; got {max_keys}")
        self.max_keys = max_keys
        self._hashes: dict[bytes, int] = {}

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[self._hash(key) % len(all_partitions)]

    def partition(self, key: bytes, partitions: int) -> int:
        """``partition_for(key, partitions)``, from the cache."""
        return self._hash(key) % partitions

    def _hash(self, key: bytes) -> int:
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self.max_keys:
                self._hashes.clear()
            h = self._hashes[key] = _positive_hash(key)
        return h
