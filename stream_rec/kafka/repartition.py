"""`stream-rec repartition --partitions N`: move a stopped worker group to N partitions.

Adding partitions to a topic moves keys (murmur2 modulo the count) while their state stays in
the old changelog partitions, and the embedded broker cannot add partitions at all. So the
partition count changes by moving to new, versioned names, on any Kafka:

1. The old workers are stopped (the command refuses while their group has members).
2. New topics: events ``<events>.p<N>`` and the changelog of the new group ``<app id>.p<N>``,
   both with N partitions (the recommendations and dead-letter topics stay: their readers do
   not depend on the partition count).
3. **State**: the old changelog is read to its end, the last value of each user kept (a
   tombstone deletes), and written to the new changelog in the partition the new events topic
   gives the user (the producers' partitioner), its last-applied offset reset (offsets of the
   new topic start again at 0).
4. **Events**: a bridge copies the old events topic to the new one from the old group's
   committed offsets, so every event the old workers had not answered, and every event
   producers still write to the old topic during the switch, reaches the new workers, each
   user's in order. It stops once the old topic was idle for ``bridge_idle_s``.
5. The new workers start with ``--events-topic <events>.p<N> --app-id <app id>.p<N>
   --partitions N``; producers switch to the new events topic.
6. ``--retire`` deletes the old events topic and changelog once the new workers run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.session import SessionState
from ..errors import ConfigError, DataError, StreamRecError
from ..settings import Settings
from .admin import ensure_topics
from .clients import admin_config, consumer_config, producer_config
from .partitioning import partition_for

__all__ = ["RepartitionPlan", "plan", "repartition", "retire", "new_settings"]

_SUFFIX = re.compile(r"\.p\d+$")


def changelog_of(app_id: str) -> str:
    return f"{app_id}-sessions-changelog"


@dataclass(frozen=True)
class RepartitionPlan:
    old_events: str
    old_app_id: str
    new_events: str
    new_app_id: str
    partitions: int

    @property
    def old_changelog(self) -> str:
        return changelog_of(self.old_app_id)

    @property
    def new_changelog(self) -> str:
        return changelog_of(self.new_app_id)


def plan(settings: Settings, partitions: int) -> RepartitionPlan:
    """The versioned names for ``partitions``: ``events`` -> ``events.p8``, ``events.p8`` ->
    ``events.p2`` (the same for the app id)."""
    if partitions < 1:
        raise ConfigError(f"--partitions must be at least 1; got {partitions}")
    base_events = _SUFFIX.sub("", settings.events_topic)
    base_app = _SUFFIX.sub("", settings.app_id)
    p = RepartitionPlan(
        settings.events_topic,
        settings.app_id,
        f"{base_events}.p{partitions}",
        f"{base_app}.p{partitions}",
        partitions,
    )
    if p.new_events == p.old_events:
        raise ConfigError(
            f"{settings.events_topic} already has the name of {partitions} partitions; "
            "nothing to move"
        )
    return p


def new_settings(settings: Settings, p: RepartitionPlan) -> Settings:
    """The settings the new workers and producers use."""
    return dataclasses.replace(
        settings, events_topic=p.new_events, app_id=p.new_app_id, partitions=p.partitions
    )


async def _group_members(settings: Settings, group: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**admin_config(settings))
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    members = 0
    for response in described:
        for g in getattr(response, "groups", []):
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            if len(g) > 5 and g[1] == group:
                members += len(g[5])
    return members


async def wait_empty(
    settings: Settings, group: str, wait_s: float, say: Callable[[str], None]
) -> None:
    """Until ``group`` has no member (a stopped worker stays a member until its session times
    out); StreamRecError after ``wait_s``. The embedded broker (Tansu 0.6) keeps listing a
    stopped member until the group's next join: there, stop the workers and pass ``force``."""
    deadline = time.monotonic() + wait_s
    told = False
    while members := await _group_members(settings, group):
        if time.monotonic() > deadline:
            raise StreamRecError(
                f"group {group} still has {members} member(s) after {wait_s:g}s: stop its workers "
                "first (their state must be final before it moves)"
            )
        if not told:
            say(f"waiting for group {group} to empty ({members} member(s))")
            told = True
        await asyncio.sleep(0.5)


async def _partitions(consumer: Any, topic: str) -> list[int]:
    found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer.topics()  # a metadata request
        found = consumer.partitions_for_topic(topic) or set()
    return sorted(found)


