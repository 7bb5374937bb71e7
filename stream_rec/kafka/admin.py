"""Topic and cluster helpers for any Kafka (the embedded broker or a real cluster)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

from ..errors import BrokerError, ConfigError

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


async def wait_for_kafka(bootstrap_servers: str, timeout: float = 30.0) -> None:
    """Returns once the cluster answers a metadata request; BrokerError after ``timeout`` s."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    parse_bootstrap(bootstrap_servers)
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            if cluster.get("brokers"):
                return
            last = "the cluster lists no brokers"
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            await admin.close()
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"Kafka at {bootstrap_servers} did not answer within {timeout:g}s ({last})"
            )
        await asyncio.sleep(0.2)


async def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    replication_factor: int = 1,
    timeout: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, int]:
    """Creates the topics that do not exist yet; returns every topic's partition count.

    ``configs`` gives per-topic settings for topics created now (e.g. a changelog's
    ``{"cleanup.policy": "compact"}``).

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
    if replication_factor < 1:
        raise ConfigError(f"replication_factor must be >= 1; got {replication_factor}")
    await wait_for_kafka(bootstrap_servers, timeout)
    if not topics:
        return {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000)
    )
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(name, n, replication_factor,
                         topic_configs=dict((configs or {}).get(name, {})))
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
