"""Replay against the live pipeline on the embedded broker: a direct worker answers every event
of a stream; `stream-rec replay` of the same events topic gives the same recommendations (byte
for byte apart from emitted_ts, but for ONNX Runtime's batch-shape float noise in a score's
6th decimal) and the same session tables, byte for byte; the worker's /metrics is scraped
meanwhile. Then a file backfill is served by a worker started on its data directory."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_rec.core.events import decode_recommendation
from stream_rec.generate import EventGenerator, GeneratorConfig
from stream_rec.replay.engine import ReplayOptions, run_replay
from stream_rec.runtime.partitioned_store import PartitionedSessionDB
from stream_rec.settings import Settings

from .conftest import TINY, Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_EMITTED = re.compile(rb'"emitted_ts":-?\d+')


def _records(n: int) -> list[tuple[bytes, bytes]]:
    gen = EventGenerator(GeneratorConfig(n_users=TINY["users"], n_items=TINY["items"],
                                         seed=TINY["seed"]))
    return [(k, v) for k, v, _ in gen.records(n, now_ms=int(time.time() * 1000))]


def _tables(settings: Settings) -> dict[str, bytes]:
    db = PartitionedSessionDB(Path(settings.data_dir) / settings.app_id)
    try:
        return {u: db.get_many(p, [u.encode()])[0] for p in range(settings.partitions)
                for u in db.store(p).users()}
    finally:
        db.close_all()


@pytest.fixture
def direct(broker, tiny_bundle, tmp_path):
    # Every event answered, and no trending (it depends on what a process has seen since it
    # started): what is left is the model path, which must not depend on the batching.
    p = Pipeline(broker, tiny_bundle, tmp_path, engine="direct", coalesce=False,
                 cold_start_trending=False)
    asyncio.run(p.create_topics())
    yield p
    p.stop_worker()


def test_replay_of_the_events_topic_equals_the_live_answers(direct, tmp_path):
    records = _records(600)
    direct.start_worker()
    asyncio.run(direct.send(records))
    live = asyncio.run(direct.collect(direct.settings.recs_topic, lambda vs: len(vs) >= 600))
    url = f"http://127.0.0.1:{direct.settings.worker_port}/metrics"
    metrics = urllib.request.urlopen(url, timeout=10).read().decode()
    base = f"http://127.0.0.1:{direct.settings.worker_port}/health"
    health = [orjson.loads(urllib.request.urlopen(f"{base}/{w}", timeout=10).read())
              for w in ("live", "ready")]
    direct.stop_worker()
    assert health == [{"status": "ok", "problems": []}] * 2

    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert sum(v for (name, _), v in samples.items() if name == "stream_rec_events_total") == 600
    assert samples[("stream_rec_recommendations_total", ())] == 600
    assert samples[("stream_rec_event_to_recommendation_seconds_count", ())] == 600
    assert {labels for name, labels in samples if name == "stream_rec_consumer_lag"} == \
        {(("partition", "0"),), (("partition", "1"),)}

    live_raw = {decode_recommendation(v).source_event_id: v for v in live}
    by_event = {e: _EMITTED.sub(b"", v) for e, v in live_raw.items()}
    assert len(by_event) == 600
    again = direct.settings.with_(app_id=direct.settings.app_id + "-r",
                                  data_dir=str(tmp_path / "replay"))
    out = tmp_path / "recs.jsonl"
    summary = asyncio.run(run_replay(again, ReplayOptions(
        mode="recs", from_topic=direct.settings.events_topic, to_file=str(out), progress=False)))
    assert summary["events"] == 600 and summary["recommendations"] == 600
    replayed_raw = {decode_recommendation(v).source_event_id: v
                    for v in out.read_bytes().splitlines()}
    replayed = {e: _EMITTED.sub(b"", v) for e, v in replayed_raw.items()}
    assert replayed.keys() == by_event.keys()
    # Byte for byte, except where ONNX Runtime's float result for a session depends on the
    # shape of the batch it was encoded in (the worker's micro-batches are not the replay's):
    # then a score differs in its 6th decimal, never an item or its rank beyond a near-tie.
    same = [e for e in by_event if replayed[e] == by_event[e]]
    for e in set(by_event) - set(same):
        a, b = decode_recommendation(replayed_raw[e]), decode_recommendation(live_raw[e])
        assert (a.user_id, a.source_event_id, a.event_ts, a.model_version) == \
            (b.user_id, b.source_event_id, b.event_ts, b.model_version)
        for x, y in zip(a.items, b.items, strict=True):
            assert abs(x.score - y.score) <= 2e-6  # (an item may swap with a near-tie)
    assert len(same) >= 0.8 * len(by_event), f"{len(same)} of {len(by_event)} byte-identical"

    # State only, with the changelog: the same tables as the worker's, and the changelog
    # holds them (what a worker on another host restores).
    state = direct.settings.with_(app_id=direct.settings.app_id + "-s",
                                  data_dir=str(tmp_path / "state"))
    asyncio.run(run_replay(state, ReplayOptions(
        from_topic=direct.settings.events_topic, changelog=True, progress=False)))
    assert _tables(state) == _tables(direct.settings)
    changelog = asyncio.run(direct.collect(f"{state.app_id}-sessions-changelog",
                                           lambda vs: len(vs) >= len(_tables(state)), timeout=30))
    assert set(changelog) == set(_tables(state).values())


def test_a_worker_serves_a_file_backfill(direct, tmp_path):
    records = _records(400)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(v + b"\n" for _, v in records[:300]))
    summary = asyncio.run(run_replay(direct.settings, ReplayOptions(
        file=str(log), changelog=True, progress=False)))
    assert summary["events"] == 300
    backfilled = _tables(direct.settings)
    # The rest arrives live; a worker on the backfilled tables answers it from the full history.
    direct.start_worker()
    asyncio.run(direct.send(records[300:]))
    live = asyncio.run(direct.collect(direct.settings.recs_topic, lambda vs: len(vs) >= 100))
    direct.stop_worker()
    assert len(live) == 100
    after = _tables(direct.settings)
    users_live = {k.decode() for k, _ in records[300:]}
    assert {u: v for u, v in after.items() if u not in users_live} == \
        {u: v for u, v in backfilled.items() if u not in users_live}
    # A live user's state is the whole history folded: the file's events (no offsets: a file
    # backfill claims none, so the worker skipped none of the topic's) and then the live ones.
    from stream_rec.core.events import parse_event
    from stream_rec.core.session import SessionPolicy, SessionState, apply_event
    from stream_rec.serving.bundle import ModelBundle

    policy = SessionPolicy(max_len=ModelBundle.load(direct.settings.bundle).max_len)
    folded: dict[str, SessionState] = {}
    for key, value in records:
        e = parse_event(value, key)
        folded[e.user_id] = apply_event(folded.get(e.user_id) or SessionState.empty(), e, policy)
    assert users_live & set(backfilled)
    for user in users_live:
        now, want = SessionState.from_bytes(after[user]), folded[user]
        assert now.item_hashes.tolist() == want.item_hashes.tolist(), user
        assert now.ts.tolist() == want.ts.tolist() and now.last_offset >= 0
