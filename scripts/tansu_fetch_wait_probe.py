"""How the embedded broker (Tansu) answers fetches by the consumer's fetch wait W, on fresh
topics (one partition each): a backlog of 200 records read from the start (getmany rounds and
milliseconds per round when records are ready), then a trickle of one record every 20 ms
(produce acknowledgement to the consumer's receipt, p50 and p90 over 60 records).

    .venv/bin/python scripts/tansu_fetch_wait_probe.py [OUT.json]
"""

import asyncio
import json
import statistics
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_rec.kafka.embedded import EmbeddedBroker

WAITS_MS = (1, 5, 20, 100, 400)


async def probe(bs: str, wait_ms: int) -> dict[str, float | int | None]:
    topic = f"probe-{wait_ms}"
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
    await producer.start()
    await asyncio.gather(*[await producer.send(topic, b"x" * 100, key=b"k") for _ in range(200)])
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bs,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=wait_ms,
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    got, rounds, last = 0, [], None
    while got < 200:
        n = sum(len(v) for v in (await consumer.getmany(timeout_ms=2000)).values())
        now = time.perf_counter()
        if n:
            if last is not None:
                rounds.append((now - last) * 1000)
            last, got = now, got + n
    latency = []
    for _ in range(60):
        await asyncio.sleep(0.02)
        await (await producer.send(topic, b"y" * 100, key=b"k"))
        acked = time.perf_counter()
        while not await consumer.getmany(timeout_ms=2000):
            pass
        latency.append((time.perf_counter() - acked) * 1000)
    await consumer.stop()
    await producer.stop()
    latency.sort()
    return {
        "backlog_rounds": len(rounds) + 1,
        "backlog_ms_per_round": round(statistics.median(rounds), 1) if rounds else None,
        "trickle_p50_ms": round(statistics.median(latency), 1),
        "trickle_p90_ms": round(latency[int(0.9 * len(latency))], 1),
    }


async def main() -> dict[int, dict[str, float | int | None]]:
    with EmbeddedBroker() as broker:
        out = {}
        for wait_ms in WAITS_MS:
            out[wait_ms] = await probe(broker.bootstrap_servers, wait_ms)
            print(f"fetch wait {wait_ms} ms: {out[wait_ms]}", flush=True)
        return out


if __name__ == "__main__":
    result = asyncio.run(main())
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f, indent=1)
