"""The direct worker's output path alone: CPU per event for its two records (an answer keyed by
user, the user's state to a given changelog partition), one ``send`` per record against one
record batch per topic partition (stream_rec/kafka/batches.py), on the embedded broker.

    .venv/bin/python scripts/produce_cost.py [--batches 300] [--batch 60] [--rounds 3]

Each arm hands ``--batches`` micro-batches of ``--batch`` events to a producer configured like the
worker's (linger 2 ms, acks=all) and waits for every delivery; CPU is this process's (the
client's Python and its sockets; the broker runs in its own process). Arms alternate.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaProducer

from stream_rec.kafka.admin import ensure_topics
from stream_rec.kafka.batches import OutputBatches
from stream_rec.kafka.embedded import EmbeddedBroker
from stream_rec.kafka.partitioning import CachedPartitioner

ANSWER, STATE = b"a" * 900, b"s" * 170  # about a served answer and a 10-event state


async def _per_record(producer: AIOKafkaProducer, users: list[bytes], batch: int) -> list:
    futures = []
    for u in users[:batch]:
        futures.append(await producer.send("recs", key=u, value=ANSWER))
    for j, u in enumerate(users[:batch]):
        futures.append(await producer.send("changelog", key=u, value=STATE, partition=j % 4))
    return futures


async def _batched(
    producer: AIOKafkaProducer, users: list[bytes], batch: int, partitioner: CachedPartitioner
) -> list:
    out = OutputBatches(producer, partitioner)
    n = len(await producer.partitions_for("recs"))
    for u in users[:batch]:
        out.add_keyed("recs", u, ANSWER, n)
    for j, u in enumerate(users[:batch]):
        out.add("changelog", u, STATE, j % 4)
    return [b.future for b in await out.send()]


async def main(bootstrap: str, batches: int, batch: int, rounds: int) -> None:
    await ensure_topics(bootstrap, {"recs": 4, "changelog": 4})
    partitioner = CachedPartitioner()
    config = dict(bootstrap_servers=bootstrap, linger_ms=2, max_batch_size=1 << 20,
                  max_request_size=8 << 20, acks="all")
    plain = AIOKafkaProducer(**config)
    cached = AIOKafkaProducer(**config, partitioner=partitioner)
    await plain.start()
    await cached.start()
    users = [f"user-{i}".encode() for i in range(5000)]
    arms = {
        "send per record (aiokafka's partitioner)": lambda k: _per_record(plain, rot(k), batch),
        "send per record (cached partitioner)": lambda k: _per_record(cached, rot(k), batch),
        "one batch per topic partition": lambda k: _batched(cached, rot(k), batch, partitioner),
    }

    def rot(k: int) -> list[bytes]:
        at = (k * batch) % len(users)
        return users[at:] + users[:at]

    try:
        for r in range(rounds):
            for name, arm in arms.items():
                c0 = time.process_time()
                for k in range(batches):
                    await asyncio.gather(*(await arm(k)))
                us = (time.process_time() - c0) / (batches * batch) * 1e6
                print(f"round {r + 1}: {name:42s} {us:6.1f} us CPU per event", flush=True)
    finally:
        await plain.stop()
        await cached.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    with EmbeddedBroker() as broker:
        asyncio.run(main(broker.bootstrap_servers, a.batches, a.batch, a.rounds))
