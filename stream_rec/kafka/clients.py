"""Kafka client configuration both engines share: broker URLs and consumer-group timing."""

from __future__ import annotations

from typing import Any

from ..settings import Settings

__all__ = ["faust_broker_url", "heartbeat_interval_s", "group_timing_ms"]


def faust_broker_url(bootstrap_servers: str) -> str:
    """``host:port[,host:port]`` -> faust's ``kafka://host:port;kafka://host:port``."""
    return ";".join(f"kafka://{s.strip()}" for s in bootstrap_servers.split(","))


def heartbeat_interval_s(session_timeout_s: float) -> float:
    """A third of the session timeout, at most 3 s: a new member joins in about half of it."""
    return min(3.0, session_timeout_s / 3)


def group_timing_ms(settings: Settings) -> dict[str, Any]:
    """aiokafka consumer-group options for ``settings.session_timeout_s``."""
    return {
        "session_timeout_ms": int(settings.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(heartbeat_interval_s(settings.session_timeout_s) * 1000),
    }
