"""State TTL for the direct engine (``--state-ttl-days``): idle users' session states expire.

A sweep runs every ``period_s`` over the assigned partitions' RocksDB tables, reads each
state's ``last_ts`` from its header (no full decode), and deletes the states whose last event
is older than the TTL, with a tombstone (key, null) in the compacted changelog, so a restore on
another host does not bring them back and compaction drops them from the topic. It runs in
chunks under the worker's batch lock: a batch and a chunk never interleave, and an expired
user's next event simply starts a new state. The TTL is measured in event time (``ts``), the
clock the states keep; it is off (0) by default.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .forget import delete_states

log = logging.getLogger("stream_rec.direct")

__all__ = ["expire_idle_states", "run_state_ttl", "sweep_period_s"]

_CHUNK = 5_000


def sweep_period_s(ttl_days: float) -> float:
    """A hundredth of the TTL, between 10 s and an hour."""
    return min(3600.0, max(10.0, ttl_days * 86_400 / 100))


async def expire_idle_states(worker: Any, now_ms: int) -> int:
    """Delete (with changelog tombstones) the states idle for longer than the TTL; the count."""
    cutoff = now_ms - int(worker.settings.state_ttl_days * 86_400_000)
    expired = 0
    for tp in sorted(worker.consumer.assignment(), key=lambda tp: tp.partition):
        p = tp.partition
        while True:
            async with worker._lock:
                keys = worker.db.idle_keys(p, cutoff, _CHUNK)
                futures = await delete_states(worker, p, keys)
            await asyncio.gather(*futures)
            expired += len(keys)
            if len(keys) < _CHUNK:
                break
    return expired


async def run_state_ttl(worker: Any) -> None:
    """The sweep loop (a task of the worker; returns at once when the TTL is off)."""
    ttl_days = worker.settings.state_ttl_days
    if ttl_days <= 0:
        return
    while True:
        await asyncio.sleep(sweep_period_s(ttl_days))
        try:
            n = await expire_idle_states(worker, int(time.time() * 1000))
        except Exception as exc:  # the next sweep tries again; serving goes on
            worker._errors.error("state TTL sweep failed: %s: %s", type(exc).__name__, exc)
            continue
        worker.stats.states_expired += n
        if n:
            log.warning("state TTL: %d idle session state(s) expired (older than %g days)", n,
                        ttl_days)
