"""A consumer's fetch wait that backs off when the broker answers "nothing" while it is behind.

Why: a fetch's ``max_wait`` bounds how long a broker may hold it. A short wait answers new
records sooner (Tansu holds a fetch for much of its wait even when records arrive meanwhile:
p50 166 ms at 500 ms, measured). But Tansu 0.6 answers a fetch with *no records at all*
when finding the fetch offset takes longer than the wait, and that time grows with the
number of record batches in the partition: after ~40 s at 1,000 events/s (tens of thousands
of small batches per partition) a 5 ms wait got empty answers, with the high watermark far
ahead, for minutes -- a worker that never caught up again. Apache Kafka answers as soon as
``min_bytes`` are there, so there the wait never grows.

Rule: while the consumer is behind (positions below the high watermarks the last fetches
reported) and no record has come for longer than a fetch round trip at the current wait,
double the wait (up to ``long_ms``). A wait that worked is kept; it decays by a quarter
every ``decay_s`` so a transient hiccup does not cost latency for ever.

aiokafka fixes ``fetch_max_wait_ms`` at construction; this sets its fetcher's value (a
private attribute, checked for: an aiokafka without it keeps the constructor's value).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["AdaptiveFetchWait"]


class AdaptiveFetchWait:
    """Call :meth:`update` after each ``getmany`` with the number of records it returned."""

    def __init__(
        self, consumer: Any, short_ms: float, long_ms: float = 500, decay_s: float = 30.0,
        clock: Any = time.monotonic, topics: frozenset[str] | None = None,
    ) -> None:
        self.consumer = consumer
        self.topics = topics  # the lag counts these topics only (None: every assigned partition)
        self.short_ms = max(1, int(short_ms))
        self.long_ms = max(self.short_ms, int(long_ms))
        self.decay_s = decay_s
        self.clock = clock
        self.raises = 0  # times the wait was doubled (reported on /stats)
        now = clock()
        self._last_records = now
        self._last_change = now

    def _fetcher(self) -> Any:
        fetcher = getattr(self.consumer, "_fetcher", None)
        return fetcher if hasattr(fetcher, "_fetch_max_wait_ms") else None

    @property
    def wait_ms(self) -> int | None:
        fetcher = self._fetcher()
        return None if fetcher is None else int(fetcher._fetch_max_wait_ms)

    def lag(self) -> int:
        """Records between the consumer's positions and the last reported high watermarks."""
        subscription = getattr(getattr(self.consumer, "_subscription", None), "subscription", None)
        assignment = getattr(subscription, "assignment", None)
        if assignment is None:
            return 0
        total = 0
        for tp in assignment.tps:
            if self.topics is not None and getattr(tp, "topic", None) not in self.topics:
                continue
            state = assignment.state_value(tp)
            if state is not None and state.has_valid_position and state.highwater is not None:
                total += max(0, state.highwater - state.position)
        return total

    def update(self, records: int) -> int | None:
        """Adjust and return the wait for the next fetch (None when it cannot be set)."""
        fetcher = self._fetcher()
        if fetcher is None:
            return None
        now = self.clock()
        wait = int(fetcher._fetch_max_wait_ms)
        if records:
            self._last_records = now
        elif (wait < self.long_ms and self.lag() > 0
              and now - self._last_records > (2 * wait + 20) / 1000):
            wait = min(self.long_ms, 2 * wait)
            self.raises += 1
            self._last_records = self._last_change = now  # give the new wait a full round
        if wait > self.short_ms and now - self._last_change > self.decay_s:
            wait = max(self.short_ms, wait * 3 // 4)
            self._last_change = now
        fetcher._fetch_max_wait_ms = wait
        return wait
