"""Load test of the push gateway on loopback (not a unit test; bounded in count and time).

An embedded broker (or --bootstrap-servers), a `stream-rec gateway` process, N concurrent SSE
subscribers (default 1,000, one user each, plain asyncio HTTP/1.1 connections from this process)
and a publisher that sends --rounds updates per user to the recommendations topic at --rate
records/s. Every record carries its record timestamp as ``emitted_ts``; each subscriber notes
receipt time - record timestamp. The last line is one JSON object: connected subscribers, records
published and received, delivery latency p50/p99/max (ms).

    .venv/bin/python scripts/gateway_load.py --subscribers 1000 --rounds 5 --rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import orjson

from stream_rec.gateway.tokens import mint_token
from stream_rec.kafka.admin import ensure_topics
from stream_rec.kafka.clients import producer_config
from stream_rec.kafka.embedded import EmbeddedBroker
from stream_rec.kafka.probe import free_port
from stream_rec.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=1000, help="concurrent SSE subscribers")
    p.add_argument("--rounds", type=int, default=5, help="updates published per subscriber")
    p.add_argument("--rate", type=float, default=2000.0, help="records/s published")
    p.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this long (s)")
    p.add_argument("--bootstrap-servers", default="", help="a Kafka (default: embedded broker)")
    return p.parse_args()


class Subscriber:
    """One SSE connection; latencies (ms) of the records after the first ``skip``."""

    def __init__(self, user: str, token: str) -> None:
        self.user, self.token = user, token
        self.latencies: list[float] = []
        self.connected = asyncio.Event()

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET /users/{self.user}/stream?token={self.token} HTTP/1.1\r\n"
                         f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"{self.user}: {status!r}")
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # headers
            self.connected.set()
            while line := await reader.readline():  # chunked: size lines, data lines, blanks
                if line.startswith(b"data: "):
                    emitted = orjson.loads(line[6:])["emitted_ts"]
                    self.latencies.append(time.time() * 1000 - emitted)
        finally:
            writer.close()


async def publish(settings: Settings, users: list[str], rounds: int, rate: float) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_config(settings, linger_ms=1))
    await producer.start()
    sent, t0, pending = 0, time.perf_counter(), []
    try:
        for r in range(rounds):
            for user in users:
                now = int(time.time() * 1000)
                value = orjson.dumps({
                    "user_id": user, "items": [{"item_id": "i00001", "score": 1.0}],
                    "model_version": "load", "source_event_id": f"{user}-{r}",
                    "event_ts": now, "emitted_ts": now})
                pending.append(await producer.send(settings.recs_topic, value=value,
                                                   key=user.encode(), timestamp_ms=now))
                sent += 1
                ahead = sent / rate - (time.perf_counter() - t0)
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def _health(port: int) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    body = (await reader.read()).split(b"\r\n\r\n", 1)[1]
    writer.close()
    return orjson.loads(body)


async def run(args: argparse.Namespace, settings: Settings, port: int, secret: bytes) -> dict:
    deadline = time.monotonic() + args.timeout
    while True:  # the gateway has joined its group and reads the topic
        try:
            if (await _health(port))["assigned_partitions"] > 0:
                break
        except (OSError, IndexError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the gateway did not start")
        await asyncio.sleep(0.2)
    users = [f"load-{i:05d}" for i in range(args.subscribers)]
    subs = [Subscriber(u, mint_token(secret, u, 3600)) for u in users]
    tasks = [asyncio.create_task(s.run(port)) for s in subs]
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in subs)), args.timeout)
    t0 = time.perf_counter()
    sent = await asyncio.wait_for(publish(settings, users, args.rounds, args.rate), args.timeout)
    publish_s = time.perf_counter() - t0
    while sum(len(s.latencies) for s in subs) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = np.array([x for s in subs for x in s.latencies])
    p50, p99 = np.percentile(lat, [50, 99]) if len(lat) else (float("nan"),) * 2
    return {"subscribers": args.subscribers, "connected": sum(s.connected.is_set() for s in subs),
            "published": sent, "received": int(len(lat)), "rate": args.rate,
            "publish_s": round(publish_s, 2),
            "latency_ms": {"p50": round(float(p50), 1), "p99": round(float(p99), 1),
                           "max": round(float(lat.max()), 1) if len(lat) else None}}


def main() -> None:
    args = _args()
    with ExitStack() as stack:
        servers = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        tag = uuid.uuid4().hex[:8]
        settings = Settings.from_env({}, bootstrap_servers=servers, recs_topic=f"load-recs-{tag}",
                                     events_topic=f"load-events-{tag}", app_id=f"load-{tag}")
        asyncio.run(ensure_topics(servers, {settings.recs_topic: args.partitions,
                                            settings.events_topic: 1}))
        secret, port = secrets.token_hex(16), free_port()
        env = {**os.environ, **settings.to_env(), "STREAM_REC_GATEWAY_SECRET": secret,
               "STREAM_REC_GATEWAY_PORT": str(port)}
        gateway = subprocess.Popen([sys.executable, "-m", "stream_rec.cli", "gateway",
                                    "--shop-items", "0"], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL)
        stack.callback(gateway.wait, 15)
        stack.callback(gateway.terminate)
        result = asyncio.run(run(args, settings, port, secret.encode()))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
