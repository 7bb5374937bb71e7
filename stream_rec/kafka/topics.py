"""`stream-rec topics`: create and describe the topics a deployment needs, as the workers expect.

| topic | partitions | configs |
|---|---|---|
| events | --partitions | ``retention.ms`` (--events-retention-hours; the replay window) |
| recommendations | --partitions | ``cleanup.policy=compact`` (the latest per user is kept) |
| events.dlq | 1 | ``retention.ms`` as events |
| <app id>-sessions-changelog | --partitions | ``cleanup.policy=compact`` (the session tables) |

All with ``--replication-factor`` and ``--min-insync-replicas``. Creating is idempotent: an
existing topic keeps its partitions and configs, and ``describe`` shows what it has, with a
line for each difference from the plan that matters (the changelog's partitions must equal
the events topic's).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..errors import BrokerError
from ..settings import Settings

__all__ = ["TopicPlan", "planned_topics", "create_topics", "describe_topics", "problems"]


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    configs: dict[str, str]


def planned_topics(settings: Settings, events_retention_hours: float) -> list[TopicPlan]:
    retention = {"retention.ms": str(int(events_retention_hours * 3600 * 1000))}
    compact = {"cleanup.policy": "compact"}
    p = settings.partitions
    return [
        TopicPlan(settings.events_topic, p, retention),
        TopicPlan(settings.recs_topic, p, compact),
        TopicPlan(settings.dlq_topic, 1, retention),
        TopicPlan(f"{settings.app_id}-sessions-changelog", p, compact),
    ]


async def create_topics(settings: Settings, plan: list[TopicPlan]) -> dict[str, int]:
    from .admin import ensure_topics

    return await ensure_topics(
        settings.bootstrap_servers, {t.name: t.partitions for t in plan},
        replication_factor=settings.replication_factor,
        configs={t.name: t.configs for t in plan}, settings=settings,
        min_insync_replicas=settings.min_insync_replicas, timeout=15.0)


async def describe_topics(settings: Settings, names: list[str]) -> dict[str, dict[str, Any]]:
    """name -> {"exists", "partitions", "replication_factor", "configs"} (configs the broker
    reports that are not its defaults; empty when it reports none)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import KafkaError

    from .admin import wait_for_kafka
    from .clients import admin_config

    await wait_for_kafka(settings.bootstrap_servers, 10.0, settings)
    admin = AIOKafkaAdminClient(**admin_config(settings, request_timeout_ms=10_000))
    out: dict[str, dict[str, Any]] = {}
    try:
        await admin.start()
        # Only topics that exist: a metadata request naming a missing topic creates it on
        # brokers with auto.create.topics.enable (and on the embedded one).
        wanted = [n for n in names if n in set(await admin.list_topics())]
        for t in await admin.describe_topics(wanted) if wanted else []:
            parts = t.get("partitions") or []
            out[t["topic"]] = {
                "exists": t["error_code"] == 0 and bool(parts),
                "partitions": len(parts),
                "replication_factor": len(parts[0]["replicas"]) if parts else 0,
                "configs": {},
            }
        existing = [n for n in names if out.get(n, {}).get("exists")]
        try:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in existing])
            for response in responses:
                for resource in response.resources:
                    out[resource[3]]["configs"] = {
                        e[0]: e[1] for e in resource[4]
                        if e[1] is not None and e[0] in _SHOWN}
        except (KafkaError, LookupError, TypeError, AttributeError, asyncio.TimeoutError):
            pass  # a broker that cannot describe configs (the embedded one): partitions only
    except KafkaError as exc:
        raise BrokerError(f"cannot describe topics on {settings.bootstrap_servers}: "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        await admin.close()
    for n in names:
        out.setdefault(n, {"exists": False, "partitions": 0, "replication_factor": 0,
                           "configs": {}})
    return out


_SHOWN = ("cleanup.policy", "retention.ms", "min.insync.replicas")


def problems(plan: list[TopicPlan], described: dict[str, dict[str, Any]]) -> list[str]:
    """What is missing or differs from the plan in a way that matters, one line each."""
    out = []
    events, _, _, changelog = plan
    for t in plan:
        d = described[t.name]
        if not d["exists"]:
            out.append(f"{t.name}: missing (`stream-rec topics create` creates it)")
            continue
        policy = d["configs"].get("cleanup.policy")
        if t.configs.get("cleanup.policy") == "compact" and policy not in (None, "compact") \
                and "compact" not in str(policy):
            out.append(f"{t.name}: cleanup.policy is {policy}; it should be compact")
    e, c = described[events.name], described[changelog.name]
    if e["exists"] and c["exists"] and e["partitions"] != c["partitions"]:
        out.append(f"{changelog.name} has {c['partitions']} partitions and {events.name} "
                   f"{e['partitions']}: they must be equal (workers refuse to start otherwise)")
    return out