async def move_state(
    settings: Settings, p: RepartitionPlan, say: Callable[[str], None]
) -> dict[str, int]:
    """Copy the old changelog's last value per user into the new changelog, by the new
    partitioner, last-applied offsets reset. Returns counts."""
    from aiokafka import AIOKafkaProducer

    from .topic_range import TopicRange

    latest: dict[bytes, bytes | None] = {}
    read = 0
    changelog = TopicRange(settings, p.old_changelog)  # to its end, as replays read a topic
    await changelog.start()
    try:
        async for batch in changelog.records(max_records=10_000):
            read += len(batch)
            for k, v, *_ in batch:
                if k and k[:1] != b"\x00":  # skip the workers' marker records
                    latest[k] = v
    except DataError:
        pass  # no changelog: the old workers never wrote a state
    finally:
        await changelog.close()
    producer = AIOKafkaProducer(**producer_config(settings, linger_ms=5, max_batch_size=1 << 20))
    await producer.start()
    users = 0
    try:
        futures = []
        for key, value in latest.items():
            if value is None:
                continue
            state = dataclasses.replace(SessionState.from_bytes(value), last_offset=-1)
            futures.append(
                await producer.send(
                    p.new_changelog,
                    key=key,
                    value=state.to_bytes(),
                    partition=partition_for(key, p.partitions),
                )
            )
            users += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    say(
        f"state: {read:,} changelog records of {p.old_changelog} -> {users:,} users' states in "
        f"{p.new_changelog} ({p.partitions} partitions)"
    )
    return {"changelog_records": read, "users": users}


async def bridge(
    settings: Settings,
    p: RepartitionPlan,
    idle_s: float,
    say: Callable[[str], None],
    started: asyncio.Event | None = None,
) -> int:
    """Copy the old events topic to the new one from the old group's committed offsets until it
    was idle for ``idle_s`` seconds; each record keeps its key, value and timestamp."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        **consumer_config(
            settings,
            group_id=p.old_app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
    )
    producer = AIOKafkaProducer(**producer_config(settings, linger_ms=2))
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        from aiokafka import TopicPartition

        tps = [TopicPartition(p.old_events, i) for i in await _partitions(consumer, p.old_events)]
        consumer.assign(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        if started is not None:
            started.set()
        last = time.monotonic()
        t_note = last
        commit_ok = True
        while time.monotonic() - last < idle_s:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            futures = []
            for messages in batch.values():
                for m in messages:
                    futures.append(
                        await producer.send(
                            p.new_events, key=m.key, value=m.value, timestamp_ms=m.timestamp
                        )
                    )
            if futures:
                await asyncio.gather(*futures)
                copied += len(futures)
                last = time.monotonic()
                commit_ok = await _commit(consumer, commit_ok, say)
            if time.monotonic() - t_note > 10:
                t_note = time.monotonic()
                say(f"bridge: {copied:,} events copied {p.old_events} -> {p.new_events}")
    finally:
        await producer.stop()
        await consumer.stop()
    say(f"bridge: {copied:,} events copied; {p.old_events} idle for {idle_s:g}s, done")
    return copied


async def _commit(consumer: Any, ok: bool, say: Callable[[str], None]) -> bool:
    """Move the old group's offsets with the copy, so a rerun resumes; best effort (the
    embedded broker refuses commits for a group it still thinks has a member)."""
    from aiokafka.errors import KafkaError

    if not ok:
        return False
    try:
        await consumer.commit()
        return True
    except KafkaError as exc:
        say(
            f"bridge: cannot commit the old group's offsets ({type(exc).__name__}); a rerun "
            "would copy again from where the workers stopped"
        )
        return False


async def repartition(
    settings: Settings,
    partitions: int,
    bridge_idle_s: float = 30.0,
    say: Callable[[str], None] = print,
    started: asyncio.Event | None = None,
    group_wait_s: float = 60.0,
    force: bool = False,
) -> dict[str, Any]:
    """Steps 1-4 of the module's doc; ``started`` is set once the bridge reads (switch now)."""
    p = plan(settings, partitions)
    if force:  # the embedded broker lists a stopped member until the group's next join
        say(
            f"--force: not checking that group {p.old_app_id} is empty; its workers must be stopped"
        )
    else:
        await wait_empty(settings, p.old_app_id, group_wait_s, say)
    await ensure_topics(
        settings.bootstrap_servers,
        {p.new_events: partitions, p.new_changelog: partitions},
        replication_factor=settings.replication_factor,
        configs={p.new_changelog: {"cleanup.policy": "compact"}},
        settings=settings,
        min_insync_replicas=settings.min_insync_replicas,
    )
    say(f"created {p.new_events} and {p.new_changelog} with {partitions} partitions")
    moved = await move_state(settings, p, say)
    say(
        f"start the new workers and switch producers: --events-topic {p.new_events} --app-id "
        f"{p.new_app_id} --partitions {partitions}"
    )
    copied = await bridge(settings, p, bridge_idle_s, say, started)
    return {
        "events_topic": p.new_events,
        "app_id": p.new_app_id,
        "partitions": partitions,
        **moved,
        "events_bridged": copied,
    }


async def retire(
    settings: Settings, say: Callable[[str], None] = print, force: bool = False
) -> list[str]:
    """Delete ``settings``' events topic and changelog (the old ones, once the new group runs)."""
    from aiokafka.admin import AIOKafkaAdminClient

    names = [settings.events_topic, changelog_of(settings.app_id)]
    members = 0 if force else await _group_members(settings, settings.app_id)
    if members:
        raise StreamRecError(
            f"group {settings.app_id} still has {members} member(s); retire only topics "
            "no worker reads"
        )
    admin = AIOKafkaAdminClient(**admin_config(settings))
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()
    say(f"deleted {', '.join(names)}")
    return names
