"""Kafka for stream-rec: an embedded broker (Tansu) on loopback, and topic helpers for any Kafka.

- :mod:`.embedded`: :class:`EmbeddedBroker`, the Tansu process, and what Tansu 0.6 does and
  does not do (read its docstring before relying on a Kafka feature against it).
- :mod:`.admin`: :func:`ensure_topics`, :func:`wait_for_kafka`, :func:`parse_bootstrap`,
  for the embedded broker and a real cluster alike.
- :mod:`.probe`: free ports and a raw Kafka metadata probe.
"""

from .admin import ensure_topics, parse_bootstrap, wait_for_kafka
from .embedded import EmbeddedBroker, kafka_or_embedded
from .probe import free_port

__all__ = ["EmbeddedBroker", "ensure_topics", "wait_for_kafka", "parse_bootstrap", "kafka_or_embedded", "free_port"]
