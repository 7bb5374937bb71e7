"""Integration fixtures: a tiny trained bundle and a worker process per test.

The broker itself is the session-wide embedded Tansu from tests/conftest.py;
every test gets its own topics, consumer group (app id) and state directory.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from stream_rec.core.events import decode_recommendation
from stream_rec.kafka.probe import free_port
from stream_rec.kafka.worker_process import WorkerProcess
from stream_rec.model.build import TrainOptions, train_bundle
from stream_rec.settings import Settings

TINY = dict(users=150, items=300, seed=3)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real (small) model: trained on generated events, exported to ONNX, HNSW built."""
    root = tmp_path_factory.mktemp("bundles")
    settings = Settings.from_env({}, bundles_dir=str(root))
    return train_bundle(settings, TrainOptions(events=6000, epochs=2, threads=1, **TINY))


class Pipeline:
    """Topics, settings and a worker process for one test; helpers to drive and observe it."""

    def __init__(self, bootstrap: str, bundle_path: Path, tmp: Path, **overrides) -> None:
        tag = uuid.uuid4().hex[:8]
        self.settings = Settings.from_env(
            {},
            bootstrap_servers=bootstrap,
            events_topic=f"events-{tag}",
            recs_topic=f"recs-{tag}",
            dlq_topic=f"dlq-{tag}",
            app_id=f"it-{tag}",
            **{
                "partitions": 2,
                "bundle": str(bundle_path),
                "data_dir": str(tmp / "state"),
                "worker_port": free_port(),
                "model_poll_s": 0,
                "changelog_barrier": True,  # the embedded broker is Tansu 0.6
                "log_level": "info",
                **overrides,
            },
        )
        self.tmp = tmp
        self.worker: WorkerProcess | None = None

    async def create_topics(self) -> None:
        from stream_rec.kafka.admin import ensure_topics

        s = self.settings
        await ensure_topics(s.bootstrap_servers, {s.events_topic: s.partitions, s.recs_topic: s.partitions, s.dlq_topic: 1})

    def start_worker(self) -> None:
        self.worker = WorkerProcess(self.settings, self.tmp).start()

    def stop_worker(self) -> None:
        if self.worker:
            self.worker.stop()
            self.worker = None

    async def send(self, records: list[tuple[bytes | None, bytes]]) -> None:
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, linger_ms=2)
        await p.start()
        try:
            futs = [await p.send(self.settings.events_topic, key=k, value=v) for k, v in records]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    async def collect(self, topic: str, until, timeout: float = 180.0) -> list[bytes]:
        """Read `topic` from the beginning until `until(values)` is true or the timeout."""
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(topic, bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not until(values):
                if self.worker is not None and not self.worker.alive():
                    raise AssertionError("worker exited:\n" + self.worker.log_tail())
                batch = await c.getmany(timeout_ms=200)
                for msgs in batch.values():
                    values.extend(m.value for m in msgs)
        finally:
            await c.stop()
        return values

    async def recommendations(self, until, timeout: float = 180.0):
        raw = await self.collect(self.settings.recs_topic, lambda vs: until([decode_recommendation(v) for v in vs]), timeout)
        return [decode_recommendation(v) for v in raw]

    def log_tail(self, lines: int = 80) -> str:
        """The worker's last log lines (INFO: faust's rebalances and recovery) and its /stats,
        so a failure says whether the events were consumed, answered or never fetched."""
        if self.worker is None:
            return ""
        try:
            url = f"http://127.0.0.1:{self.settings.worker_port}/stats"
            with urllib.request.urlopen(url, timeout=5) as answer:
                stats = answer.read().decode(errors="replace")
        except OSError as exc:
            stats = f"unavailable ({exc})"
        return f"{self.worker.log_tail(lines)}\n/stats: {stats}"


@pytest.fixture(params=["faust", "direct"])
def pipeline(request, broker, tiny_bundle, tmp_path):
    """The same scenario against every worker engine."""
    p = Pipeline(broker, tiny_bundle, tmp_path, engine=request.param)
    asyncio.run(p.create_topics())
    yield p
    p.stop_worker()


def event_record(event_id: str, user: str, typ: str = "click", item: str | None = "i00001", ts: int = 1, query: str | None = None):
    obj = {"event_id": event_id, "user_id": user, "type": typ, "ts": ts}
    if item is not None and typ != "search":
        obj["item_id"] = item
    if query is not None:
        obj["query"] = query
    return user.encode(), orjson.dumps(obj)
