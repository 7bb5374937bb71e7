"""Prometheus metrics of a worker (``GET /metrics`` on its status server): what it takes in,
what it answers, how long each stage takes, and how far behind it is.

Counters and histograms are updated once per micro-batch (the event-to-recommendation latency
too: its histogram takes a batch's answers in one numpy step and is exported at scrape time,
the series prometheus_client's ``Histogram`` writes, instead of ~2.5 us of ``observe`` per
answer); the gauges that read the consumer or RocksDB (lag per
partition, state entries and bytes, seconds since the last batch) are computed when scraped,
by the callbacks the engine gives :class:`WorkerMetrics`. Each worker has its own registry, so
several workers in one process (tests) do not share series.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

__all__ = ["WorkerMetrics", "CONTENT_TYPE_LATEST"]

_PREFIX = "stream_rec"
# Seconds: 0.5 ms .. 30 s (a stage of one batch; an answer's age at emit time).
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# WorkerStats counters /metrics exports as they are (name -> help)
_COUNTED = {
    "redeliveries": "Records already applied to their user's state (skipped).",
    "offset_regressions": "Records below a state's last offset that are no redelivery (a "
                          "re-created or truncated events topic).",
    "states_expired": "Idle session states deleted by the state TTL.",
    "state_resets": "Stored states that could not be decoded (the user started afresh).",
    "forgotten": "Users whose session state a forget event deleted.",
}
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class WorkerMetrics:
    def __init__(
        self,
        model_version: Callable[[], str],
        lag: Callable[[], dict[int, int]] | None = None,
        state: Callable[[], dict[int, tuple[int, int]]] | None = None,
        counts: Callable[[], Any] | None = None,
        encoder_cache: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.counts = counts
        self.encoder_cache = encoder_cache
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = PromCounter(f"{_PREFIX}_events", "Valid events taken in, by type.",
                                  ["type"], registry=r)
        self.dead_letters = PromCounter(f"{_PREFIX}_dead_letters",
                                        "Records dead-lettered, by reason code.", ["reason"],
                                        registry=r)
        self.recommendations = PromCounter(f"{_PREFIX}_recommendations",
                                           "Recommendations published.", registry=r)
        self.batches = PromCounter(f"{_PREFIX}_batches", "Micro-batches processed.", registry=r)
        self.batch_size = Histogram(f"{_PREFIX}_batch_records", "Records per micro-batch.",
                                    buckets=_SIZES, registry=r)
        self.stage = Histogram(f"{_PREFIX}_stage_seconds",
                               "Seconds per micro-batch in each stage (fold, encode, search, "
                               "produce: until every record of the batch is acknowledged).",
                               ["stage"], buckets=_LATENCY, registry=r)
        self.latency = BatchHistogram(f"{_PREFIX}_event_to_recommendation_seconds",
                                      "emitted_ts - event_ts of each recommendation.", _LATENCY)
        self.last_batch = time.time()
        r.register(_Scraped(self, model_version, lag, state))

    def observe_batch(
        self,
        records: int,
        event_types: Iterable[str],
        dead_letter_codes: Iterable[str],
        stage_seconds: dict[str, float],
    ) -> None:
        self.batches.inc()
        self.batch_size.observe(records)
        for kind, n in Counter(event_types).items():
            self.events.labels(kind).inc(n)
        for code, n in Counter(dead_letter_codes).items():
            self.dead_letters.labels(code).inc(n)
        for stage, seconds in stage_seconds.items():
            self.stage.labels(stage).observe(seconds)
        self.last_batch = time.time()

    def observe_answers(self, event_ts: Iterable[int], emitted_ts: int) -> None:
        ages = emitted_ts - np.fromiter(event_ts, np.int64)
        self.latency.observe_many(np.maximum(ages, 0) / 1000)
        self.recommendations.inc(len(ages))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class BatchHistogram:
    """A histogram observed a batch at a time; its series (``_bucket{le}``, ``_count``,
    ``_sum``) are those of a prometheus_client ``Histogram`` with the same buckets."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.array(sorted(buckets), np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, np.int64)  # the last: above every bound
        self.sum = 0.0

    def observe_many(self, values: np.ndarray) -> None:
        # A value v goes to the first bucket whose bound is >= v (Prometheus's le).
        at = np.searchsorted(self.bounds, values, side="left")
        self.counts += np.bincount(at, minlength=len(self.counts))
        self.sum += float(np.sum(values))

    def family(self) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts).tolist()
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        return HistogramMetricFamily(self.name, self.documentation,
                                     buckets=list(zip(les, cumulative)), sum_value=self.sum)


