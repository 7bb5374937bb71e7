"""The latest recommendation per user, and the subscribers waiting for the next one.

The gateway reads the recommendations topic from the beginning into :class:`LatestRecommendations`
(an LRU map, bounded by ``--gateway-latest-users``: the least recently updated or read user is
evicted first, and its next subscriber waits for its next recommendation instead of getting one at
once). Each subscriber holds a one-slot mailbox, not a queue: a slow client skips to the newest
record instead of buffering stale ones, so memory per subscriber is one record whatever the rate.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["Subscription", "LatestRecommendations", "PushSeconds", "PUSH_BUCKETS"]

# Seconds from a record's arrival at the gateway to its hand-over to a subscriber's connection.
PUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class PushSeconds:
    """A histogram of push delays (counts per bucket, sum), read by /metrics."""

    def __init__(self) -> None:
        self.counts = [0] * (len(PUSH_BUCKETS) + 1)  # the last one: above every bucket
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(PUSH_BUCKETS, seconds)] += 1
        self.sum += seconds


class Subscription:
    """One subscriber's mailbox: the newest record not yet taken (and when it arrived)."""

    __slots__ = ("_pending", "_ready", "_since", "_taken")

    def __init__(self, taken: Callable[[float], None] | None = None) -> None:
        self._pending: bytes | None = None
        self._ready = asyncio.Event()
        self._since = 0.0
        self._taken = taken

    def offer(self, value: bytes, since: float | None = None) -> None:
        """``since``: when the record arrived (perf_counter); None for a record already known
        at subscription time, which is no push and is not timed."""
        self._pending = value  # a record not yet taken is replaced: only the latest matters
        self._since = -1.0 if since is None else since
        self._ready.set()

    async def next(self, timeout: float | None = None) -> bytes | None:
        """The next record, or None after ``timeout`` seconds without one (for a keep-alive)."""
        if self._pending is None:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        value, self._pending = self._pending, None
        self._ready.clear()
        if self._taken is not None and self._since >= 0:
            self._taken(time.perf_counter() - self._since)
        return value


class LatestRecommendations:
    """user id -> latest record (raw JSON bytes), LRU-bounded; user id -> its subscriptions."""

    def __init__(self, max_users: int) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1; got {max_users}")
        self.max_users = max_users
        self._latest: OrderedDict[str, bytes] = OrderedDict()
        self._subscribers: dict[str, set[Subscription]] = {}
        self.evicted = 0
        self.delivered = 0
        self.push_seconds = PushSeconds()  # arrival -> taken by a subscriber's connection

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def latest(self, user_id: str) -> bytes | None:
        value = self._latest.get(user_id)
        if value is not None:
            self._latest.move_to_end(user_id)
        return value

    def publish(self, user_id: str, value: bytes) -> None:
        """Keep ``value`` as the user's latest and hand it to each of the user's subscribers."""
        self._latest[user_id] = value
        self._latest.move_to_end(user_id)
        while len(self._latest) > self.max_users:
            self._latest.popitem(last=False)
            self.evicted += 1
        now = time.perf_counter()
        for sub in self._subscribers.get(user_id, ()):
            sub.offer(value, now)
            self.delivered += 1

    def forget(self, user_id: str) -> None:
        """Drop the user's latest record (a tombstone on the recommendations topic): a new
        subscriber gets nothing until the user's next recommendation."""
        self._latest.pop(user_id, None)

    def subscribe(self, user_id: str) -> Subscription:
        """A new subscription; the user's latest record, when known, is waiting in it already."""
        sub = Subscription(self.push_seconds.observe)
        self._subscribers.setdefault(user_id, set()).add(sub)
        value = self.latest(user_id)
        if value is not None:
            sub.offer(value)
        return sub

    def unsubscribe(self, user_id: str, sub: Subscription) -> None:
        subs = self._subscribers.get(user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[user_id]
