"""The worker's batched output on the embedded broker: the records, partitions, order and
offsets that one ``send`` per record would give, and a batch that fills starts another."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_rec.kafka.admin import ensure_topics
from stream_rec.kafka.batches import OutputBatches
from stream_rec.kafka.partitioning import CachedPartitioner, partition_for

pytestmark = pytest.mark.integration


async def _read(broker: str, topic: str, n: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    got: list = []
    try:
        while len(got) < n:
            for records in (await consumer.getmany(timeout_ms=2000)).values():
                got += records
    finally:
        await consumer.stop()
    return got


def test_batched_records_land_as_per_record_sends_would(broker, unique_topics):
    keyed, placed = unique_topics.recommendations, unique_topics.events

    async def main() -> tuple[list, list, list]:
        await ensure_topics(broker, {keyed: 3, placed: 2})
        partitioner = CachedPartitioner()
        # A small batch size, so the 200 records of one partition fill several batches.
        producer = AIOKafkaProducer(bootstrap_servers=broker, partitioner=partitioner,
                                    max_batch_size=2048, linger_ms=2)
        await producer.start()
        try:
            out = OutputBatches(producer, partitioner)
            n_keyed = len(await producer.partitions_for(keyed))
            for i in range(300):
                out.add_keyed(keyed, f"user-{i % 37}".encode(), f"answer-{i}".encode(), n_keyed)
                out.add(placed, f"user-{i % 37}".encode(), f"state-{i}".encode() * 3, i % 2)
            out.add(placed, b"gone", None, 1)  # a tombstone
            sent = await out.send()
            metas = await asyncio.gather(*(b.future for b in sent))
            last = {(b.topic, b.partition): m.offset + b.records - 1 for b, m in zip(sent, metas)}
        finally:
            await producer.stop()
        return sent, [last], [await _read(broker, keyed, 300), await _read(broker, placed, 301)]

    sent, (last,), (answers, states) = asyncio.run(main())
    assert sum(b.records for b in sent) == 601
    assert len([b for b in sent if b.topic == placed and b.partition == 0]) > 1  # it filled
    for r in answers:  # Kafka's default partitioner, as send() would have chosen
        assert r.partition == partition_for(r.key, 3)
    by_user: dict[bytes, list[int]] = {}
    for r in sorted(answers, key=lambda r: (r.partition, r.offset)):
        by_user.setdefault(r.key, []).append(int(r.value.split(b"-")[1]))
    assert all(seq == sorted(seq) for seq in by_user.values())  # each user's answers in order
    assert sorted(i for seq in by_user.values() for i in seq) == list(range(300))
    for p in (0, 1):
        mine = sorted((r for r in states if r.partition == p), key=lambda r: r.offset)
        values = [r.value for r in mine]
        want = [f"state-{i}".encode() * 3 for i in range(p, 300, 2)] + ([None] if p else [])
        assert values == want
        assert last[(placed, p)] == mine[-1].offset  # the changelog offset the worker records
    assert all(r.timestamp > 0 for r in answers + states)
