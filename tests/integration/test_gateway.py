"""The push gateway on the embedded broker: a subscriber gets the user's latest recommendation at
once, then each update (SSE and WebSocket); a token for user A cannot read user B's stream."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from stream_rec.gateway.server import GatewayThread
from stream_rec.gateway.tokens import mint_token
from stream_rec.kafka.admin import ensure_topics
from stream_rec.kafka.clients import producer_config
from stream_rec.kafka.probe import free_port
from stream_rec.settings import Settings

pytestmark = pytest.mark.integration
SECRET = b"integration-secret"


def gateway_settings(broker: str, topics) -> Settings:
    return Settings.from_env({}, bootstrap_servers=broker, recs_topic=topics.recommendations,
                             events_topic=topics.events, app_id=topics.group)


def recommendation(user: str, event_id: str, items: list[str]) -> bytes:
    now = int(time.time() * 1000)
    return orjson.dumps({"user_id": user, "items": [{"item_id": i, "score": 0.5} for i in items],
                         "model_version": "test", "source_event_id": event_id,
                         "event_ts": now, "emitted_ts": now})


async def publish(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for user, value in records:
            await producer.send_and_wait(settings.recs_topic, value=value, key=user.encode())
    finally:
        await producer.stop()


class SseReader:
    """The records (``data:`` lines) of an open SSE response, as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def records(self, n: int, timeout: float) -> list[dict]:
        out: list[dict] = []

        async def read() -> None:
            async for line in self.lines:
                if line.startswith("data: "):
                    out.append(orjson.loads(line[6:]))
                    if len(out) == n:
                        return

        await asyncio.wait_for(read(), timeout)
        return out


def test_subscribers_get_the_latest_then_every_update_and_only_their_own(broker, unique_topics):
    settings = gateway_settings(broker, unique_topics)
    asyncio.run(ensure_topics(broker, {settings.recs_topic: 2, settings.events_topic: 2}))
    asyncio.run(publish(settings, [("alice", recommendation("alice", "a1", ["i1"])),
                                   ("alice", recommendation("alice", "a2", ["i2"])),
                                   ("bob", recommendation("bob", "b1", ["i3"]))]))
    with GatewayThread(settings, free_port(), secret=SECRET) as gw:
        alice = mint_token(SECRET, "alice", 60)

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
                denied = await client.get("/users/bob/stream", params={"token": alice})
                assert denied.status_code == 403
                assert (await client.get("/users/bob/latest", params={"token": alice})
                        ).status_code == 403
                async with client.stream("GET", "/users/alice/stream",
                                         params={"token": alice}) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    sse = SseReader(response)
                    [first] = await sse.records(1, timeout=60)
                    assert first["source_event_id"] == "a2"  # the latest, at once
                    await publish(settings, [("bob", recommendation("bob", "b2", ["i4"])),
                                             ("alice", recommendation("alice", "a3", ["i5"]))])
                    [update] = await sse.records(1, timeout=30)
                    assert update["source_event_id"] == "a3"  # bob's b2 never reaches alice
                await ws_latest(gw.url, alice)
                metrics = (await client.get("/metrics")).text
                assert "stream_rec_gateway_forbidden_total 3" in metrics  # SSE, latest, WS

        asyncio.run(scenario())


async def ws_latest(url: str, token: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    ws_url = url.replace("http://", "ws://")
    async with connect(f"{ws_url}/users/alice/ws?token={token}") as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["source_event_id"] == "a3"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{ws_url}/users/bob/ws?token={token}"):
            pass
    assert refused.value.response.status_code == 403


def test_posted_events_reach_the_events_topic_and_bad_ones_do_not(broker, unique_topics):
    settings = gateway_settings(broker, unique_topics)
    asyncio.run(ensure_topics(broker, {settings.recs_topic: 1, settings.events_topic: 1}))
    with GatewayThread(settings, free_port(), secret=SECRET) as gw:
        auth = {"Authorization": "Bearer " + mint_token(SECRET, "carol", 60)}
        event = {"event_id": "c1", "user_id": "carol", "type": "search", "query": "boots",
                 "ts": int(time.time() * 1000)}
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            assert client.post("/events", json=event, headers=auth).status_code == 202
            bad = client.post("/events", json={**event, "type": "teleport"}, headers=auth)
            assert bad.status_code == 400 and "type" in bad.json()["reason"]

    async def read() -> list[tuple[bytes, bytes]]:
        from aiokafka import AIOKafkaConsumer

        from stream_rec.kafka.clients import consumer_config

        consumer = AIOKafkaConsumer(settings.events_topic, **consumer_config(
            settings, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False))
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=5000)
            return [(m.key, m.value) for msgs in batch.values() for m in msgs]
        finally:
            await consumer.stop()

    [(key, value)] = asyncio.run(read())
    assert key == b"carol" and orjson.loads(value)["event_id"] == "c1"
