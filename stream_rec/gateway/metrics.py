"""The gateway's ``GET /metrics``: its counters and gauges in a Prometheus registry of its own
(as the workers' serving/metrics.py), read from the Gateway when scraped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .latest import PUSH_BUCKETS, LatestRecommendations
from .limits import Counters

__all__ = ["GatewayMetrics", "CONTENT_TYPE_LATEST"]

_PREFIX = "stream_rec_gateway"


class Gateway(Protocol):
    """What a scrape reads (app.Gateway)."""

    counters: Counters
    latest: LatestRecommendations
    feed: Any  # kafka_io.RecommendationFeed, or None


def _counters(gw: Gateway) -> list[tuple[str, str, float]]:
    rows: list[tuple[str, str, float]] = [
        (k, Counters.NAMES[k], v) for k, v in gw.counters.values.items()]
    rows += [("latest_evicted", "users evicted from the latest map (LRU)", gw.latest.evicted),
             ("pushed", "records handed to subscribers", gw.latest.delivered)]
    if gw.feed is not None:
        rows += [("records_consumed", "recommendation records read", gw.feed.consumed),
                 ("records_undecodable", "records skipped: not a recommendation",
                  gw.feed.undecodable)]
    return rows


def _gauges(gw: Gateway) -> list[tuple[str, str, float]]:
    rows: list[tuple[str, str, float]] = [
        ("subscribers", "open subscriptions (SSE and WebSocket)", gw.latest.subscriber_count),
        ("latest_users", "users in the latest-recommendations map", len(gw.latest))]
    if gw.feed is not None:
        rows.append(("assigned_partitions", "recommendations partitions read",
                     gw.feed.assigned))
        # Base units (Prometheus naming): seconds since the epoch, not the record's milliseconds.
        newest_s = gw.feed.last_record_ts / 1000.0
        rows.append(("last_record_timestamp_seconds", "newest record (unix time)", newest_s))
    return rows


class _Scraped:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self) -> Iterator[Any]:
        for name, help_, value in _counters(self.gw):
            yield CounterMetricFamily(f"{_PREFIX}_{name}", help_, value=value)
        for name, help_, value in _gauges(self.gw):
            yield GaugeMetricFamily(f"{_PREFIX}_{name}", help_, value=value)
        push = self.gw.latest.push_seconds
        cumulative, buckets = 0, []
        for le, n in zip((*PUSH_BUCKETS, float("inf")), push.counts):
            cumulative += n
            buckets.append(("+Inf" if le == float("inf") else repr(le), cumulative))
        yield HistogramMetricFamily(
            f"{_PREFIX}_push_seconds",
            "Seconds from a recommendation's arrival at the gateway to its hand-over to a "
            "subscriber's connection (SSE or WebSocket).",
            buckets=buckets, sum_value=push.sum)


class GatewayMetrics:
    """``render()`` is the text of one scrape."""

    def __init__(self, gw: Gateway) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Scraped(gw))

    def render(self) -> bytes:
        return generate_latest(self.registry)
