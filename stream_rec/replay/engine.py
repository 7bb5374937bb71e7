"""`stream-rec replay`: fold a recorded log into the session tables, optionally recommending.

The same intake (:mod:`stream_rec.core.intake`) and the same fold as the workers, and in
``recs`` mode the same :meth:`Recommender.step`, built by :mod:`stream_rec.serving.compose`;
the states go to the direct worker's tables (:class:`PartitionedSessionDB` under
``<data dir>/<app id>``, key = user id, value = state bytes), each user in the partition of
its events, and with ``--changelog`` to ``<app id>-sessions-changelog`` as well, so workers
started on that data directory or restoring from that changelog serve the rebuilt states.

    records -> intake (invalid: counted by reason) -> states of the batch's users from RocksDB
    -> fold (state) | Recommender.step (recs) -> RocksDB write batch per partition
    [-> changelog, recommendations to a topic or a file] -> checkpoint

Resuming (the checkpoint file, replay/control.py, says where the input was left): a topic
range's states carry the events' offsets as the workers' do, so records folded again after a
resume are no-ops (``SessionState.last_offset``). A file's records have no events-topic offset
(a state that claimed one would make a live worker skip real events), so each partition's
table records how far into the file it is, in the same write batch as its states
(:func:`replay_position_key`, one per input file), and a resumed replay skips what a table
already holds: the same file replayed again is not applied twice, another file (the next
day's) is applied whole.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from hashlib import blake2b
from pathlib import Path
from typing import IO, Any

from ..core.intake import decode_states, take_records
from ..core.isolation import step_isolated
from ..core.session import SessionPolicy, SessionState, fold_events
from ..errors import ConfigError
from ..runtime.partitioned_store import PartitionedSessionDB
from ..settings import Settings
from .control import Checkpoint, Pacer, Progress
from .files import FileInput, Record
from .options import ReplayOptions

__all__ = ["ReplayOptions", "run_replay", "replay_until_stopped"]

_POSITION = struct.Struct("<q")


def replay_position_key(input_: str) -> bytes:
    """File input: the key under which each partition's table keeps the position (among the
    file's records of that partition) up to which it holds ``input_``, written in the states'
    write batch. Not a user id (user ids never start with NUL): workers and the changelog never
    see it."""
    return b"\x00stream-rec:replay-position:" + blake2b(input_.encode(), digest_size=8).digest()

# Records per state-only step: the more of a user's events a step holds, the fewer arrays the
# fold builds (one set per user and step) and the fewer RocksDB reads and writes. Measured on
# a 1M-event day of 50,000 shoppers: 54k events/s at 32,768, 61k at 65,536 (RSS
# 194 MB), 65k at 131,072 (RSS 267 MB).
_STATE_BATCH = 65536


async def _file_batches(source: FileInput, size: int, pacer: Pacer) -> AsyncIterator[list[Record]]:
    batch: list[Record] = []
    records: Iterator[Record] = source.records()
    for record in records:
        if pacer.paced:
            delay = pacer.delay(record[1])
            if delay > 0.001:  # not due yet: what is due goes now, then wait
                if batch:
                    yield batch
                    batch = []
                await asyncio.sleep(delay)
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Replay:
    def __init__(self, settings: Settings, opts: ReplayOptions) -> None:
        self.settings, self.opts = settings, opts
        root = Path(settings.data_dir) / settings.app_id
        self.db = PartitionedSessionDB(root, settings.state_memory_mb << 20)
        self.changelog = f"{settings.app_id}-sessions-changelog"
        self.recommender: Any = None
        self.policy: SessionPolicy | None = None
        self.reasons: Counter[str] = Counter()
        self.users: set[str] = set()
        self.records = self.events = self.recommendations = 0
        self.out: IO[bytes] | None = None
        self.producer: Any = None
        self.saved = 0.0
        self.file_input = opts.file is not None
        self.position_key = replay_position_key(f"file:{Path(opts.file).resolve()}"
                                                if opts.file else "")
        self._applied: dict[int, int] = {}
        self.root = root
        self.started = False
        for p in range(settings.partitions):  # all now: a table in use is refused up front
            try:
                self.db.open(p)
            except Exception as exc:  # rocksdict raises a bare Exception ("IO error: ... LOCK")
                self.db.close_all()
                if "lock" not in str(exc).lower():
                    raise
                raise ConfigError(
                    f"the session tables under {root} are in use by another process (a worker "
                    "or a replay with this --data-dir and --app-id): stop it, or replay into "
                    "another --data-dir or --app-id") from None
        self.checkpoint_path = root / "replay.json"  # set by run_replay, per input

    def load_model(self) -> None:
        from ..serving.bundle import ModelBundle, bundles_newest_first, resolve_bundle
        from ..serving.compose import build_recommender, session_policy

        s = self.settings
        if s.bundle or s.model_version:
            path = resolve_bundle(s.bundles_dir, s.bundle or None, s.model_version or None)
        else:
            newest = bundles_newest_first(s.bundles_dir)
            if not newest:
                raise ConfigError(f"replay needs a model bundle (its max_len sets the state "
                                  f"length); none in {s.bundles_dir!r}")
            path = newest[0]
        bundle = ModelBundle.load(path)
        self.policy = session_policy(s, bundle.max_len)
        if self.opts.mode == "recs":
            self.recommender = build_recommender(bundle, s)

    def states_of(self, partition_of: dict[str, int]) -> dict[str, SessionState | None]:
        by_partition: dict[int, list[str]] = defaultdict(list)
        for user, p in partition_of.items():
            by_partition[p].append(user)
        stored: list[tuple[str, bytes | None]] = []
        for p, users in by_partition.items():
            stored.extend(zip(users, self.db.get_many(p, [u.encode() for u in users])))
        return decode_states(stored).states

    def applied(self, partition: int) -> int:
        """File input: the partition's next record position its table already holds."""
        if partition not in self._applied:
            raw = self.db.get_many(partition, [self.position_key])[0]
            self._applied[partition] = -1 if raw is None else _POSITION.unpack(raw)[0]
        return self._applied[partition]

    async def step(self, batch: list[Record], checkpoint: Checkpoint) -> None:
        from ..serving.compose import record_limits

        read = len(batch)
        self.records += read
        ends: dict[int, int] = {}
        for _, _, offset, _, p in batch:
            ends[p] = offset + 1
        if self.file_input:  # a resumed replay: skip what a table already holds (see module doc)
            batch = [r for r in batch if r[2] >= self.applied(r[4])]
        intake = take_records(batch, record_limits(self.settings))
        # Topic records carry their offsets, and each state the last one applied, as the
        # workers'; a file's positions are not the events topic's offsets and stay out of it.
        offsets = None if self.file_input else intake.offsets
        self.reasons.update(bad.code for bad, _ in intake.invalid)
        partition_of = dict(intake.origin)
        states = {**self.states_of(partition_of), **dict.fromkeys(intake.forgotten)}
        if self.recommender is not None:
            # As the workers step: a batch that raises is retried user by user, and the events
            # that still raise are dead letters (processing_error).
            result = step_isolated(self.recommender, states, intake.events, offsets,
                                   int(time.time() * 1000))
            self.reasons.update("processing_error" for _ in result.failed)
            new_states = result.states
            out = [kv for answers in result.answers for kv in answers.records()]
        else:
            assert self.policy is not None
            new_states = fold_events(states, intake.events, self.policy, offsets)
            out = []
        writes: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        for user, state in new_states.items():
            writes[partition_of[user]].append((user.encode(), state.to_bytes()))
        for user in sorted(intake.forgotten - set(new_states)):  # as the workers: state deleted
            writes[partition_of[user]].append((user.encode(), None))
        futures = []
        if self.producer is not None and self.opts.changelog:
            for p, items in writes.items():
                for key, value in items:
                    futures.append(await self.producer.send(
                        self.changelog, key=key, value=value, partition=p))
        await self.emit(out, futures)
        last: dict[int, int] = {}
        if futures:
            for meta in await asyncio.gather(*futures):
                if meta.topic == self.changelog:
                    last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)
        if self.file_input:
            for p, end in ends.items():
                writes[p].append((self.position_key, _POSITION.pack(end)))
                self._applied[p] = end
        for p, items in writes.items():
            self.db.write(p, items, changelog_offset=last.get(p))
        self.events += len(intake.events)
        self.users.update(new_states)
        checkpoint.next_offsets.update(ends)
        checkpoint.position += read
        if self.out is not None:
            self.out.flush()
            checkpoint.output_bytes = self.out.tell()
        # recs: every batch (a resumed replay re-answers at most one batch); state: twice a
        # second (the batches folded again after a resume are no-ops, by their offsets)
        now = time.monotonic()
        if self.recommender is not None or now - self.saved >= 0.5:
            checkpoint.save()
            self.saved = now

    async def emit(self, records: list[tuple[bytes, bytes]], futures: list[Any]) -> None:
        self.recommendations += len(records)
        if self.out is not None:
            self.out.write(b"".join(value + b"\n" for _, value in records))
        elif self.opts.to_topic is not None:
            for key, value in records:
                futures.append(await self.producer.send(self.opts.to_topic, key=key, value=value))

    async def open_outputs(self, checkpoint: Checkpoint) -> None:
        s, o = self.settings, self.opts
        if o.to_file is not None:
            target = Path(o.to_file)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.out = open(target, "r+b" if checkpoint.position and target.exists() else "wb")
            # Answers past the checkpoint belong to a batch that was interrupted. A file
            # replay whose tables already hold part of it keeps them (those records are
            # skipped now); otherwise they go, and the batch is answered again.
            ahead = self.file_input and any(
                self.applied(p) > checkpoint.next_offsets.get(p, 0)
                for p in range(s.partitions))
            if not ahead:
                self.out.truncate(checkpoint.output_bytes)
            self.out.seek(0, 2)
        if o.to_topic is not None or o.changelog:
            from aiokafka import AIOKafkaProducer

            from ..kafka.admin import ensure_topics
            from ..kafka.clients import producer_config

            topics = {self.changelog: s.partitions} if o.changelog else {}
            if o.to_topic is not None:
                topics[o.to_topic] = s.partitions
            await ensure_topics(s.bootstrap_servers, topics,
                                replication_factor=s.replication_factor,
                                configs={self.changelog: {"cleanup.policy": "compact"}},
                                settings=s, min_insync_replicas=s.min_insync_replicas)
            self.producer = AIOKafkaProducer(**producer_config(
                s, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20))
            from ..kafka.reach import start_client

            await start_client(self.producer, s.bootstrap_servers)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.out is not None:
            self.out.close()
        self.db.close_all()


