"""The direct worker's Prometheus endpoint: a batch through the engine, then GET /metrics on its
status server (no broker: a recording producer, real RocksDB tables)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream_rec.kafka.probe import free_port
from tests.unit.test_direct_batch import Record, click, worker


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_are_scraped_from_the_status_server(tmp_path):
    w = worker(tmp_path)
    w.settings = w.settings.with_(worker_port=free_port())
    tp0 = TopicPartition("events", 0)
    search = (b'{"event_id": "s", "user_id": "u2", "type": "search", "query": "red boots", '
              b'"ts": 5}')
    batch = {tp0: [Record("events", 0, 0, b"u1", click("a", "u1", "i1", 1)),
                   Record("events", 0, 1, b"u1", click("b", "u1", "i2", 2)),
                   Record("events", 0, 2, b"u2", search),
                   Record("events", 0, 3, None, click("c", "u3", "i2", 3)),
                   Record("events", 0, 4, b"u4", b"{oops")]}

    async def go() -> str:
        from aiohttp import ClientSession

        await (await w._process(batch))
        web = await w._start_web()
        try:
            async with ClientSession() as http:
                url = f"http://127.0.0.1:{w.settings.worker_port}/metrics"
                async with http.get(url) as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain")
                    return await response.text()
        finally:
            await web.cleanup()

    samples = _samples(asyncio.run(go()))
    w.db.close_all()
    assert samples[("stream_rec_events_total", (("type", "click"),))] == 2
    assert samples[("stream_rec_events_total", (("type", "search"),))] == 1
    assert samples[("stream_rec_dead_letters_total", (("reason", "no_key"),))] == 1
    assert samples[("stream_rec_dead_letters_total", (("reason", "not_json"),))] == 1
    assert samples[("stream_rec_recommendations_total", ())] == 2  # u1 coalesced, u2
    assert samples[("stream_rec_batch_records_count", ())] == 1
    assert samples[("stream_rec_batch_records_sum", ())] == 5
    for stage in ("fold", "encode", "search", "produce"):
        assert samples[("stream_rec_stage_seconds_count", (("stage", stage),))] == 1
    assert samples[("stream_rec_event_to_recommendation_seconds_count", ())] == 2
    version = w.holder.recommender.model_version
    assert samples[("stream_rec_model_info", (("version", version),))] == 1
    assert samples[("stream_rec_seconds_since_last_batch", ())] >= 0
    assert samples[("stream_rec_state_entries", (("partition", "0"),))] >= 0
    assert ("stream_rec_state_bytes", (("partition", "0"),)) in samples
    for counted in ("redeliveries", "offset_regressions", "states_expired", "state_resets"):
        assert samples[(f"stream_rec_{counted}_total", ())] == 0


def test_the_batch_histogram_writes_prometheus_clients_histogram_series():
    import numpy as np
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from stream_rec.serving.metrics import _LATENCY, BatchHistogram

    values = np.array([0, 0.0005, 0.0006, 0.001, 0.003, 0.25, 1, 29.9, 30, 31, 1000])
    reference = CollectorRegistry()
    one_by_one = Histogram("x_seconds", "doc", buckets=_LATENCY, registry=reference)
    for v in values:
        one_by_one.observe(float(v))
    batched = BatchHistogram("x_seconds", "doc", _LATENCY)
    batched.observe_many(values[:4])
    batched.observe_many(values[4:])

    class Collector:
        def collect(self):
            yield batched.family()

        def describe(self):
            return []

    ours = CollectorRegistry()
    ours.register(Collector())
    want = [line for line in generate_latest(reference).decode().splitlines()
            if "_created" not in line]
    assert generate_latest(ours).decode().splitlines() == want
