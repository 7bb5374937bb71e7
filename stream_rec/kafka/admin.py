"""Topic and cluster helpers for any Kafka (the embedded broker or a real cluster)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import BrokerError, ConfigError
from .clients import admin_config

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["parse_bootstrap", "wait_for_kafka", "ensure_topics"]

_TOPIC_ALREADY_EXISTS = 36
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def parse_bootstrap(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9092"`` -> [("h1", 9092), ("h2", 9092)]; ConfigError when malformed."""
    out = []
    for part in bootstrap_servers.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"bootstrap servers must be host:port[,host:port...]; got {bootstrap_servers!r}"
            )
        out.append((host, int(port)))
    return out


async def wait_for_kafka(
    bootstrap_servers: str, timeout: float = 30.0, settings: Settings | None = None
) -> None:
    """Returns once the cluster answers a metadata request; BrokerError after ``timeout`` s.

    ``settings`` give the security settings (TLS, SASL); None: plaintext. While it waits,
    aiokafka's per-attempt ERROR lines are off and one warning says what it waits for."""
    from .reach import quiet_connection_errors, unreachable

    parse_bootstrap(bootstrap_servers)
    deadline = time.monotonic() + timeout
    warned = False
    with quiet_connection_errors():
        while True:
            last = await _cluster_answers(bootstrap_servers, settings)
            if last is None:
                return
            if time.monotonic() >= deadline:
                raise unreachable(bootstrap_servers, f"no answer within {timeout:g}s: {last}")
            if not warned:
                warned = True
                logging.getLogger("stream_rec.kafka").warning(
                    "waiting up to %gs for Kafka at %s (%s)", timeout, bootstrap_servers, last)
            await asyncio.sleep(0.2)


async def _cluster_answers(bootstrap_servers: str, settings: Settings | None) -> str | None:
    """None when the cluster lists its brokers; otherwise why not."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError, KafkaError

    admin = AIOKafkaAdminClient(
        **admin_config(settings, bootstrap_servers, request_timeout_ms=5000))
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return None if cluster.get("brokers") else "the cluster lists no brokers"
    except KafkaConnectionError:
        return "no broker answered"
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    replication_factor: int = 1,
    timeout: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    settings: Settings | None = None,
    min_insync_replicas: int = -1,
) -> dict[str, int]:
    """Creates the topics that do not exist yet; returns every topic's partition count.

    ``configs`` gives per-topic settings for topics created now (e.g. a changelog's
    ``{"cleanup.policy": "compact"}``). ``replication_factor`` -1 is the cluster's
    ``default.replication.factor`` (asked of a broker; 1 when it does not say, as the embedded
    broker does not); ``min_insync_replicas`` >= 1 sets the topics' ``min.insync.replicas``
    (-1: the cluster's default). ``settings`` give the security settings; None: plaintext.

    Idempotent: an existing topic is fine and keeps its partition count (compare the result
    when you need an exact count). Returns once every partition has a leader.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, for_code

    for name, partitions in topics.items():
        # Kafka's rule for topic names; Tansu would accept any name, so check here for both.
        if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
            raise ConfigError(
                f"topic name {name!r} is not valid; expected 1-249 characters of "
                "a-z, A-Z, 0-9, '.', '_' or '-'"
            )
        if partitions < 1:
            raise ConfigError(f"topic {name!r} needs >= 1 partitions; got {partitions}")
    if replication_factor < 1 and replication_factor != -1:
        raise ConfigError(f"replication_factor must be >= 1, or -1; got {replication_factor}")
    await wait_for_kafka(bootstrap_servers, timeout, settings)
    if not topics:
        return {}
    admin = AIOKafkaAdminClient(
        **admin_config(settings, bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    )
    extra = {"min.insync.replicas": str(min_insync_replicas)} if min_insync_replicas > 0 else {}
    try:
        await admin.start()
        if replication_factor == -1:
            replication_factor = await _default_replication_factor(admin)
        response = await admin.create_topics(
            [
                NewTopic(name, n, replication_factor,
                         topic_configs={**extra, **(configs or {}).get(name, {})})
                for name, n in topics.items()
            ]
        )
        for name, code, *message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                detail = message[0] if message and message[0] else for_code(code).__name__
                raise BrokerError(f"cannot create topic {name!r}: {detail} (error code {code})")
        deadline = time.monotonic() + timeout
        while True:
            described = {t["topic"]: t for t in await admin.describe_topics(list(topics))}
            counts = {
                name: len(t["partitions"])
                for name, t in described.items()
                if t["error_code"] == 0
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
            }
            if set(counts) >= set(topics):
                return {name: counts[name] for name in topics}
            if time.monotonic() >= deadline:
                missing = sorted(set(topics) - set(counts))
                raise BrokerError(
                    f"topics {missing} have no leader for every partition after {timeout:g}s"
                )
            await asyncio.sleep(0.1)
    except KafkaError as exc:
        raise BrokerError(
            f"cannot create topics on {bootstrap_servers}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        await admin.close()


async def _default_replication_factor(admin: Any) -> int:
    """The cluster's ``default.replication.factor`` (CreateTopics before v4, all aiokafka
    sends, cannot say -1), or 1 when no broker answers it."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import KafkaError

    try:
        cluster = await admin.describe_cluster()
        broker = str(cluster["brokers"][0]["node_id"])
        wanted = {"default.replication.factor": None}
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker, wanted)])
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "default.replication.factor" and entry[1]:
                    return max(1, int(entry[1]))
    except (KafkaError, OSError, ValueError, LookupError, TypeError, AttributeError,
            asyncio.TimeoutError):
        pass
    return 1
