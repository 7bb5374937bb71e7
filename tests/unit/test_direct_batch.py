"""The direct engine's batch processing without a broker: intake, states, the core step, the
partition writes and what is produced, with a recording producer and real RocksDB tables."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import TopicPartition

from stream_rec.core.events import decode_recommendation
from stream_rec.core.intake import NO_KEY
from stream_rec.core.session import SessionState
from stream_rec.kafka.partitioning import partition_for
from stream_rec.settings import Settings
from stream_rec.testing import run_records
from tests.unit.test_core import make
from topologies.direct import DirectWorker


@dataclass(frozen=True)
class Record:  # the fields of aiokafka's ConsumerRecord the engine reads
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = -1  # no Kafka timestamp: the ts window is not checked


class RecordingBatch:
    """aiokafka's BatchBuilder as the engine uses it: append until closed."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.closed = False

    def append(self, *, timestamp, key, value):
        assert not self.closed
        self.records.append((key, value))
        return SimpleNamespace(offset=len(self.records) - 1)

    def close(self):
        self.closed = True


class RecordingProducer:
    """Records every send (a batch as its records, in order); each delivery is acknowledged at
    once, with a per-topic-partition offset. Every topic has two partitions."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []
        self._offsets: dict[tuple[str, int], int] = {}

    def _acked(self, topic, p, n=1):
        offset = self._offsets.get((topic, p), -1) + 1  # the first record's
        self._offsets[(topic, p)] = offset + n - 1
        done = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(topic=topic, partition=p, offset=offset))
        return done

    async def send(self, topic, key=None, value=None, partition=None):
        self.sent.append((topic, key, value, partition))
        return self._acked(topic, partition if partition is not None else 0)

    async def partitions_for(self, topic):
        return {0, 1}

    def create_batch(self):
        return RecordingBatch()

    async def send_batch(self, batch, topic, *, partition):
        assert batch.closed
        self.sent += [(topic, key, value, partition) for key, value in batch.records]
        return self._acked(topic, partition, len(batch.records))

    def to(self, topic):
        return [s for s in self.sent if s[0] == topic]


def click(eid, user, item, ts):
    return orjson.dumps(
        {"event_id": eid, "user_id": user, "type": "click", "item_id": item, "ts": ts})


def worker(tmp_path, **overrides) -> DirectWorker:
    settings = Settings.from_env({}, data_dir=str(tmp_path), app_id="t", recs_topic="recs",
                                 dlq_topic="dlq",
                                 model_poll_s=0, **overrides)
    w = DirectWorker(settings, holder=SimpleNamespace(recommender=make(), pinned=True))
    w.producer = RecordingProducer()
    return w


@pytest.mark.parametrize("compute_thread", [False, True])
def test_a_batch_is_answered_dead_lettered_written_and_committed(tmp_path, compute_thread):
    w = worker(tmp_path, compute_thread=compute_thread)
    threads = []
    step = w.holder.recommender.step

    def step_noting_its_thread(*args, **kwargs):
        threads.append(threading.current_thread())
        return step(*args, **kwargs)

    w.holder.recommender.step = step_noting_its_thread
    tp0, tp1 = TopicPartition("events", 0), TopicPartition("events", 1)
    batch = {
        tp0: [Record("events", 0, 10, b"u1", click("a", "u1", "i1", 1)),
              Record("events", 0, 11, None, click("b", "u1", "i2", 2)),  # no key
              Record("events", 0, 12, b"u1", b"{oops")],
        tp1: [Record("events", 1, 5, b"u2", click("c", "u2", "i3", 3)),
              Record("events", 1, 6, b"u2", click("d", "u2", "i4", 4))],
    }

    async def go():
        delivered = await w._process(batch)
        return await delivered

    commit = asyncio.run(go())
    assert commit == {tp0: 13, tp1: 7}
    dlq = [orjson.loads(v) for _, _, v, _ in w.producer.to("dlq")]
    assert [d["source"]["offset"] for d in dlq] == [11, 12]
    assert dlq[0]["reason"] == NO_KEY
    answers = [decode_recommendation(v) for _, _, v, _ in w.producer.to("recs")]
    recs = {r.user_id: r for r in answers}
    assert recs["u1"].source_event_id == "a" and recs["u2"].source_event_id == "d"  # coalesced
    # Kafka's default partitioner for the answers, as one send per record would have them.
    assert all(p == partition_for(k, 2) for _, k, _, p in w.producer.to("recs"))
    changelog = {k: p for _, k, _, p in w.producer.to("t-sessions-changelog")}
    assert changelog == {b"u1": 0, b"u2": 1}  # each user's state in the user's partition
    assert SessionState.from_bytes(w.db.get_many(1, [b"u2"])[0]).last_offset == 6
    assert w.db.changelog_offset(0) == 0 and w.db.changelog_offset(1) == 0
    assert (w.stats.events, w.stats.dead_letters, w.stats.recommendations) == (5, 2, 2)
    # The compute ran on the event loop's thread unless a thread beside it was asked for.
    assert threads and all((t is threading.main_thread()) is not compute_thread for t in threads)
    w.db.close_all()


def test_the_changelog_offset_is_the_last_record_of_each_partitions_batch(tmp_path):
    w = worker(tmp_path)
    tp = TopicPartition("events", 0)
    users = [f"u{i}" for i in range(5)]

    async def go():
        for round_ in range(2):
            records = [
                Record("events", 0, round_ * 10 + i, u.encode(), click(f"{round_}{u}", u, "i1", 1))
                for i, u in enumerate(users)
            ]
            await (await w._process({tp: records}))

    asyncio.run(go())
    changelog = w.producer.to("t-sessions-changelog")
    assert [k for _, k, _, _ in changelog] == [u.encode() for u in users] * 2  # in order
    assert w.db.changelog_offset(0) == 9  # ten records in partition 0: offsets 0..9
    w.db.close_all()


def test_an_unreadable_state_starts_the_user_afresh(tmp_path):
    w = worker(tmp_path)
    w.db.write(0, [(b"u1", b"not a state")])
    tp = TopicPartition("events", 0)

    async def go():
        record = Record("events", 0, 0, b"u1", click("a", "u1", "i1", 1))
        delivered = await w._process({tp: [record]})
        return await delivered

    asyncio.run(go())
    assert w.stats.state_resets == 1
    assert len(SessionState.from_bytes(w.db.get_many(0, [b"u1"])[0])) == 1
    w.db.close_all()


def test_the_test_door_applies_the_engines_intake():
    records = [(None, click("a", "u1", "i1", 1)), (b"u1", click("b", "u1", "i2", 2))]
    recs, invalid = run_records(make(), records)
    assert [r.source_event_id for r in recs] == ["b"]
    assert [i.reason for i in invalid] == [NO_KEY]
