"""The learner live (issue 23): broker, a worker process and `stream-rec learn`'s loop against the
embedded broker. An item the first bundle does not know becomes recommendable after an update,
the worker swaps to the new bundle by itself, and no event goes unanswered across the swap."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import replace

import numpy as np
import orjson
import pytest

pytest.importorskip("torch")

from stream_rec.kafka.bundle_topic import publish_bundle  # noqa: E402
from stream_rec.learn.learner import LearnOptions  # noqa: E402
from stream_rec.learn.update import UpdateConfig  # noqa: E402
from stream_rec.model.bundle_writer import write_bundle  # noqa: E402
from stream_rec.model.train import build_vocab, item_popularity  # noqa: E402
from topologies.learner import LearnerProcess  # noqa: E402

from ..unit.tiny_model import successor_corpus, train_tiny  # noqa: E402
from .conftest import Pipeline  # noqa: E402

N = 40  # items i0..i39; i5 is followed by the new item "fresh", then i6


def _session(user: str, items: list[str], t0: int) -> list[tuple[bytes, bytes, str]]:
    out = []
    for j, item in enumerate(items):
        eid = f"{user}-{j}"
        value = orjson.dumps({"event_id": eid, "user_id": user, "type": "click",
                              "ts": t0 + j * 1000, "item_id": item})
        out.append((user.encode(), value, eid))
    return out


def _stream(prefix: str, n: int, seed: int, t0: int) -> list[tuple[bytes, bytes, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n):
        if s % 2 == 0:
            items = ["i3", "i4", "i5", "fresh", "i6"]
        else:
            start = int(rng.integers(N))
            items = [f"i{(start + j) % N}" for j in range(int(rng.integers(3, 7)))]
        out += _session(f"{prefix}{s}", items, t0 + s * 10)
    return out


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("shared_disk", [True, False], ids=["shared-disk", "bundles-topic"])
def test_a_new_item_becomes_recommendable_after_an_update_with_no_answer_lost(
    broker, tmp_path, shared_disk
):
    """Shared disk: the learner writes into the worker's bundles directory. Bundles topic (pods
    with no shared disk): the worker starts with an empty bundles directory and waits for the
    first bundle on the topic (`stream-rec publish`), then fetches the learner's."""
    sessions, ids = successor_corpus(600, N, seed=1)
    vocab = build_vocab(ids)
    model, _ = train_tiny(sessions, vocab)
    bundles = tmp_path / "bundles"
    info = {"data": "successor", "sessions": len(sessions), "events": 1, "epochs": 4, "seed": 0}
    base = write_bundle(bundles, model, vocab, item_popularity(sessions, vocab), info, {})
    topic = "" if shared_disk else f"bundles-{tmp_path.name[-20:]}-{time.time_ns()}"
    worker_bundles = bundles if shared_disk else tmp_path / "worker-bundles"
    p = Pipeline(broker, base, tmp_path, engine="direct", bundle="",
                 bundles_dir=str(worker_bundles), bundles_topic=topic, model_poll_s=0.3,
                 coalesce=False, filter_clicked=False)
    learner_settings = replace(p.settings, bundles_dir=str(bundles))
    asyncio.run(p.create_topics())
    if not shared_disk:
        asyncio.run(publish_bundle(learner_settings, base))
    now = int(time.time() * 1000)
    before = _stream("a", 240, seed=2, t0=now)
    during = _stream("b", 60, seed=3, t0=now + 5_000)  # sent while the learner updates
    probe = _session("probe", ["i3", "i4", "i5"], now + 10_000)
    p.start_worker()
    try:
        async def run() -> tuple[object, list, str]:
            await p.send([(k, v) for k, v, _ in before])
            first = {eid for *_, eid in before}  # answered by the first bundle before learning
            await p.recommendations(lambda rs: {r.source_event_id for r in rs} >= first)
            opts = LearnOptions(every_events=len(before), min_count=3, margin=5.0,
                                update=UpdateConfig(epochs=8, lr=3e-3, batch_size=32, negatives=0))
            learner = LearnerProcess(learner_settings, opts, port=0, max_updates=1)
            task = asyncio.create_task(learner.run())
            while not learner.updating and not task.done():
                await asyncio.sleep(0.05)
            await p.send([(k, v) for k, v, _ in during])
            await asyncio.wait_for(task, timeout=300)
            out = learner.learner.outcomes[-1]
            assert out.published is not None, out
            deadline = time.monotonic() + 60
            while _stats(p.settings.worker_port)["model_version"] != out.published.name:
                assert time.monotonic() < deadline, "the worker never swapped\n" + p.log_tail()
                await asyncio.sleep(0.2)
            await p.send([(k, v) for k, v, _ in probe])
            want = {eid for *_, eid in before + during + probe}
            recs = await p.recommendations(lambda rs: {r.source_event_id for r in rs} >= want)
            return out, recs, out.published.name

        out, recs, published = asyncio.run(run())
    finally:
        p.stop_worker()
    answered = {r.source_event_id for r in recs}
    missing = {eid for *_, eid in before + during + probe} - answered
    assert not missing, f"{len(missing)} events unanswered"
    assert out.items_added == 1 and out.decision.publish
    assert {r.model_version for r in recs if r.source_event_id.startswith("a")} == {base.name}
    assert {r.model_version for r in recs} == {base.name, published}  # then the new one
    last = next(r for r in recs if r.source_event_id == "probe-2")
    assert last.model_version == published
    assert "fresh" in [i.item_id for i in last.items][:5], last.items
    if not shared_disk:  # the worker's own copies, fetched from the topic
        fetched = sorted(d.name for d in worker_bundles.iterdir() if not d.name.startswith("."))
        assert fetched == sorted([base.name, published])
