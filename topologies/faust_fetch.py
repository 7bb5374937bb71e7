"""The faust engine's fetch wait: the batch wait, backing off as the direct engine's does.

Why: faust-streaming builds its aiokafka consumer with a fixed ``fetch_max_wait_ms=1500``
(faust/transport/drivers/aiokafka.py), and the embedded broker holds a fetch for much of its
wait even when records arrive meanwhile: at 1,000 events/s the faust worker answered at p50
~1.1 s (docs/benchmarks.md, "Session 19"). This task sets the consumer's wait to
``batch_wait_ms`` once the consumer exists, and every ``TICK_S`` feeds the events taken since
the last tick to :class:`~stream_rec.kafka.fetch_wait.AdaptiveFetchWait`, which doubles the
wait while the events topic is behind and nothing comes (Tansu's empty answers on a long log).
The lag counts the events topic only: faust's changelog partitions are assigned to the same
consumer but not read after recovery, so their stale high watermarks would look like lag.

While faust recovers its tables (``app.in_recovery``) the consumer keeps faust's own wait, as
before: a short wait on a long changelog meets the embedded broker's empty answers.

The consumer runs in faust's consumer thread; the wait is one integer attribute its fetcher
reads when it builds the next request, so setting it from the app's loop is safe.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stream_rec.kafka.fetch_wait import AdaptiveFetchWait
from stream_rec.settings import Settings

__all__ = ["TICK_S", "FetchWaitTuner", "install"]

TICK_S = 0.05


class FetchWaitTuner:
    """One tick: find faust's aiokafka consumer (once), then update its wait."""

    def __init__(self, app: Any, settings: Settings, events: Any) -> None:
        self.app = app
        self.settings = settings
        self.events = events  # () -> events taken so far (the worker's stats counter)
        self.adaptive: AdaptiveFetchWait | None = None
        self._seen = 0
        self.recovery_wait_ms = 1500  # faust's fixed wait, kept while tables recover
        self._recovering = False
        self._events_wait_ms = 0

    def consumer(self) -> Any:
        thread = getattr(getattr(self.app, "consumer", None), "_thread", None)
        return getattr(thread, "_consumer", None)

    def tick(self) -> int | None:
        if self.adaptive is None:
            consumer = self.consumer()
            fetcher: Any = getattr(consumer, "_fetcher", None)
            if not hasattr(fetcher, "_fetch_max_wait_ms"):
                return None  # not started yet
            self.recovery_wait_ms = int(fetcher._fetch_max_wait_ms)  # faust's own
            fetcher._fetch_max_wait_ms = max(1, int(self.settings.batch_wait_ms))
            self.adaptive = AdaptiveFetchWait(
                consumer, short_ms=self.settings.batch_wait_ms,
                topics=frozenset({self.settings.events_topic}))
        fetcher = self.adaptive._fetcher()
        if getattr(self.app, "in_recovery", False):
            # Reading the changelogs: faust's wait, as before (a short wait on a long changelog
            # meets the embedded broker's empty answers); the events wait resumes after.
            if fetcher is not None:
                if not self._recovering:
                    self._events_wait_ms = int(fetcher._fetch_max_wait_ms)
                fetcher._fetch_max_wait_ms = self.recovery_wait_ms
            self._recovering = True
            return None
        if self._recovering and fetcher is not None:
            fetcher._fetch_max_wait_ms = self._events_wait_ms
        self._recovering = False
        events = self.events()
        taken, self._seen = events - self._seen, events
        return self.adaptive.update(taken)

    @property
    def wait_ms(self) -> int | None:
        return None if self.adaptive is None else self.adaptive.wait_ms

    @property
    def raises(self) -> int:
        return 0 if self.adaptive is None else self.adaptive.raises


def install(app: Any, settings: Settings, events: Any) -> FetchWaitTuner:
    """Run a :class:`FetchWaitTuner` every ``TICK_S`` as one of the app's tasks."""
    tuner = FetchWaitTuner(app, settings, events)

    @app.task
    async def tune_fetch_wait() -> None:
        while True:
            tuner.tick()
            await asyncio.sleep(TICK_S)

    return tuner
