"""Forgetting a user on the direct engine: a ``forget`` event (``stream-rec forget USER``)
deletes the user's session state with a changelog tombstone and puts a tombstone (key, null) on
the recommendations topic, so a compacted topic and every subscriber drop the user's last
recommendations. The intake already dropped the user's events up to the forget; events after it
in the same batch start a new state (written as usual, so no tombstone for those users)."""

from __future__ import annotations

from typing import Any

__all__ = ["forget_users", "delete_states"]


async def delete_states(worker: Any, partition: int, keys: list[bytes]) -> list[Any]:
    """Delete ``keys``' states from the partition's table, each with a changelog tombstone (so a
    restore elsewhere does not bring it back); the tombstones' delivery futures."""
    send, topic = worker.producer.send, worker.changelog
    futures = [await send(topic, key=k, value=None, partition=partition) for k in keys]
    worker.db.write(partition, [(k, None) for k in keys])
    return futures


async def forget_users(worker: Any, users: set[str], partition_of: dict[str, int]) -> list[Any]:
    """Delete ``users``' states (RocksDB and changelog) and tombstone their recommendations;
    the delivery futures, awaited with the batch's."""
    by_partition: dict[int, list[bytes]] = {}
    for user in sorted(users):
        by_partition.setdefault(partition_of[user], []).append(user.encode())
    send, recs = worker.producer.send, worker.settings.recs_topic
    futures = []
    for p, keys in by_partition.items():
        futures += await delete_states(worker, p, keys)
        futures += [await send(recs, key=key, value=None) for key in keys]
    return futures
