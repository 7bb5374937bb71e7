"""`stream-rec replay` without a broker: the fold, the direct worker's table layout, recommendations
to a file equal to the core's on the same events, resuming, CSV input, pacing and refusals."""

from __future__ import annotations

import asyncio
import gzip
import random
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_rec.core.events import Event, encode_event, parse_event
from stream_rec.core.session import SessionPolicy, SessionState, apply_event, fold_events
from stream_rec.errors import ConfigError
from stream_rec.generate import EventGenerator, GeneratorConfig, write_jsonl
from stream_rec.kafka.partitioning import partition_for
from stream_rec.replay import engine
from stream_rec.replay.control import parse_speed
from stream_rec.replay.engine import ReplayOptions, run_replay
from stream_rec.runtime.partitioned_store import PartitionedSessionDB
from stream_rec.settings import Settings

TINY = dict(users=150, items=300, seed=3)


def _events(n: int, seed: int = 7) -> list[Event]:
    return list(EventGenerator(GeneratorConfig(n_users=60, n_items=300, seed=seed)).events(n))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from stream_rec.model.build import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("bundles")
    train_bundle(Settings.from_env({}, bundles_dir=str(root)),
                 TrainOptions(events=3000, epochs=1, threads=1, **TINY))
    return root


def _settings(bundles: Path, tmp: Path, **kw) -> Settings:
    return Settings.from_env({}, bundles_dir=str(bundles), data_dir=str(tmp / "state"),
                             partitions=3, **kw)


def _replay(settings: Settings, **kw) -> dict:
    return asyncio.run(run_replay(settings, ReplayOptions(progress=False, **kw)))


# ------------------------------------------------------------------------------- the fold
def _random_events(rng: random.Random, n: int) -> list[Event]:
    out, ts = [], 1_000_000
    for i in range(n):
        ts += rng.choice((1_000, 60_000, 40 * 60_000))  # some gaps start a new session
        user = f"u{rng.randrange(5)}"
        kind = rng.choice(("click", "click", "search", "purchase"))
        sid = rng.choice((None, None, "s1", "s2"))
        item = f"i{rng.randrange(8)}" if kind != "search" else None
        query = "red trail boots" if kind == "search" else None
        out.append(Event(f"e{i}", user, kind, ts, item, query, sid))
    return out


@pytest.mark.parametrize("max_len", [1, 3, 50])
def test_fold_events_equals_apply_event_one_at_a_time(max_len):
    rng = random.Random(max_len)
    policy = SessionPolicy(max_len=max_len, max_purchased=3)
    for _ in range(30):
        events = _random_events(rng, 40)
        offsets = [i if rng.random() > 0.1 else max(0, i - 3) for i in range(len(events))]
        start = {"u0": apply_event(SessionState.empty(), events[0], policy, None)}
        expected: dict[str, SessionState] = {}
        for e, off in zip(events, offsets):
            state = expected.get(e.user_id) or start.get(e.user_id) or SessionState.empty()
            expected[e.user_id] = apply_event(state, e, policy, off)
        got = fold_events(start, events, policy, offsets)
        assert {u: s.to_bytes() for u, s in got.items()} == \
            {u: s.to_bytes() for u, s in expected.items()}


def test_partition_for_is_kafkas_default_partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    for i in range(200):
        key = f"u{i:06d}".encode()
        assert partition_for(key, 7) == DefaultPartitioner()(key, list(range(7)), list(range(7)))


