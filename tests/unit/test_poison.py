"""A poison record costs only itself (issue 11): bounded fields, bounded dead letters, a step
that raises for one event answers the rest, and a dead letter that cannot be written is counted,
on both engines (the faust engine's batch handler is driven without a broker)."""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from dataclasses import dataclass
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import TopicPartition

from stream_rec.core.events import (
    DLQ_ORIGINAL_BYTES,
    MAX_ID_LEN,
    MAX_QUERY_LEN,
    MAX_TS,
    Event,
    InvalidEvent,
    dead_letter,
    decode_recommendation,
    parse_event,
)
from stream_rec.core.intake import RecordLimits, parse_record
from stream_rec.core.isolation import step_isolated
from stream_rec.kafka.dead_letters import DeadLetterError
from stream_rec.serving.stats import WorkerStats
from stream_rec.settings import Settings
from tests.unit.test_core import make
from tests.unit.test_direct_batch import Record, RecordingProducer, click, worker

NOW = 1_760_000_000_000


def event(**over):
    base = {"event_id": "e", "user_id": "u", "type": "click", "item_id": "i1", "ts": NOW}
    return orjson.dumps({**base, **over})


@pytest.mark.parametrize("ts", [2**63, 2**64 - 1])
def test_a_ts_beyond_int64_is_dead_lettered(ts):
    bad = parse_event(event(ts=ts), b"u")
    assert isinstance(bad, InvalidEvent) and bad.code == "ts_out_of_range"
    assert isinstance(parse_event(event(ts=MAX_TS), b"u"), Event)  # no Kafka timestamp: int64


def test_ts_is_bounded_around_the_records_kafka_timestamp():
    limits = RecordLimits(max_future_ms=60_000, max_past_ms=3_600_000)
    ok = parse_record(b"u", event(ts=NOW + 60_000), NOW, limits)
    assert isinstance(ok, Event)
    for ts in (NOW + 60_001, NOW - 3_600_001, 10**15):
        bad = parse_record(b"u", event(ts=ts), NOW, limits)
        assert isinstance(bad, InvalidEvent) and bad.code == "ts_out_of_range", ts
    # the default leaves the past open (replays of old logs) and allows a day ahead
    assert isinstance(parse_record(b"u", event(ts=1), NOW), Event)
    assert isinstance(parse_record(b"u", event(ts=10**15), NOW), InvalidEvent)
    assert isinstance(parse_record(b"u", event(ts=10**15), -1), Event)  # no timestamp (-1)


def test_lengths_are_bounded_with_a_code():
    cases = {
        "too_long": [event(user_id="x" * (MAX_ID_LEN + 1)), event(item_id="x" * (MAX_ID_LEN + 1)),
                     event(type="search", item_id=None, query="q" * (MAX_QUERY_LEN + 1))],
        "unknown_type": [event(type="t" * 2_000_000)],
        "not_json": [b"\x01" * 100], "not_object": [b"[1]"], "missing_field": [b"{}"],
    }
    for code, raws in cases.items():
        for raw in raws:
            bad = parse_event(raw)
            assert isinstance(bad, InvalidEvent) and bad.code == code, (code, bad)
            assert len(bad.reason) <= 600  # the reason may quote the input, never all of it
    big = parse_record(b"u", b" " * 10 + event(), None, RecordLimits(max_record_bytes=10))
    assert isinstance(big, InvalidEvent) and big.code == "record_too_large"
    assert parse_record(None, event()).code == "no_key"
    assert parse_record(b"v", event()).code == "key_mismatch"


@pytest.mark.parametrize("raw, encoding", [(b"\x01" * (2 << 20), "utf-8"),
                                           (b"\xff" * (7 << 20), "base64")])
def test_a_dead_letter_is_capped_and_keeps_length_and_hash(raw, encoding):
    value = dead_letter(InvalidEvent("not valid JSON", raw, "not_json"), "events", 0, 5, NOW)
    assert len(value) < 6 * DLQ_ORIGINAL_BYTES + 2048  # 12 MB / 9.3 MB before the cap
    d = orjson.loads(value)
    assert d["original_bytes"] == len(raw) and d["original_truncated"] is True
    assert d["original_sha256"] == hashlib.sha256(raw).hexdigest()
    assert d["original_encoding"] == encoding and d["reason_code"] == "not_json"


def test_a_truncated_utf8_original_stays_text():
    raw = "é".encode() * 100  # 2 bytes a character: a cut at 51 bytes splits one
    d = orjson.loads(dead_letter(InvalidEvent("x", raw), "t", 0, 0, 0, max_original_bytes=51))
    assert d["original_encoding"] == "utf-8" and d["original"] == "é" * 25
    whole = orjson.loads(dead_letter(InvalidEvent("x", raw), "t", 0, 0, 0))
    assert whole["original"] == "é" * 100 and whole["original_truncated"] is False


def test_an_event_whose_step_raises_costs_only_itself():
    good = [Event(f"g{i}", f"u{i % 3}", "click", 1000 + i, item_id=f"i{i}") for i in range(8)]
    poison = Event("p", "u1", "click", 2**63, item_id="i9")  # past the intake, as before it
    events = good[:4] + [poison] + good[4:]
    out = step_isolated(make(), {}, events, list(range(len(events))))
    assert [(i, type(e).__name__) for i, e in out.failed] == [(4, "OverflowError")]
    answered = {r.source_event_id for batch in out.answers for r in batch.to_list()}
    # u0 and u2 as one step each (their last event); u1, the poison's user, event by event
    assert answered == {"g6", "g5"} | {"g1", "g4", "g7"}
    assert set(out.states) == {"u0", "u1", "u2"} and len(out.states["u1"]) == 3
    # a batch that does not raise takes the one-step path: the same answers as step
    clean = step_isolated(make(), {}, good, now_ms=NOW)
    plain = make().step({}, good, now_ms=NOW).answers
    assert [r.to_list() for r in clean.answers] == [plain.to_list()]