class _Scraped:
    """The gauges computed at scrape time."""

    def __init__(self, metrics: WorkerMetrics, model_version: Callable[[], str],
                 lag: Callable[[], dict[int, int]] | None,
                 state: Callable[[], dict[int, tuple[int, int]]] | None) -> None:
        self.metrics, self.model_version, self.lag, self.state = metrics, model_version, lag, state

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield self.metrics.latency.family()
        info = InfoMetricFamily(f"{_PREFIX}_model", "The model bundle in service.")
        info.add_metric([], {"version": self.model_version()})
        yield info
        since = GaugeMetricFamily(f"{_PREFIX}_seconds_since_last_batch",
                                  "Seconds since the worker last processed a micro-batch (with "
                                  "consumer lag > 0: it is stuck).")
        since.add_metric([], time.time() - self.metrics.last_batch)
        yield since
        if self.metrics.counts is not None:
            stats = self.metrics.counts()
            for name, help_ in _COUNTED.items():
                family = CounterMetricFamily(f"{_PREFIX}_{name}", help_)
                family.add_metric([], getattr(stats, name))
                yield family
        cache = self.metrics.encoder_cache() if self.metrics.encoder_cache is not None else None
        if cache is not None:
            yield from _encoder_cache_families(cache)
        if self.lag is not None:
            lag = GaugeMetricFamily(f"{_PREFIX}_consumer_lag",
                                    "Records of the events topic not yet fetched, per assigned "
                                    "partition (high watermark - position).", labels=["partition"])
            for p, n in sorted(self.lag().items()):
                lag.add_metric([str(p)], n)
            yield lag
        if self.state is not None:
            entries = GaugeMetricFamily(f"{_PREFIX}_state_entries",
                                        "Session states in the partition's table (RocksDB's "
                                        "estimate).", labels=["partition"])
            size = GaugeMetricFamily(f"{_PREFIX}_state_bytes",
                                     "Bytes of the partition's table on disk (SST files).",
                                     labels=["partition"])
            for p, (n, nbytes) in sorted(self.state().items()):
                entries.add_metric([str(p)], n)
                size.add_metric([str(p)], nbytes)
            yield entries
            yield size


def _encoder_cache_families(cache: dict[str, Any]) -> Iterator[Any]:
    """The incremental encoder's cache (runtime/incremental.py ``stats()``)."""
    for name, key, help_ in (
        ("encoder_cache_bytes", "bytes", "Bytes of the incremental encoder's per-user caches."),
        ("encoder_cache_limit_bytes", "limit_bytes", "Their bound (encoder_cache_mb)."),
        ("encoder_cache_users", "users", "Users with a cached session."),
    ):
        gauge = GaugeMetricFamily(f"{_PREFIX}_{name}", help_)
        gauge.add_metric([], cache[key])
        yield gauge
    encodes = CounterMetricFamily(f"{_PREFIX}_encoder_sessions",
                                  "Sessions encoded by the incremental encoder, by path: step (one "
                                  "position), repeat (the cached vector), full (a cache miss).",
                                  labels=["path"])
    for path, key in (("step", "steps"), ("repeat", "repeats"), ("full", "misses")):
        encodes.add_metric([path], cache[key])
    yield encodes
    evicted = CounterMetricFamily(f"{_PREFIX}_encoder_cache_evictions",
                                  "Users evicted from the cache.")
    evicted.add_metric([], cache["evictions"])
    yield evicted
