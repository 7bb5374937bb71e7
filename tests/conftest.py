"""Shared fixtures: one embedded broker per test session, and fresh topic names per test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stream_rec.kafka.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of ONE embedded Kafka-compatible broker (Tansu) shared by the session.

    Tests share it, so each must use its own topics and group (see ``unique_topics``).
    """
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


@dataclass(frozen=True)
class TopicNames:
    """Topic names and a consumer group id that no other test uses."""

    suffix: str
    events: str
    recommendations: str
    dlq: str
    group: str

    def topic(self, role: str) -> str:
        """Another topic name with this test's suffix, e.g. ``topic("changelog")``."""
        return f"{role}-{self.suffix}"


@pytest.fixture
def unique_topics(request: pytest.FixtureRequest) -> TopicNames:
    test = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40]
    suffix = f"{test}-{uuid.uuid4().hex[:8]}"
    return TopicNames(
        suffix=suffix,
        events=f"events-{suffix}",
        recommendations=f"recommendations-{suffix}",
        dlq=f"events.dlq-{suffix}",
        group=f"group-{suffix}",
    )
