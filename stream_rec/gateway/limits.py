"""Per-client rate limits and the gateway's counters (for /metrics, see metrics.py)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimiter", "Counters"]


class RateLimiter:
    """A token bucket per client: ``rate_per_s`` sustained, bursts of ``burst``.

    Buckets of the least recently seen clients are dropped past ``max_clients`` (a dropped client
    starts again with a full bucket), so memory is bounded however many clients come and go.
    """

    def __init__(self, rate_per_s: float, burst: float, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_clients, self.clock = rate_per_s, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, at)

    def allow(self, client: str) -> bool:
        """Take one token of ``client``'s bucket; False when it is empty (0 = no limit)."""
        if self.rate <= 0:
            return True
        now = self.clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed


class Counters:
    """Monotonic counts, by name (Prometheus counters)."""

    NAMES = {
        "sse_connections": "SSE subscriptions opened",
        "ws_connections": "WebSocket subscriptions opened",
        "events_accepted": "events validated and produced to the events topic",
        "events_rejected": "events refused by the contract (400)",
        "rate_limited": "requests refused by the per-client rate limit (429)",
        "too_large": "requests refused by the body size limit (413)",
        "auth_failures": "requests with a missing, bad or expired token (401)",
        "forbidden": "requests with a valid token for another user (403)",
        "sessions_minted": "anonymous sessions minted (POST /session)",
    }

    def __init__(self) -> None:
        self.values = dict.fromkeys(self.NAMES, 0)

    def inc(self, name: str) -> None:
        self.values[name] += 1

