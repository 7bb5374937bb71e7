"""Writing dead letters, for both engines: a bounded record, and a failure that never loops.

A dead letter is built by :func:`~stream_rec.core.events.dead_letter` with the original capped
at ``--dlq-max-original-bytes`` (its full length and sha256 kept), so no input can make one
larger than the producer may send. When writing one fails anyway (the DLQ topic is gone, the
broker refuses it), ``--dlq-failure log`` (the default) logs it, rate-limited, counts it in
``dlq_failures`` and goes on: the record's offset is committed like any other; ``fail`` stops
the worker with :class:`DeadLetterError` instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.events import MAX_ID_LEN, InvalidEvent, dead_letter
from ..errors import StreamRecError
from ..serving.stats import WorkerStats
from ..settings import Settings

__all__ = ["DeadLetterError", "RateLimitedLog", "DeadLetters"]


class DeadLetterError(StreamRecError):
    """A dead letter could not be written and ``--dlq-failure fail`` says to stop."""


class RateLimitedLog:
    """At most one line per ``every_s`` seconds; the next line says how many were held back."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger, self.every_s = logger, every_s
        self._last = -float("inf")
        self._held = 0

    def error(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        suffix = f" ({held} more like it since the last line)" if held else ""
        self.logger.error(message + suffix, *args)


class DeadLetters:
    """Builds, sends and accounts for dead letters (``stats.dead_letters``, ``dlq_failures``)."""

    def __init__(self, settings: Settings, stats: WorkerStats, logger: logging.Logger) -> None:
        self.settings, self.stats = settings, stats
        self.log = RateLimitedLog(logger)

    def value(self, invalid: InvalidEvent, topic: str, partition: int, offset: int,
              now_ms: int) -> bytes:
        return dead_letter(invalid, topic, partition, offset, now_ms,
                           self.settings.dlq_max_original_bytes)

    @staticmethod
    def key(key: bytes | None) -> bytes | None:
        """The record's key, when it is no longer than a user id may be (4 bytes a character)."""
        return key if key is None or len(key) <= 4 * MAX_ID_LEN else key[: 4 * MAX_ID_LEN]

    def failed(self, exc: BaseException) -> None:
        self.stats.dlq_failures += 1
        self.log.error("cannot write a dead letter to %s (%d so far): %s: %s",
                       self.settings.dlq_topic, self.stats.dlq_failures, type(exc).__name__, exc)
        if self.settings.dlq_failure == "fail":
            raise DeadLetterError(
                f"cannot write a dead letter to {self.settings.dlq_topic!r} and --dlq-failure "
                f"is fail: {type(exc).__name__}: {exc}") from exc

    async def send(
        self, send: Callable[..., Awaitable[Any]], key: bytes | None, value: bytes
    ) -> asyncio.Future[Any]:
        """``await send(key=..., value=...)`` (a producer's, returning a delivery future) ->
        a future that resolves to the delivery, or to None when it failed and was logged."""
        self.stats.dead_letters += 1
        try:
            delivery = await send(key=self.key(key), value=value)
        except Exception as exc:  # noqa: BLE001 - any producer error is a DLQ failure
            self.failed(exc)
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return asyncio.ensure_future(self._guard(delivery))

    async def _guard(self, delivery: Awaitable[Any]) -> Any:
        try:
            return await delivery
        except Exception as exc:  # noqa: BLE001
            self.failed(exc)
            return None