# ------------------------------------------------------------------------------- state mode
def test_state_mode_writes_the_direct_workers_tables(bundles, tmp_path):
    events = _events(3000)
    log = tmp_path / "log.jsonl.gz"
    write_jsonl(events, log)
    with gzip.open(log, "ab") as f:  # two bad lines: dead letters, counted, not stored
        f.write(b"{not json\n" + orjson.dumps({"user_id": "u1", "type": "click"}) + b"\n")
    settings = _settings(bundles, tmp_path)
    summary = _replay(settings, file=str(log))
    assert summary["events"] == 3000 and summary["records"] == 3002
    # (a line that is not JSON has no user_id, so no key: as `produce --file` would send it)
    assert summary["dead_letters_by_reason"] == {"no_key": 1, "missing_field": 1}
    assert summary["recommendations"] == 0 and summary["complete"]

    # Each user in its key's partition (where a worker holds it), the file's events folded in
    # order; no events-topic offset in the state (-1), so a live worker skips none of its own.
    from stream_rec.serving.bundle import ModelBundle, bundles_newest_first

    policy = SessionPolicy(max_len=ModelBundle.load(bundles_newest_first(bundles)[0]).max_len)
    expected: dict[str, tuple[int, bytes]] = {}
    states: dict[str, SessionState] = {}
    for e in events:
        p = partition_for(e.user_id.encode(), 3)
        states[e.user_id] = apply_event(states.get(e.user_id) or SessionState.empty(), e, policy)
        expected[e.user_id] = (p, states[e.user_id].to_bytes())
    assert all(s.last_offset == -1 for s in states.values())
    db = PartitionedSessionDB(Path(settings.data_dir) / settings.app_id)
    try:
        for user, (p, value) in expected.items():
            assert db.get_many(p, [user.encode()]) == [value]
        assert sum(len(list(db.store(p).users())) for p in range(3)) == len(expected)
    finally:
        db.close_all()
    # Run again: the checkpoint says it is complete, nothing is applied twice; without the
    # checkpoint the tables know the file, and still nothing is applied twice.
    again = _replay(settings, file=str(log))
    assert again["already_complete"] and again["records"] == 0
    Path(again["checkpoint"]).unlink()
    tables = _tables(settings)
    assert _replay(settings, file=str(log))["events"] == 0 and _tables(settings) == tables
    # The next day's file is another input: applied whole, after the first.
    nxt = tmp_path / "next.jsonl"
    write_jsonl(_events(200, seed=9), nxt)
    assert _replay(settings, file=str(nxt))["events"] == 200


def test_resumed_state_replay_applies_no_event_twice(bundles, tmp_path, monkeypatch):
    events = _events(4000)
    log = tmp_path / "log.jsonl"
    write_jsonl(events, log)
    whole = _settings(bundles, tmp_path / "whole")
    _replay(whole, file=str(log), batch_size=300)

    cut = _settings(bundles, tmp_path / "cut")
    real_save, saves = engine.Checkpoint.save, []

    def crash_after_third(self):  # the batch is in RocksDB, its checkpoint never written
        saves.append(1)
        if len(saves) >= 4:  # (a crash: no later save either)
            raise KeyboardInterrupt
        real_save(self)

    monkeypatch.setattr(engine.Checkpoint, "save", crash_after_third)
    monkeypatch.setattr(engine, "time", _FastClock())  # save after every batch
    with pytest.raises(KeyboardInterrupt):
        _replay(cut, file=str(log), batch_size=300)
    monkeypatch.setattr(engine.Checkpoint, "save", real_save)
    resumed = _replay(cut, file=str(log), batch_size=300)
    assert resumed["resumed_at"] == 900 and resumed["records"] == 3100
    assert _tables(whole) == _tables(cut)