class Flaky:
    """The core with a bug that raises on one user's events (what no intake rule foresaw)."""

    def __init__(self, inner):
        self.inner = inner

    def step(self, states, events, offsets=None, now_ms=None):
        if any(e.user_id == "boom" for e in events):
            raise RuntimeError("boom")
        return self.inner.step(states, events, offsets, now_ms)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def poison_batch():
    return [Record("events", 0, 0, b"u1", click("a", "u1", "i1", 1)),
            Record("events", 0, 1, b"x", click("huge", "x", "i1", 2**63)),
            Record("events", 0, 2, b"boom", click("b", "boom", "i2", 2)),
            *[Record("events", 0, 3 + i, f"v{i}".encode(), click(f"v{i}", f"v{i}", "i3", 3))
              for i in range(7)]]


def test_direct_engine_dead_letters_the_poison_and_answers_the_rest(tmp_path):
    w = worker(tmp_path)
    w.holder.recommender = Flaky(w.holder.recommender)

    async def go():
        return await (await w._process({TopicPartition("events", 0): poison_batch()}))

    assert asyncio.run(go()) == {TopicPartition("events", 0): 10}
    dlq = [orjson.loads(v) for _, _, v, _ in w.producer.to("dlq")]
    assert [(d["source"]["offset"], d["reason_code"]) for d in dlq] == [
        (1, "ts_out_of_range"), (2, "processing_error")]
    answered = {decode_recommendation(v).source_event_id for _, _, v, _ in w.producer.to("recs")}
    assert answered == {"a"} | {f"v{i}" for i in range(7)}
    assert (w.stats.dead_letters, w.stats.processing_errors) == (2, 1)
    w.db.close_all()


class RefusingProducer(RecordingProducer):
    """Refuses every dead letter, at send or at delivery."""

    def __init__(self, at_send: bool) -> None:
        super().__init__()
        self.at_send = at_send

    async def send(self, topic, key=None, value=None, partition=None):
        if topic != "dlq":
            return await super().send(topic, key, value, partition)
        if self.at_send:
            raise ValueError("MessageSizeTooLargeError")
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(ValueError("UnknownTopicOrPartitionError"))
        return failed


@pytest.mark.parametrize("at_send", [True, False])
def test_a_dead_letter_that_cannot_be_written_is_counted_and_processing_goes_on(
        tmp_path, at_send, caplog):
    w = worker(tmp_path)
    w.producer = RefusingProducer(at_send)
    batch = {TopicPartition("events", 0): poison_batch()[:2] + [
        Record("events", 0, 2, None, b"no key either")]}

    async def go():
        return await (await w._process(batch))

    assert asyncio.run(go()) == {TopicPartition("events", 0): 3}
    assert w.stats.dlq_failures == 2 and len(w.producer.to("recs")) == 1
    assert sum("cannot write a dead letter" in r.message for r in caplog.records) == 1  # limited
    w.db.close_all()


def test_dlq_failure_fail_stops_the_worker(tmp_path):
    w = worker(tmp_path)
    w.settings = w.dead_letters.settings = w.settings.with_(dlq_failure="fail")
    w.producer = RefusingProducer(at_send=True)

    async def go():
        return await (await w._process({TopicPartition("events", 0): poison_batch()[:2]}))

    with pytest.raises(DeadLetterError, match="--dlq-failure is fail"):
        asyncio.run(go())
    w.db.close_all()


# ---- the faust engine's batch handler, without a broker --------------------------------------
class FaustEvent:  # the fields of a faust EventT the handler reads (weak-referenceable)
    def __init__(self, record: Record) -> None:
        self.message = SimpleNamespace(topic=record.topic, partition=record.partition,
                                       offset=record.offset, key=record.key, value=record.value,
                                       timestamp=NOW / 1000)


@dataclass
class FakeTopic:
    sent: list

    async def send(self, key=None, value=None):
        self.sent.append((key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_faust_engine_dead_letters_the_poison_and_answers_the_rest():
    from topologies.worker import _batch_handler

    settings = Settings.from_env({}, model_poll_s=0)
    stats, table = WorkerStats(), {}
    sessions = type("Table", (), {"get": lambda self, k: table.get(k),
                                  "__setitem__": lambda self, k, v: table.__setitem__(k, v)})()
    recs, dlq = FakeTopic([]), FakeTopic([])
    holder = SimpleNamespace(recommender=Flaky(make()))
    handle = _batch_handler(settings, holder, stats, sessions, recs, dlq)
    batch = [FaustEvent(r) for r in poison_batch()]
    refs = [weakref.ref(e) for e in batch]  # the handler makes each its current event
    asyncio.run(handle(batch))
    assert all(r() is not None for r in refs)
    assert [orjson.loads(v)["reason_code"] for _, v in dlq.sent] == [
        "ts_out_of_range", "processing_error"]
    answered = {decode_recommendation(v).source_event_id for _, v in recs.sent}
    assert answered == {"a"} | {f"v{i}" for i in range(7)}  # 7 of 8 were lost before
    assert set(table) == {b"u1"} | {f"v{i}".encode() for i in range(7)}
    assert (stats.dead_letters, stats.processing_errors) == (2, 1)
