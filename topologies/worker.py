"""The worker: a faust app whose agent turns events into recommendations.

Hot-path design (see DEVELOPERS.md): the agent takes micro-batches with
``stream.take_events(batch_max, batch_wait)``. At low load a batch holds one
event and is answered within a few ms; under load a batch holds many users'
events, which the core folds into state and answers with ONE encoder call and
ONE index search. Table reads/writes for a user run under that user's own
event as faust's "current event", so the RocksDB partition and the changelog
partition are always the user's partition (faust derives both from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import EventT

from stream_rec.core.events import InvalidEvent
from stream_rec.core.intake import decode_states, take_records
from stream_rec.core.isolation import emitted_now, processing_error, step_isolated
from stream_rec.kafka.clients import faust_config, heartbeat_interval_s
from stream_rec.kafka.dead_letters import DeadLetters, RateLimitedLog
from stream_rec.kafka.lag import consumer_lag
from stream_rec.serving.compose import encoder_cache_stats, record_limits
from stream_rec.serving.health import Health
from stream_rec.serving.holder import ModelHolder
from stream_rec.serving.stats import WorkerStats, note_offset_checks
from stream_rec.settings import Settings

from .faust_fetch import install as _install_fetch_wait
from .faust_recovery import install as _install_recovery_fix

__all__ = ["create_app", "run_worker", "faust_rocksdb_options"]

log = logging.getLogger("stream_rec.worker")

# Changelog-only key that closes a micro-batch's writes (see Settings.changelog_barrier).
# It can never collide with a user: user ids are UTF-8 and never start with a NUL byte.
BARRIER_KEY = b"\x00stream-rec:barrier"


class ChangelogBarrier:
    """Closes a micro-batch's state writes with a marker record per changelog partition.

    Tansu 0.6 reports a partition's end offset as (last produce batch's base offset + 1), so
    the changelog's last batch must be a single record, or faust's recovery stops short of
    the true end (or, restarting on local RocksDB, finds its persisted offset past the end and
    crashes). The marker goes out only once every write of the batch is acknowledged: the
    table's changelog sends are tracked by their futures. (faust's ``producer.flush()`` is not
    enough: its buffer gives up after 0.1 s without a send, so under load a state write could
    share the marker's produce batch.)
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.pending: list[asyncio.Future[Any]] = []
        send = table.send_changelog

        def tracked(*args: Any, **kwargs: Any) -> Any:
            future = send(*args, **kwargs)
            self.pending.append(future)
            return future

        table.send_changelog = tracked  # table[key] = value and pop() send through this

    async def close(self, partitions: set[int]) -> None:
        """Wait for the writes sent so far, then write and wait for one marker per partition."""
        await self._settle()
        for partition in sorted(partitions):
            self.table.send_changelog(partition, BARRIER_KEY, b"")
        await self._settle()

    async def _settle(self) -> None:
        writes, self.pending = self.pending, []
        if writes:
            await asyncio.wait(writes)


