"""A broker that cannot be reached is one clear line, not a traceback or a screen of ERRORs.

aiokafka logs an ERROR for every failed connection attempt and raises
``KafkaConnectionError: Unable to bootstrap from [...]``; a client that failed to start and
was not stopped adds "Unclosed AIOKafkaProducer". :func:`start_client` starts a client with
aiokafka's connection errors silenced, stops it when starting fails, and raises one
:class:`~stream_rec.errors.BrokerError` that says where it looked and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from ..errors import BrokerError

__all__ = ["start_client", "quiet_connection_errors", "unreachable"]


@contextlib.contextmanager
def quiet_connection_errors() -> Iterator[None]:
    """aiokafka's own log lines off meanwhile (each failed attempt is an ERROR line)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def unreachable(bootstrap_servers: str, detail: str) -> BrokerError:
    return BrokerError(
        f"cannot reach Kafka at {bootstrap_servers} ({detail}); is a broker running there? "
        "(`stream-rec broker` starts one on this machine; pass its address with "
        "--bootstrap-servers or STREAM_REC_BOOTSTRAP_SERVERS)")


async def start_client(client: Any, bootstrap_servers: str) -> None:
    """``await client.start()``, or a BrokerError naming ``bootstrap_servers`` (client stopped)."""
    from aiokafka.errors import KafkaError

    with quiet_connection_errors():
        try:
            await client.start()
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            detail = "no broker answered" if "bootstrap" in str(exc) else type(exc).__name__
            raise unreachable(bootstrap_servers, detail) from None