async def run_replay(settings: Settings, opts: ReplayOptions) -> dict[str, Any]:
    """Replay ``opts``' input as ``settings`` say; returns the summary (see docs/operations.md)."""
    from ..kafka.topic_range import TopicRange

    opts = opts.validated(settings)
    t0, cpu0 = time.perf_counter(), time.process_time()
    replay = _Replay(settings, opts)
    source: FileInput | TopicRange
    if opts.file is not None:
        source = FileInput(opts.file, settings.partitions, opts.columns)
    else:
        assert opts.from_topic is not None
        source = TopicRange(settings, opts.from_topic, opts.start_offset, opts.end_offset,
                            opts.start_ms, opts.end_ms)
    # One checkpoint per input and mode by default: the next day's file starts its own.
    tag = blake2b(f"{source.describe}|{opts.mode}".encode(), digest_size=6).hexdigest()
    replay.checkpoint_path = Path(opts.checkpoint or replay.root / f"replay-{tag}.json")
    checkpoint = Checkpoint.open(replay.checkpoint_path, source.describe, opts.mode)
    already_complete = checkpoint.done
    source.next_offsets = dict(checkpoint.next_offsets)
    if isinstance(source, FileInput):
        source.skip = checkpoint.position
    resumed_at = checkpoint.position
    progress = Progress(enabled=opts.progress)
    try:
        if not checkpoint.done:
            await replay.open_outputs(checkpoint)  # Kafka first: an unreachable one is one line
            if isinstance(source, TopicRange):
                await source.start(opts.batch_size or _STATE_BATCH)
            replay.load_model()
            replay.started = True
            size = opts.batch_size or (_STATE_BATCH if opts.mode == "state" else settings.batch_max)
            pacer = Pacer(opts.rate, opts.speed)
            batches = (_file_batches(source, size, pacer) if isinstance(source, FileInput)
                       else source.records(size))
            async for batch in batches:
                if isinstance(source, TopicRange) and pacer.paced:
                    for record in batch:
                        delay = pacer.delay(record[1])
                        if delay > 0.001:
                            await asyncio.sleep(delay)
                await replay.step(batch, checkpoint)
                progress.update(replay.records, _fraction(source, replay.records))
                await asyncio.sleep(0)  # where Ctrl-C (a cancelled task) stops the replay
            checkpoint.done = True
    finally:
        try:
            # Every step is whole (tables written, then the checkpoint advanced) or not begun.
            if replay.started:
                checkpoint.save()
        finally:
            if isinstance(source, TopicRange):
                await source.close()
            await replay.close()
    seconds = time.perf_counter() - t0
    return {
        "mode": opts.mode, "input": source.describe, "resumed_at": resumed_at,
        "records": replay.records, "events": replay.events,
        "dead_letters": sum(replay.reasons.values()),
        "dead_letters_by_reason": dict(replay.reasons),
        "users": len(replay.users), "recommendations": replay.recommendations,
        "seconds": round(seconds, 3), "cpu_seconds": round(time.process_time() - cpu0, 3),
        "events_per_s": round(replay.events / max(seconds, 1e-9), 1),
        "data_dir": str(Path(settings.data_dir) / settings.app_id),
        "changelog": replay.changelog if opts.changelog else None,
        "to_topic": opts.to_topic, "to_file": opts.to_file,
        "checkpoint": str(replay.checkpoint_path), "complete": checkpoint.done,
        "already_complete": already_complete,
    }


def _fraction(source: FileInput | Any, records: int) -> float | None:
    if isinstance(source, FileInput):
        total = source.total_bytes()
        return source.bytes_read() / total if total else None
    total = source.total()
    return records / total if total else None


def replay_until_stopped(settings: Settings, opts: ReplayOptions) -> dict[str, Any]:
    """:func:`run_replay`, stopped cleanly by SIGINT or SIGTERM (KeyboardInterrupt after the
    tables and the checkpoint are closed: the same command continues where it stopped)."""
    import signal
    import sys

    async def main() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await run_replay(settings, opts)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        print("replay: stopped; the same command continues where it stopped", file=sys.stderr)
        raise KeyboardInterrupt from None