class _FastClock:
    """``time`` for the engine, with a monotonic clock that moves a second per call."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 1.0
        return self.t

    def __getattr__(self, name):
        return getattr(time, name)


def _tables(settings: Settings) -> dict[str, bytes]:
    db = PartitionedSessionDB(Path(settings.data_dir) / settings.app_id)
    try:
        return {u: db.get_many(p, [u.encode()])[0] for p in range(settings.partitions)
                for u in db.store(p).users()}
    finally:
        db.close_all()


# ------------------------------------------------------------------------------- recs mode
def _without_emitted_ts(lines: list[bytes]) -> list[bytes]:
    out = []
    for line in lines:
        obj = orjson.loads(line)
        obj.pop("emitted_ts")
        out.append(orjson.dumps(obj))
    return out


def test_recs_to_file_equal_the_core_on_the_same_events(bundles, tmp_path):
    from stream_rec.core.events import encode_recommendation
    from stream_rec.serving.bundle import ModelBundle, bundles_newest_first
    from stream_rec.serving.compose import build_recommender
    from stream_rec.testing import run_events

    events = _events(1500)
    log = tmp_path / "log.jsonl"
    write_jsonl(events, log)
    settings = _settings(bundles, tmp_path, coalesce=False)
    out = tmp_path / "recs.jsonl"
    summary = _replay(settings, file=str(log), mode="recs", to_file=str(out), batch_size=64)
    assert summary["recommendations"] == 1500
    core = build_recommender(ModelBundle.load(bundles_newest_first(bundles)[0]), settings)
    expected = [encode_recommendation(r) for r in run_events(core, events, batch_size=64)]
    assert _without_emitted_ts(out.read_bytes().splitlines()) == _without_emitted_ts(expected)


@pytest.mark.parametrize("where", ["before_a_batch", "after_its_tables_before_its_checkpoint"])
def test_resumed_recs_replay_writes_each_answer_once(bundles, tmp_path, monkeypatch, where):
    events = _events(1200)
    log = tmp_path / "log.jsonl"
    write_jsonl(events, log)
    # Trending (the cold-start answer) lives in the process, not in the tables.
    whole = _settings(bundles, tmp_path / "whole", coalesce=False, cold_start_trending=False)
    _replay(whole, file=str(log), mode="recs", to_file=str(tmp_path / "whole.jsonl"))
    cut = _settings(bundles, tmp_path / "cut", coalesce=False, cold_start_trending=False)
    real_step, real_save, calls = engine._Replay.step, engine.Checkpoint.save, []

    async def interrupted(self, batch, checkpoint):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        await real_step(self, batch, checkpoint)

    def crash_on_fifth_save(self):  # the batch's answers and tables written, its checkpoint not
        calls.append(1)
        if len(calls) >= 5:  # (a crash: no later save either)
            raise KeyboardInterrupt
        real_save(self)

    if where == "before_a_batch":
        monkeypatch.setattr(engine._Replay, "step", interrupted)
    else:
        monkeypatch.setattr(engine.Checkpoint, "save", crash_on_fifth_save)
    with pytest.raises(KeyboardInterrupt):
        _replay(cut, file=str(log), mode="recs", to_file=str(tmp_path / "cut.jsonl"))
    monkeypatch.setattr(engine._Replay, "step", real_step)
    monkeypatch.setattr(engine.Checkpoint, "save", real_save)
    _replay(cut, file=str(log), mode="recs", to_file=str(tmp_path / "cut.jsonl"))
    whole_lines = (tmp_path / "whole.jsonl").read_bytes().splitlines()
    assert len(whole_lines) == 1200
    assert _without_emitted_ts((tmp_path / "cut.jsonl").read_bytes().splitlines()) == \
        _without_emitted_ts(whole_lines)
    assert _tables(whole) == _tables(cut)


# ------------------------------------------------------------------------------- inputs, speed
def test_csv_with_a_column_mapping_folds_like_the_jsonl(bundles, tmp_path):
    events = _events(500)
    jsonl = tmp_path / "log.jsonl"
    write_jsonl(events, jsonl)
    csv_path = tmp_path / "log.csv"
    rows = ["eid,uid,action,sku,q,time_ms,sid"]
    for e in events:
        rows.append(",".join([e.event_id, e.user_id, e.type, e.item_id or "",
                              (e.query or "").replace(",", " "), str(e.ts), e.session_id or ""]))
    csv_path.write_text("\n".join(rows) + "\n")
    a, b = _settings(bundles, tmp_path / "a"), _settings(bundles, tmp_path / "b")
    _replay(a, file=str(jsonl))
    columns = {"event_id": "eid", "user_id": "uid", "type": "action", "item_id": "sku",
               "query": "q", "ts": "time_ms", "session_id": "sid"}
    summary = _replay(b, file=str(csv_path), columns=columns)
    assert summary["events"] == 500 and summary["dead_letters"] == 0
    assert _tables(a) == _tables(b)


def test_rate_paces_the_replay(bundles, tmp_path):
    log = tmp_path / "log.jsonl"
    write_jsonl(_events(300), log)
    t0 = time.perf_counter()
    _replay(_settings(bundles, tmp_path), file=str(log), rate=1000.0)
    assert time.perf_counter() - t0 >= 0.29


def test_speed_follows_recorded_time(bundles, tmp_path):
    base = 1_700_000_000_000
    events = [Event(f"e{i}", f"u{i % 3}", "click", base + 100 * i, "i1") for i in range(11)]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))  # 1 s of recorded time
    t0 = time.perf_counter()
    _replay(_settings(bundles, tmp_path), file=str(log), speed=4.0)
    assert 0.24 <= time.perf_counter() - t0 < 5


@pytest.mark.parametrize("text, value", [("10x", 10.0), ("2.5", 2.5), ("0.5X", 0.5)])
def test_parse_speed(text, value):
    assert parse_speed(text) == value


@pytest.mark.parametrize("kw, match", [
    (dict(mode="recs", to_topic="recommendations"), "live recommendations topic"),
    (dict(mode="recs", to_topic="events"), "events topic"),
    (dict(mode="recs"), "needs one output"),
    (dict(mode="state", to_file="x.jsonl"), "emits nothing"),
    (dict(rate=10.0, speed=2.0), "exclude each other"),
    (dict(changelog=True), "need a Kafka"),
])
def test_refusals(kw, match, tmp_path):
    opts = ReplayOptions(file="log.jsonl", **kw)
    with pytest.raises(ConfigError, match=match):
        opts.validated(Settings.from_env({}))


def test_the_live_topic_when_asked():
    opts = ReplayOptions(file=__file__, mode="recs", to_topic="recommendations",
                         allow_live_topic=True)
    assert opts.validated(Settings.from_env({}, bootstrap_servers="127.0.0.1:9092")) is opts


def test_a_checkpoint_of_another_input_is_refused(bundles, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(_events(50), a)
    write_jsonl(_events(50, seed=8), b)
    settings = _settings(bundles, tmp_path)
    _replay(settings, file=str(a), checkpoint=str(tmp_path / "cp.json"))
    with pytest.raises(ConfigError, match="belongs to a replay of"):
        _replay(settings, file=str(b), checkpoint=str(tmp_path / "cp.json"))


def test_cli_replay_prints_a_json_summary(bundles, tmp_path, capsys):
    from stream_rec.cli import main

    log = tmp_path / "log.jsonl"
    write_jsonl(_events(200), log)
    rc = main(["replay", "--file", str(log), "--bundles-dir", str(bundles), "--data-dir",
               str(tmp_path / "state"), "--json", "--quiet"])
    assert rc == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["events"] == 200 and summary["mode"] == "state"
    assert np.isfinite(summary["events_per_s"])
    _ = parse_event  # (the intake's parser, used by the worker and the replay alike)


@pytest.mark.parametrize("line", [
    b'{"event_id":"e1","user_id":"u1","type":"click"}', b'{"user_id": "u2"}',
    b'{"user_id":"a\\"b"}', b'{"user_id":12}', b'{"user_id":"x","user_id":"y"}',
    b'{"user_id":""}', b'{"q":"\\"user_id\\":\\"evil\\"","user_id":"u3"}', b"{oops", b"[]",
    '{"user_id":"ü"}'.encode(),
])
def test_a_lines_key_is_the_one_produce_gives_it(line, tmp_path):
    from stream_rec.kafka.produce import file_records
    from stream_rec.replay.files import _key_of

    path = tmp_path / "one.jsonl"
    path.write_bytes(line + b"\n")
    assert _key_of(line) == next(file_records(str(path)))[0]


def test_a_forget_in_the_log_deletes_the_users_state(bundles, tmp_path):
    events = _events(400)
    users = sorted({e.user_id for e in events})
    gone, kept = users[0], users[1]
    log = tmp_path / "log.jsonl"
    write_jsonl(events, log)
    with open(log, "ab") as f:
        forget = {"event_id": "f1", "user_id": gone, "type": "forget", "ts": 1}
        f.write(orjson.dumps(forget) + b"\n")
    settings = _settings(bundles, tmp_path)
    summary = _replay(settings, file=str(log))
    assert summary["dead_letters_by_reason"] == {}
    tables = _tables(settings)
    assert gone not in tables and kept in tables
