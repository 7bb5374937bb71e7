"""The partition Kafka's default partitioner gives a key: where a producer puts a user's events.

A replay from a file has no broker to ask, and must put each user's state in the partition a
worker would hold it in (the events record's partition); murmur2 of the key, positive, modulo
the partition count, as the Java client and aiokafka do for keyed records.
"""

from __future__ import annotations

__all__ = ["partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions
