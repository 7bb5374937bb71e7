"""Forgetting a user on the direct engine: a ``forget`` event (``stream-rec forget USER``)
deletes the user's session state with a changelog tombstone and puts a tombstone (key, null) on
the recommendations topic, so a compacted topic and every subscriber drop the user's last
recommendations. The intake already dropped the user's events up to the forget; events after it
in the same batch start a new state (written as usual, so no tombstone for those users)."""

from __future__ import annotations

from typing import Any

__all__ = ["forget_users"]


async def forget_users(worker: Any, users: set[str], partition_of: dict[str, int]) -> list[Any]:
    """Delete ``users``' states (RocksDB and changelog) and tombstone their recommendations;
    the delivery futures, awaited with the batch's."""
    futures = []
    by_partition: dict[int, list[bytes]] = {}
    for user in sorted(users):
        key, p = user.encode(), partition_of[user]
        by_partition.setdefault(p, []).append(key)
        send = worker.producer.send
        futures.append(await send(worker.changelog, key=key, value=None, partition=p))
        futures.append(await send(worker.settings.recs_topic, key=key, value=None))
    for p, keys in by_partition.items():
        worker.db.write(p, [(k, None) for k in keys])
    return futures