@contextlib.contextmanager
def as_current(event: EventT) -> Iterator[None]:
    """Make ``event`` faust's current event, so table access uses its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def faust_rocksdb_options(settings: Settings) -> dict[str, int]:
    """faust's per-partition RocksDB options inside ``state_memory_mb`` for the whole worker.

    faust's defaults (a 2 GB block cache and 3 x 64 MB memtables per partition database)
    let memory grow with the data; faust cannot share one cache between its databases,
    so the budget is split evenly: half to block caches, half to memtables.
    """
    per_db = (settings.state_memory_mb << 20) // settings.partitions
    return {
        "block_cache_size": max(per_db // 2, 1 << 20),
        "write_buffer_size": max(per_db // 4, 1 << 20),
        "max_write_buffer_number": 2,
    }


def create_app(settings: Settings, holder: ModelHolder | None = None) -> faust.App:
    if not settings.bootstrap_servers:
        raise ValueError("the worker needs bootstrap_servers (--bootstrap-servers or STREAM_REC_BOOTSTRAP_SERVERS)")
    _install_recovery_fix()
    holder = holder or ModelHolder(settings)
    app = _faust_app(settings)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(settings.events_topic, partitions=settings.partitions, **raw)
    recs_topic = app.topic(settings.recs_topic, partitions=settings.partitions, **raw)
    dlq_topic = app.topic(settings.dlq_topic, partitions=1, **raw)
    sessions = app.Table(
        "sessions", partitions=settings.partitions, default=None, key_type=bytes, value_type=bytes,
        options=faust_rocksdb_options(settings),
    )
    stats = WorkerStats()
    health = Health(settings.health_stall_s, settings.health_commit_failures)
    handle = _batch_handler(settings, holder, stats, sessions, recs_topic, dlq_topic)

    @app.agent(events_topic, name="recommend")
    async def recommend(stream: faust.StreamT) -> None:
        wait = settings.batch_wait_ms / 1000.0
        async for batch in stream.take_events(settings.batch_max, wait):  # type: ignore[attr-defined]
            await handle(list(batch))
            health.progressed()

    if settings.model_poll_s > 0 and not holder.pinned:
        _watch_bundles(app, settings, holder, stats)
    fetch_wait = _install_fetch_wait(app, settings, lambda: stats.events)
    _stats_page(app, holder, stats, fetch_wait)
    _health_pages(app, health)
    app.stream_rec_stats = stats  # type: ignore[attr-defined]
    app.stream_rec_holder = holder  # type: ignore[attr-defined]
    return app


def _faust_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        **faust_config(settings),
        store="rocksdb://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_host=settings.worker_host,
        web_bind=settings.worker_host,
        web_port=settings.worker_port,
        web_tables_enabled=settings.faust_table_views,  # /table/<name>/<key>/: raw state
        **_replication(settings),
        stream_wait_empty=False,
        producer_linger_ms=1,
        table_standby_replicas=settings.standby_replicas,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=heartbeat_interval_s(settings.session_timeout_s),
        loghandlers=[],
    )


def _replication(settings: Settings) -> dict[str, Any]:
    """faust creates its own topics: -1 (the cluster's default) leaves faust's (1)."""
    if settings.replication_factor > 0:
        return {"topic_replication_factor": settings.replication_factor}
    return {}


def _batch_handler(
    settings: Settings, holder: ModelHolder, stats: WorkerStats, sessions: Any,
    recs_topic: Any, dlq_topic: Any,
) -> Callable[[list[EventT]], Awaitable[None]]:
    """The agent's work on one micro-batch: intake, states, one core step, writes, answers."""
    limits = record_limits(settings)
    barrier = ChangelogBarrier(sessions) if settings.changelog_barrier else None
    dead_letters = DeadLetters(settings, stats, log)
    errors = RateLimitedLog(log)

    async def dead_letter(invalid: InvalidEvent, ev: EventT, now_ms: int) -> None:
        msg = ev.message
        value = dead_letters.value(invalid, msg.topic, msg.partition, msg.offset, now_ms)
        # Delivery is awaited in the background; a failure is logged and counted there.
        await dead_letters.send(dlq_topic.send, msg.key, value)

    async def forget(intake: Any) -> None:
        """A forget event: the user's state goes (faust writes the changelog tombstone) and a
        tombstone replaces their recommendations; events after the forget start afresh."""
        for user in sorted(intake.forgotten):
            with as_current(intake.origin[user]):
                sessions.pop(user.encode(), None)
            await recs_topic.send(key=user.encode(), value=None)
        stats.forgotten += len(intake.forgotten)

    async def close_changelog(partitions: set[int]) -> None:
        """One changelog barrier per micro-batch, over every partition it wrote (if any)."""
        if barrier is not None and partitions:
            await barrier.close(partitions)

    async def handle(batch: list[EventT]) -> None:
        now_ms = int(time.time() * 1000)
        # origin: the faust event, so a user's table access runs in the user's partition;
        # faust's message timestamp is in seconds
        intake = take_records(
            ((ev.message.key, ev.message.value, ev.message.offset,
              int(ev.message.timestamp * 1000) if ev.message.timestamp else None, ev)
             for ev in batch),
            limits,
        )
        for invalid, ev in intake.invalid:
            await dead_letter(invalid, ev, now_ms)
        stats.events += len(batch)
        stats.batches += 1
        written: set[int] = set()  # changelog partitions of this batch's state writes
        if intake.forgotten:
            await forget(intake)
            written = {intake.origin[u].message.partition for u in intake.forgotten}
        if not intake.events:
            await close_changelog(written)
            return
        context = intake.origin
        stored = []
        for user, ev in context.items():
            with as_current(ev):
                stored.append((user, sessions.get(user.encode())))
        decoded = decode_states(stored)
        for user, exc in decoded.resets.items():
            log.error("unreadable state for user %r, starting afresh: %s", user, exc)
        stats.state_resets += len(decoded.resets)
        note_offset_checks(stats, errors.error, decoded.states, intake.events, intake.offsets,
                           settings.offset_regression)
        result = step_isolated(
            holder.recommender, decoded.states, intake.events, intake.offsets, now_ms=now_ms)
        ready = emitted_now(result.answers)
        for i, error in result.failed:
            ev = intake.sources[i]
            stats.processing_errors += 1
            errors.error("event at %s[%d]@%d raised %s: %s; dead-lettered", ev.message.topic,
                         ev.message.partition, ev.message.offset, type(error).__name__, error)
            await dead_letter(processing_error(error, ev.message.value), ev, now_ms)
        for user, state in result.states.items():
            with as_current(context[user]):
                sessions[user.encode()] = state.to_bytes()
        await close_changelog(written | {context[u].message.partition for u in result.states})
        for answers in ready:
            for key, value in answers.records():
                await recs_topic.send(key=key, value=value)
            stats.recommendations += len(answers)

    return handle


def _watch_bundles(app: faust.App, settings: Settings, holder: ModelHolder, stats: WorkerStats) -> None:
    def swapped() -> None:
        stats.model_swaps += 1

    @app.task
    async def watch_bundles() -> None:
        from stream_rec.kafka.bundle_topic import fetcher_for

        await holder.watch(swapped, fetcher_for(settings))


def _stats_page(app: faust.App, holder: ModelHolder, stats: WorkerStats, fetch_wait: Any) -> None:
    @app.page("/stats")
    async def stats_page(web: Any, request: Any) -> Any:
        t = holder.recommender.times
        return web.json(
            {
                **asdict(stats),
                "model_version": holder.recommender.model_version,
                "stage_seconds": {"state": t.state, "encode": t.encode, "search": t.search},
                "encoder_cache": encoder_cache_stats(holder.recommender),
                "fetch_wait_ms": fetch_wait.wait_ms,
                "fetch_wait_raises": fetch_wait.raises,
            }
        )


def _faust_lag(app: faust.App) -> dict[int, int]:
    """The consumer lag of faust's aiokafka consumer (``{}`` while it has none)."""
    try:
        return consumer_lag(app.consumer._thread._ensure_consumer())  # type: ignore[attr-defined]
    except Exception:
        return {}


def _health_pages(app: faust.App, health: Health) -> None:
    """``/health/live`` and ``/health/ready`` (serving/health.py): a stall with work waiting
    fails both. faust restores and commits on its own, so those checks are the direct engine's."""
    @app.page("/health/live")
    async def health_live(web: Any, request: Any) -> Any:
        status, body = health.report(_faust_lag(app)).body("live")
        return web.json(body, status=status)

    @app.page("/health/ready")
    async def health_ready(web: Any, request: Any) -> Any:
        status, body = health.report(_faust_lag(app)).body("ready")
        return web.json(body, status=status)


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGINT/SIGTERM (blocking)."""
    from faust.worker import Worker

    level = settings.log_level.upper()

    class _Worker(Worker):
        def _setup_logging(self) -> None:
            super()._setup_logging()
            # mode leaves the root logger at DEBUG and filters in the handlers, so every
            # library debug call still builds a LogRecord (~8% of the worker in py-spy).
            logging.getLogger().setLevel(level)

    app = create_app(settings)
    _Worker(app, loglevel=level, quiet=True).execute_from_commandline()
