"""Produce-to-consume latency on the embedded Tansu broker as one partition fills with
single-record batches (consumer fetch wait 5 ms): p50 and max at 100, 2,000, 8,000 batches.

    .venv/bin/python scripts/tansu_latency_probe.py
"""

import asyncio
import statistics
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_rec.kafka.admin import ensure_topics
from stream_rec.kafka.embedded import EmbeddedBroker


async def main() -> None:
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        await ensure_topics(bs, {"t": 1})
        producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bs, fetch_max_wait_ms=5)
        await producer.start()
        await consumer.start()
        tp = TopicPartition("t", 0)
        consumer.assign([tp])
        total = 0
        for target in (100, 2000, 8000):
            while total < target:
                await producer.send_and_wait("t", b"x" * 150, partition=0)
                total += 1
            await consumer.seek_to_end(tp)
            latencies = []
            for _ in range(20):
                t0 = time.perf_counter()
                await producer.send_and_wait("t", b"y", partition=0)
                total += 1
                while not await consumer.getmany(timeout_ms=1000):
                    pass
                latencies.append((time.perf_counter() - t0) * 1000)
            print(f"{total:,} single-record batches: produce->consume p50 {statistics.median(latencies):.1f} ms, "
                  f"max {max(latencies):.1f} ms", flush=True)
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
