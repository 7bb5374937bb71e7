"""Kafka client configuration, for every client stream-rec makes: build it here, nowhere else.

Every aiokafka producer, consumer and admin client (both worker engines, produce, tail, the
bench, streaming evaluation, the demo, topic creation) takes its keyword arguments from
:func:`producer_config`, :func:`consumer_config` or :func:`admin_config`, and the faust app from
:func:`faust_config`, so the security settings (TLS, SASL) and the producer's durability
(``acks="all"``, idempotence where the broker can) reach all of them from the one
:class:`~stream_rec.settings.Settings`.
"""

from __future__ import annotations

import ssl
from typing import Any

from ..settings import Settings

__all__ = [
    "faust_broker_url", "heartbeat_interval_s", "group_timing_ms", "security_config",
    "producer_config", "consumer_config", "admin_config", "faust_config",
]


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


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``--security-protocol`` SSL or SASL_SSL (None otherwise)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    return context


def security_config(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keywords (any client) for the settings' protocol."""
    out: dict[str, Any] = {"security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        out["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        out.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.reveal(),
        )
    return out


def _client(settings: Settings, bootstrap_servers: str | None) -> dict[str, Any]:
    servers = settings.bootstrap_servers if bootstrap_servers is None else bootstrap_servers
    return {"bootstrap_servers": servers, **security_config(settings)}


def producer_config(
    settings: Settings, bootstrap_servers: str | None = None, **options: Any
) -> dict[str, Any]:
    """``AIOKafkaProducer(**producer_config(settings, linger_ms=...))``: acks=all, and
    idempotence when ``--producer-idempotence`` (the embedded broker cannot)."""
    return {
        **_client(settings, bootstrap_servers),
        "acks": "all",
        "enable_idempotence": settings.producer_idempotence,
        **options,
    }


def consumer_config(
    settings: Settings, bootstrap_servers: str | None = None, **options: Any
) -> dict[str, Any]:
    """``AIOKafkaConsumer(*topics, **consumer_config(settings, group_id=...))``."""
    return {**_client(settings, bootstrap_servers), **options}


def admin_config(
    settings: Settings | None, bootstrap_servers: str | None = None, **options: Any
) -> dict[str, Any]:
    """``AIOKafkaAdminClient(**admin_config(settings))``; no settings: plaintext (the embedded
    broker)."""
    if settings is None:
        return {"bootstrap_servers": bootstrap_servers, **options}
    return {**_client(settings, bootstrap_servers), **options}


def faust_config(settings: Settings) -> dict[str, Any]:
    """faust.App keywords: broker URL, credentials, acks=all (faust's producer is never
    idempotent outside its exactly-once mode)."""
    out: dict[str, Any] = {
        "broker": faust_broker_url(settings.bootstrap_servers),
        "producer_acks": -1,
    }
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        import faust

        out["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password.reveal(),
            ssl_context=context, mechanism=settings.sasl_mechanism,
        )
    elif context is not None:
        import faust

        out["broker_credentials"] = faust.SSLCredentials(context)
    return out
