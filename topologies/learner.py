"""`stream-rec learn`: consume the events topic under the learner's own consumer group, put every
valid event into the learner's window (through the workers' intake: invalid records are skipped
and counted, never trained on) and run an update whenever one is due (stream_rec.learn.learner).

Offsets are committed after the batch's events are in the window (RocksDB), so a restart loses
no event (it may see a few twice). An update runs in a thread; consumption waits for it (the
events wait in Kafka). Status: ``/metrics``, ``/health/live``, ``/stats`` on ``--port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from stream_rec.core.intake import take_records
from stream_rec.kafka.clients import consumer_config, group_timing_ms
from stream_rec.learn.learner import Learner, LearnOptions, UpdateOutcome
from stream_rec.learn.metrics import LearnerMetrics
from stream_rec.learn.window import SessionWindow
from stream_rec.serving.compose import record_limits
from stream_rec.settings import Settings

__all__ = ["LearnerProcess", "run_learner"]

log = logging.getLogger("stream_rec.learn")
_KEEP_ON_TOPIC = 3  # the learner's newest bundles kept on the bundles topic


class LearnerProcess:
    def __init__(
        self, settings: Settings, opts: LearnOptions, port: int = 0, max_updates: int | None = None
    ) -> None:
        self.settings = settings
        self.port = port
        self.max_updates = max_updates
        self.window = SessionWindow(
            Path(settings.data_dir) / f"{settings.app_id}-learner" / "window",
            capacity=opts.capacity,
        )
        self.learner = Learner(
            settings.bundles_dir, self.window, opts, serving=settings.bundle or None
        )
        self.metrics = LearnerMetrics()
        self.metrics.published.info({"version": self.learner.serving.name})
        self.limits = record_limits(settings)
        self._stopping = asyncio.Event()
        self.updating = False
        self.sent: list[dict[str, Any]] = []  # announcements of the bundles it sent to the topic

    @property
    def group_id(self) -> str:
        return f"{self.settings.app_id}-learner"

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        consumer = AIOKafkaConsumer(
            s.events_topic,
            **consumer_config(
                s,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **group_timing_ms(s),
                max_poll_records=s.batch_max,
                max_poll_interval_ms=3_600_000,  # an update may take minutes between two polls
            ),
        )
        web = None
        try:
            web = await self._start_web() if self.port else None
            await consumer.start()
            log.warning(
                "learner %s consuming %s; serving bundle %s",
                self.group_id,
                s.events_topic,
                self.learner.serving.name,
            )
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=s.batch_max)
                records = [
                    (m.key, m.value, m.offset, m.timestamp, m)
                    for msgs in batch.values()
                    for m in msgs
                ]
                if records:
                    intake = take_records(records, self.limits)
                    for invalid, _ in intake.invalid:
                        self.metrics.invalid.labels(invalid.code).inc()
                    for user in intake.forgotten:  # what they did before is never learned
                        self.window.forget(user)
                    for event in intake.events:
                        self.learner.observe(event)
                    self.metrics.events.inc(len(intake.events))
                    self.metrics.window.set(len(self.window))
                    await consumer.commit()
                if self.learner.due():
                    await self._update()
                    if (
                        self.max_updates is not None
                        and len(self.learner.outcomes) >= self.max_updates
                    ):
                        break
        finally:
            await consumer.stop()
            self.window.close()
            if web is not None:
                await web.cleanup()

    async def _update(self) -> UpdateOutcome:
        self.updating = True
        try:
            out = await asyncio.to_thread(self.learner.update)
        except Exception as exc:  # a failed update leaves the old bundle serving
            log.error(
                "update failed, %s still serving: %s: %s",
                self.learner.serving.name,
                type(exc).__name__,
                exc,
            )
            out = UpdateOutcome(skipped=f"failed: {type(exc).__name__}: {exc}")
        finally:
            self.updating = False
        self.metrics.record(out)
        if out.published is not None and self.settings.bundles_topic:
            try:
                from stream_rec.kafka.bundle_topic import publish_bundle, retire_bundles

                self.sent.append(await publish_bundle(self.settings, out.published))
                if len(self.sent) > _KEEP_ON_TOPIC:  # compaction frees the older ones' chunks
                    await retire_bundles(self.settings, self.sent, keep=_KEEP_ON_TOPIC)
                    self.sent = self.sent[-_KEEP_ON_TOPIC:]
            except Exception as exc:  # the bundle is on disk; the next update sends its own
                log.error(
                    "bundle %s written but not sent to %s: %s",
                    out.published.name,
                    self.settings.bundles_topic,
                    exc,
                )
        return out

    async def _start_web(self) -> Any:
        from aiohttp import web

        from stream_rec.serving.metrics import CONTENT_TYPE_LATEST

        async def metrics(_request: Any) -> Any:
            return web.Response(
                body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        async def stats(_request: Any) -> Any:
            last = self.learner.outcomes[-1].as_dict() if self.learner.outcomes else None
            return web.json_response(
                {
                    "serving": self.learner.serving.name,
                    "window_sessions": len(self.window),
                    "updates": len(self.learner.outcomes),
                    "updating": self.updating,
                    "last_update": last,
                }
            )

        async def live(_request: Any) -> Any:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/stats", stats)
        app.router.add_get("/health/live", live)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.worker_host, self.port).start()
        return runner


def run_learner(
    settings: Settings, opts: LearnOptions, port: int = 0, max_updates: int | None = None
) -> None:
    """Run until SIGINT/SIGTERM (or ``max_updates`` updates), blocking."""

    async def main() -> None:
        proc = LearnerProcess(settings, opts, port, max_updates)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, proc.stop)
        await proc.run()

    asyncio.run(main())
