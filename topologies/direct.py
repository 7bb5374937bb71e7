"""The direct worker: the same core on plain aiokafka, for throughput.

Why: at saturation, py-spy shows faust's per-message machinery (Event objects, stream queues
and acks, the per-message publish path) costing more than the recommender itself. This engine
keeps faust's table *format* (RocksDB per partition, ``<app_id>-sessions-changelog`` with key =
user id, value = state bytes) and does the rest per micro-batch:

    getmany(batch_max, batch_wait) -> parse (invalid -> DLQ) -> multi-get states
    -> Recommender.step (one encode, one search) -> RocksDB write batch per partition
    -> changelog + recommendations produced without per-message awaits
    -> wait for delivery once per batch -> offsets committed (at-least-once)

Rebalances: revoked partitions are committed and closed after the batch in flight; assigned
partitions are restored from the changelog, from the offset their local database already
holds, before any of their events is processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections import defaultdict, deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from stream_rec.core.events import InvalidEvent
from stream_rec.core.intake import decode_states, take_records
from stream_rec.core.isolation import emitted_now, processing_error, step_isolated
from stream_rec.core.session import SessionState
from stream_rec.kafka.batches import OutputBatches, SentBatch
from stream_rec.kafka.clients import consumer_config, group_timing_ms, producer_config
from stream_rec.kafka.dead_letters import DeadLetters, RateLimitedLog
from stream_rec.kafka.fetch_wait import AdaptiveFetchWait
from stream_rec.kafka.lag import consumer_lag
from stream_rec.kafka.partitioning import CachedPartitioner
from stream_rec.runtime.partitioned_store import PartitionedSessionDB
from stream_rec.serving.compose import encoder_cache_stats, record_limits
from stream_rec.serving.health import Health
from stream_rec.serving.holder import ModelHolder
from stream_rec.serving.metrics import CONTENT_TYPE_LATEST, WorkerMetrics
from stream_rec.serving.stats import WorkerStats, note_offset_checks
from stream_rec.settings import Settings

from .diagnostics import dump_tasks
from .forget import forget_users
from .restore import ChangelogRestorer
from .state_ttl import run_state_ttl

__all__ = ["DirectWorker", "run_direct_worker", "changelog_topic"]

log = logging.getLogger("stream_rec.direct")

_MAX_INFLIGHT = 4  # batches produced but not yet acknowledged


_STOP_TIMEOUT_S = 10.0


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-sessions-changelog"


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: DirectWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.on_assigned(set(assigned))


class DirectWorker:
    def __init__(self, settings: Settings, holder: ModelHolder | None = None) -> None:
        self.settings = settings
        self.holder = holder or ModelHolder(settings)
        self.stats = WorkerStats()
        self.limits = record_limits(settings)
        self.dead_letters = DeadLetters(settings, self.stats, log)
        self._errors = RateLimitedLog(log)
        self.health = Health(settings.health_stall_s, settings.health_commit_failures)
        self.db = PartitionedSessionDB(Path(settings.data_dir) / settings.app_id, settings.state_memory_mb << 20)
        self.changelog = changelog_topic(settings)
        self._lock = asyncio.Lock()  # a batch and a rebalance never interleave
        self._to_commit: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._stopping = asyncio.Event()
        # Batches whose output is produced but not yet acknowledged, oldest first. Their
        # offsets are committed only once they and every older batch are delivered.
        self._inflight: deque[asyncio.Future[dict[TopicPartition, int]]] = deque()
        self.consumer: AIOKafkaConsumer | None = None
        self.restorer = ChangelogRestorer(settings, self.db, self.changelog)
        self.producer: AIOKafkaProducer | None = None
        self.partitioner = CachedPartitioner()  # the producer's: each user's key hashed once
        self.fetch_wait: AdaptiveFetchWait | None = None
        self.metrics = WorkerMetrics(lambda: self.holder.recommender.model_version,
                                     lambda: consumer_lag(self.consumer), self.db.sizes,
                                     lambda: self.stats,
                                     lambda: encoder_cache_stats(self.holder.recommender))

    # --------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        from stream_rec.kafka.admin import ensure_topics
        from stream_rec.kafka.bundle_topic import fetcher_for

        s = self.settings
        await ensure_topics(
            s.bootstrap_servers,
            {s.events_topic: s.partitions, s.recs_topic: s.partitions, s.dlq_topic: 1, self.changelog: s.partitions},
            replication_factor=s.replication_factor,
            configs={self.changelog: {"cleanup.policy": "compact"}},
            settings=s,
            min_insync_replicas=s.min_insync_replicas,
        )
        self.producer = AIOKafkaProducer(**producer_config(
            s, linger_ms=2, max_batch_size=1 << 20, max_request_size=8 << 20,
            partitioner=self.partitioner))
        self.consumer = AIOKafkaConsumer(**consumer_config(
            s,
            group_id=s.app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **group_timing_ms(s),
            max_poll_records=s.batch_max,
            fetch_max_wait_ms=max(1, int(s.batch_wait_ms)),
            max_partition_fetch_bytes=4 << 20,
        ))
        self.fetch_wait = AdaptiveFetchWait(self.consumer, short_ms=s.batch_wait_ms)
        await self.producer.start()
        web = await self._start_web()
        try:
            self.consumer.subscribe([s.events_topic], listener=_Rebalance(self))
            await self.consumer.start()
            log.warning("direct worker %s consuming %s", s.app_id, s.events_topic)
            tasks = [asyncio.create_task(self.holder.watch(self._swapped, fetcher_for(s))), asyncio.create_task(run_state_ttl(self))]
            try:
                await self._loop()
            finally:
                for task in tasks:
                    task.cancel()
        finally:
            with contextlib.suppress(Exception):
                async with self._lock:
                    await self._settle(all_=True)
                    await self._commit(force=True)
            try:  # a broker that never answers a pending JoinGroup/SyncGroup must not hold the exit
                await asyncio.wait_for(self.consumer.stop(), _STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("the consumer did not leave its group within %.0fs; exiting anyway "
                            "(the group drops this member after its session timeout)", _STOP_TIMEOUT_S)
            await self.restorer.stop()
            await self.producer.stop()
            self.db.close_all()
            await web.cleanup()

    def stop(self) -> None:
        self._stopping.set()

    async def _loop(self) -> None:
        assert self.consumer is not None
        wait_ms = max(1, int(self.settings.batch_wait_ms))
        while not self._stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=wait_ms, max_records=self.settings.batch_max)
            if self.fetch_wait is not None:
                self.fetch_wait.update(sum(len(m) for m in batch.values()))
            async with self._lock:
                if batch:
                    self._inflight.append(await self._process(batch))
                self.health.progressed()
                await self._settle(all_=len(self._inflight) >= _MAX_INFLIGHT)
                await self._commit()

    async def _settle(self, all_: bool = False) -> None:
        """Move delivered batches' offsets (in batch order) to the commit set."""
        while self._inflight and (all_ or self._inflight[0].done()):
            self._to_commit.update(await self._inflight.popleft())

    def _swapped(self) -> None:
        self.stats.model_swaps += 1

    # --------------------------------------------------------------------- the hot path
    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> asyncio.Future[dict[TopicPartition, int]]:
        """Fold, encode, search, write local state and hand all output to the producer.

        Returns a future of this batch's offsets to commit, resolved once every record it
        produced is acknowledged; the next batch is processed meanwhile. A record that is
        invalid, or whose processing raises, is dead-lettered; the rest are answered.
        """
        assert self.producer is not None
        s = self.settings
        now_ms = int(time.time() * 1000)
        futures = []
        sent: list[SentBatch] = []
        commit: dict[TopicPartition, int] = {}
        records: list[tuple[bytes | None, bytes | None, int, int | None, Any]] = []
        for tp, messages in batch.items():
            records.extend((msg.key, msg.value, msg.offset, msg.timestamp, msg) for msg in messages)
            commit[tp] = messages[-1].offset + 1
            self.stats.events += len(messages)
        intake = take_records(records, self.limits)
        dead = [invalid.code for invalid, _ in intake.invalid]
        stages: dict[str, float] = {}
        for invalid, msg in intake.invalid:
            futures.append(await self._dead_letter(invalid, msg, now_ms))
        self.stats.batches += 1
        events, offsets = intake.events, intake.offsets
        partition_of = {user: msg.partition for user, msg in intake.origin.items()}
        if events:
            states = {**self._read_states(partition_of), **dict.fromkeys(intake.forgotten)}
            note_offset_checks(self.stats, self._errors.error, states, events, offsets,
                               self.settings.offset_regression)
            t = self.holder.recommender.times
            before = (t.state, t.encode, t.search)
            step = functools.partial(step_isolated, self.holder.recommender, states, events, offsets, now_ms)
            # On the loop by default: a thread beside it (fetching and delivering meanwhile)
            # measured slower on CPU, its GIL contention with the loop costing more than the
            # overlap gave (docs/benchmarks.md, session 17). A GPU's waits may pay for it.
            result = await asyncio.to_thread(step) if s.compute_thread else step()
            ready = emitted_now(result.answers)
            stages = {name: after - b4 for name, after, b4
                      in zip(("fold", "encode", "search"), (t.state, t.encode, t.search), before)}
            dead += ["processing_error"] * len(result.failed)
            for i, exc in result.failed:
                msg = intake.sources[i]
                self.stats.processing_errors += 1
                self._errors.error("event at %s[%d]@%d raised %s: %s; dead-lettered",
                                   msg.topic, msg.partition, msg.offset, type(exc).__name__, exc)
                futures.append(await self._dead_letter(processing_error(exc, msg.value), msg, now_ms))
            # Answers first: they are what a shopper waits for. The batch's offsets are committed
            # only once both answers and state are acknowledged, so the order loses nothing.
            # One record batch per topic partition (kafka/batches.py), not a send per record.
            out = OutputBatches(self.producer, self.partitioner)
            recs_partitions = len(await self.producer.partitions_for(s.recs_topic))
            for answers in ready:
                for key, value in answers.records():
                    out.add_keyed(s.recs_topic, key, value, recs_partitions)
                self.stats.recommendations += len(answers)
                self.metrics.observe_answers(answers.event_ts, answers.emitted_ts)
            writes: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
            for user, state in result.states.items():
                key, value = user.encode(), state.to_bytes()
                p = partition_of[user]
                writes[p].append((key, value))
                out.add(self.changelog, key, value, p)
            sent = await out.send()
            for p, items in writes.items():
                self.db.write(p, items)
        if intake.forgotten:
            self.stats.forgotten += len(intake.forgotten)
            kept = set(result.states) if events else set()
            futures += await forget_users(self, intake.forgotten - kept, partition_of)
        self.metrics.observe_batch(len(records), (e.type for e in events), dead, stages)
        return asyncio.ensure_future(self._delivered(futures, sent, commit, time.perf_counter()))

    async def _dead_letter(self, invalid: InvalidEvent, msg: Any, now_ms: int) -> asyncio.Future[Any]:
        assert self.producer is not None
        value = self.dead_letters.value(invalid, msg.topic, msg.partition, msg.offset, now_ms)
        return await self.dead_letters.send(
            functools.partial(self.producer.send, self.settings.dlq_topic), msg.key, value)

    async def _delivered(self, futures: list[Any], sent: list[SentBatch],
                         commit: dict[TopicPartition, int], t0: float) -> dict[TopicPartition, int]:
        metas = await asyncio.gather(*futures, *(b.future for b in sent))
        self.metrics.stage.labels("produce").observe(time.perf_counter() - t0)
        # A record's metadata holds its offset; a batch's its first record's.
        records = [1] * len(futures) + [b.records for b in sent]
        last: dict[int, int] = {}
        for meta, n in zip(metas, records):
            if meta is not None and meta.topic == self.changelog:
                last[meta.partition] = max(last.get(meta.partition, -1), meta.offset + n - 1)
        for p, off in last.items():
            if off > self.db.changelog_offset(p):
                self.db.set_changelog_offset(p, off)
        return commit

    def _read_states(self, partition_of: dict[str, int]) -> dict[str, SessionState | None]:
        by_partition: dict[int, list[str]] = defaultdict(list)
        for user, p in partition_of.items():
            by_partition[p].append(user)
        stored: list[tuple[str, bytes | None]] = []
        for p, users in by_partition.items():
            stored.extend(zip(users, self.db.get_many(p, [u.encode() for u in users])))
        decoded = decode_states(stored)
        for user, exc in decoded.resets.items():
            log.error("unreadable state for user %r, starting afresh: %s", user, exc)
        self.stats.state_resets += len(decoded.resets)
        return decoded.states

    async def _commit(self, force: bool = False) -> None:
        if not self._to_commit or self.consumer is None:
            return
        now = time.monotonic()
        if not force and now - self._last_commit < 0.5:
            return
        offsets, self._to_commit = self._to_commit, {}
        self._last_commit = now
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # kept for the next try; /health/* fail after a run of these
            for tp, off in offsets.items():
                self._to_commit[tp] = max(off, self._to_commit.get(tp, 0))
            self.health.commit_failed(exc)
            self._errors.error("offset commit failed (%d in a row), will retry: %s: %s",
                               self.health.commit_failures, type(exc).__name__, exc)
            if force:
                raise
            return
        self.health.commit_ok()

    # --------------------------------------------------------------------- rebalances
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            await self._settle(all_=True)
            await self._commit(force=True)
            for tp in revoked:
                self.db.close(tp.partition)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            partitions = sorted(tp.partition for tp in assigned)
            if partitions:
                t0 = time.perf_counter()
                self.health.restore_started(partitions)
                try:
                    n = await self.restorer.restore(partitions)
                finally:
                    self.health.restore_finished(partitions)
                log.warning("assigned partitions %s; restored %d changelog records in %.2fs",
                            partitions, n, time.perf_counter() - t0)

    # --------------------------------------------------------------------- /stats
    async def _start_web(self) -> Any:
        from aiohttp import web

        async def stats(_request: Any) -> Any:
            t = self.holder.recommender.times
            return web.json_response({
                **asdict(self.stats), "engine": "direct",
                "fetch_wait_ms": self.fetch_wait.wait_ms if self.fetch_wait else None,
                "fetch_wait_raises": self.fetch_wait.raises if self.fetch_wait else 0,
                "model_version": self.holder.recommender.model_version,
                "stage_seconds": {"state": t.state, "encode": t.encode, "search": t.search},
                "encoder_cache": encoder_cache_stats(self.holder.recommender),
            })

        async def metrics(_request: Any) -> Any:
            return web.Response(body=self.metrics.exposition(),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        def health(which: str) -> Any:
            async def answer(_request: Any) -> Any:
                status, body = self.health.report(consumer_lag(self.consumer)).body(which)
                return web.json_response(body, status=status)
            return answer

        app = web.Application()
        app.router.add_get("/health/live", health("live"))
        app.router.add_get("/health/ready", health("ready"))
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/stats", stats)
        app.router.add_get("/", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.worker_host, self.settings.worker_port).start()
        return runner


def run_direct_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM (blocking)."""

    async def main() -> None:
        worker = DirectWorker(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        loop.add_signal_handler(signal.SIGUSR1, lambda: dump_tasks(worker))
        await worker.run()

    asyncio.run(main())
