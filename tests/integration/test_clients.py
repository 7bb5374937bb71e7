"""Clients that are not Python's aiokafka read the recommendations topic (issue 24, item 5):
librdkafka through confluent-kafka, and Debian's kcat 1.7.1 (librdkafka 2.0.2) with the flags
the README's frontend section gives for the embedded broker."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import orjson
import pytest

from .conftest import Pipeline, event_record

pytestmark = [pytest.mark.integration]

# kcat 1.7.1 cannot parse the embedded broker's ApiVersions v3 answer (it writes its tagged
# fields even at their defaults; Apache Kafka omits them): skip that request and the offset
# lookup (ListOffsets v0 is what these old versions would send) and start at an absolute offset.
KCAT_EMBEDDED = ["-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0"]


@pytest.fixture
def answered(broker, tiny_bundle, tmp_path):
    """A direct worker that answered 40 events of 8 users; (pipeline, the answers' values)."""
    p = Pipeline(broker, tiny_bundle, tmp_path, engine="direct")
    asyncio.run(p.create_topics())
    p.start_worker()
    records = [
        event_record(f"e{i}", f"u{i % 8}", item=f"i{i % 50:05d}", ts=1000 + i) for i in range(40)
    ]

    async def run():
        await p.send(records)
        return await p.collect(p.settings.recs_topic, lambda vs: len(vs) >= 8)

    try:
        values = asyncio.run(run())
        yield p, values
    finally:
        p.stop_worker()


def test_confluent_kafka_reads_the_recommendations(answered):
    ck = pytest.importorskip("confluent_kafka")
    p, values = answered
    consumer = ck.Consumer(
        {
            "bootstrap.servers": p.settings.bootstrap_servers,
            "group.id": "ck-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign(
            [
                ck.TopicPartition(p.settings.recs_topic, i, ck.OFFSET_BEGINNING)
                for i in range(p.settings.partitions)
            ]
        )
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < len(values) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    assert sorted(got[: len(values)]) == sorted(values)
    assert all("items" in orjson.loads(v) for v in got)


def test_kcat_reads_the_recommendations_with_the_documented_flags(answered):
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (Debian: apt-get install kcat; .ci/run installs it)")
    p, values = answered
    out = subprocess.run(
        [
            "kcat",
            *KCAT_EMBEDDED,
            "-b",
            p.settings.bootstrap_servers,
            "-C",
            "-t",
            p.settings.recs_topic,
            "-o",
            "0",
            "-e",
            "-q",
            "-f",
            "%s\n",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    lines = [line for line in out.stdout.splitlines() if line]
    assert sorted(lines)[: len(values)] == sorted(lines)[: len(values)] and len(lines) >= len(
        values
    )
    assert {orjson.loads(line)["source_event_id"] for line in lines} >= {
        orjson.loads(v)["source_event_id"] for v in values
    }
