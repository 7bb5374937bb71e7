"""The embedded broker against aiokafka: start, topics, round trip, clean stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from stream_rec.errors import BrokerError, ConfigError
from stream_rec.kafka.admin import ensure_topics, wait_for_kafka
from stream_rec.kafka.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_session_broker_listens_on_loopback(broker):
    host, port = broker.rsplit(":", 1)
    assert host == "127.0.0.1"
    with socket.create_connection((host, int(port)), timeout=2):
        pass
    asyncio.run(wait_for_kafka(broker, timeout=5))


def test_topics_get_the_requested_partitions_and_creation_is_idempotent(broker, unique_topics):
    wanted = {unique_topics.events: 6, unique_topics.recommendations: 3, unique_topics.dlq: 1}
    assert asyncio.run(ensure_topics(broker, wanted)) == wanted
    # again, and asking for another count: an existing topic keeps its partitions
    again = {**wanted, unique_topics.events: 2}
    assert asyncio.run(ensure_topics(broker, again)) == wanted


def test_ensure_topics_refuses_invalid_names_and_counts(broker):
    with pytest.raises(ConfigError, match="topic name 'bad name!' is not valid"):
        asyncio.run(ensure_topics(broker, {"bad name!": 1}))
    with pytest.raises(ConfigError, match="needs >= 1 partitions; got 0"):
        asyncio.run(ensure_topics(broker, {"fine": 0}))
    assert asyncio.run(ensure_topics(broker, {})) == {}


def test_produce_consume_round_trip_with_a_consumer_group(broker, unique_topics):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic, group = unique_topics.events, unique_topics.group
    sent = {f"u{i:03d}".encode(): f"value-{i}".encode() for i in range(50)}

    async def run() -> tuple[dict[bytes, bytes], int]:
        await ensure_topics(broker, {topic: 4})
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(topic, v, key=k) for k, v in sent.items()])
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        got: dict[bytes, bytes] = {}
        try:
            deadline = time.monotonic() + 30
            while len(got) < len(sent) and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.update((r.key, r.value) for r in records)
            await consumer.commit()
            committed = sum([await consumer.committed(tp) or 0 for tp in consumer.assignment()])
        finally:
            await consumer.stop()
        return got, committed

    got, committed = asyncio.run(run())
    assert got == sent
    assert committed == len(sent), "committed offsets cover every record"


def test_stop_leaves_no_process_behind():
    broker = EmbeddedBroker(startup_timeout=30)
    with broker:
        pid = broker.pid
        assert pid is not None and broker.running
        asyncio.run(wait_for_kafka(broker.bootstrap_servers, timeout=5))
    assert not broker.running
    assert _wait_gone(pid, timeout=1), "stop() returns after the broker is gone"
    broker.stop()  # idempotent


def test_broker_dies_with_a_killed_parent(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from stream_rec.kafka.embedded import EmbeddedBroker
        b = EmbeddedBroker().start()
        print(b.pid, b._log_dir, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, log_dir = parent.stdout.readline().split()
        assert _alive(int(pid))
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally in the parent
        parent.wait()
        parent.stdout.close()
    assert _wait_gone(int(pid)), "the broker outlived its killed parent"
    shutil.rmtree(log_dir)  # the one thing a SIGKILLed parent cannot clean up


def _pids_listening_as(url: str) -> list[int]:
    """Live processes whose command line holds ``url`` (our brokers name it twice)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if url.encode() in f.read() and _alive(int(entry)):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_prints_the_address_and_stops_on_a_signal(sig):
    script = "from stream_rec.kafka.embedded import EmbeddedBroker; EmbeddedBroker().serve_forever()"
    server = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        address = server.stdout.readline().strip()
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1"
        asyncio.run(wait_for_kafka(address, timeout=5))
        assert len(_pids_listening_as(f"tcp://{address}")) == 1
        server.send_signal(sig)
        assert server.wait(timeout=20) == 0, server.stderr.read()
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
        server.stderr.close()
    assert _pids_listening_as(f"tcp://{address}") == []


def test_refuses_non_loopback_hosts():
    for host in ("0.0.0.0", "10.1.2.3", "example.com", "::1"):
        with pytest.raises(ConfigError, match="loopback"):
            EmbeddedBroker(host=host)


def test_a_taken_port_is_reported(broker):
    port = int(broker.rsplit(":", 1)[1])
    taken = EmbeddedBroker(port=port)
    with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
        taken.start()
    assert not taken.running and taken.output_tail() == ""  # nothing left behind


def test_a_broker_that_cannot_start_reports_its_output(tmp_path):
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'tansu: storage engine unavailable' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError, match=r"exited with code 3.*\n.*storage engine unavailable"):
        EmbeddedBroker(binary=str(fake), startup_timeout=5).start()


def test_wait_for_kafka_times_out_with_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(BrokerError, match=rf"cannot reach Kafka at 127.0.0.1:{port} \(no answer within 1s"):
            asyncio.run(wait_for_kafka(f"127.0.0.1:{port}", timeout=1))
