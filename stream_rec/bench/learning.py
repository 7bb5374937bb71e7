"""`stream-rec bench --learn`: what learning from the stream costs and how soon a new item is
recommended, on the generated shop with a drifting catalogue (items launched every day).

1. **Update cost** (no broker): a base bundle trained on the stream's first ``train_events``,
   then ``update_events`` more events (600,000 = ten minutes at 1,000 events/s) fed into a
   learner's window, and one update timed on one thread: wall and CPU seconds per phase.
2. **New items, live**: an embedded broker, a worker process and the learner (an update every
   ``every_s``), the stream replayed at ``rate`` events/s for ``live_seconds``; for each item the
   base bundle does not know, the seconds from its first event to the first recommendation that
   holds it (median and p90), beside the update interval.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..settings import Settings

__all__ = ["LearnBenchOptions", "run_learn_bench", "start_learner_process"]


@dataclass(frozen=True)
class LearnBenchOptions:
    users: int = 2000
    items: int = 3000
    seed: int = 11
    launches_per_day: float = 20.0
    trend_days: float = 2.0
    train_events: int = 150_000
    epochs: int = 3
    update_events: int = 600_000
    live_seconds: float = 180.0
    rate: float = 300.0
    every_s: float = 30.0
    early_fraction: float = 0.5  # the live learner's --early-fraction
    run_root: str = "var/bench"


def _say(msg: str) -> None:
    import sys

    print(f"[bench --learn] {msg}", file=sys.stderr, flush=True)


def _generator(o: LearnBenchOptions) -> Any:
    from ..generate import EventGenerator, GeneratorConfig

    return EventGenerator(
        GeneratorConfig(
            n_users=o.users,
            n_items=o.items,
            seed=o.seed,
            launches_per_day=o.launches_per_day,
            trend_days=o.trend_days,
        )
    )


def _base_bundle(settings: Settings, o: LearnBenchOptions, run: Path) -> Path:
    from ..model.build import train_sessions_to_bundle
    from ..model.recipes import TrainOptions
    from ..model.training_data import session_arrays, sessions_of

    events = list(_generator(o).events(o.train_events))
    sessions = sessions_of(sorted(events, key=lambda e: (e.session_id or "", e.ts)))
    sessions.sort(key=lambda s: s[0].ts)
    arrays = [session_arrays(s) for s in sessions]
    ids = [[e.item_id for e in s if e.item_id] for s in sessions]
    _say(f"base bundle: {len(sessions):,} sessions of the first {o.train_events:,} events")
    return train_sessions_to_bundle(
        settings.with_(bundles_dir=str(run / "bundles")),
        arrays,
        ids,
        data_tag="drift",
        opts=TrainOptions(dataset="generated", epochs=o.epochs, threads=1),
        n_events=len(events),
        default_epochs=o.epochs,
        min_count=2,
    )


def update_cost(base: Path, o: LearnBenchOptions, run: Path) -> dict[str, Any]:
    import itertools

    from ..learn.learner import Learner, LearnOptions
    from ..learn.update import UpdateConfig
    from ..learn.window import SessionWindow

    window = SessionWindow(run / "window", capacity=1_000_000)
    learner = Learner(
        base.parent,
        window,
        LearnOptions(every_events=o.update_events, update=UpdateConfig(lr=1e-3, threads=1)),
        serving=base,
    )
    t0 = time.perf_counter()
    stream = itertools.islice(
        _generator(o).events(o.train_events + o.update_events), o.train_events, None
    )
    for e in stream:
        learner.observe(e)
    fill = time.perf_counter() - t0
    _say(
        f"window: {len(window):,} sessions from {o.update_events:,} events ({fill:.0f}s); updating"
    )
    c0 = time.process_time()
    out = learner.update(progress=_say)
    cpu = time.process_time() - c0
    window.close()
    return {
        "events": o.update_events,
        "window_fill_s": round(fill, 1),
        "update_s": round(out.seconds, 1),
        "update_cpu_s": round(cpu, 1),
        "phases_s": out.phases,
        "sessions": out.sessions,
        "items_added": out.items_added,
        "steps": out.stats.steps if out.stats else 0,
        "published": out.published is not None,
        "guard": out.decision.as_dict() if out.decision else None,
    }


async def _live(settings: Settings, base: Path, o: LearnBenchOptions, run: Path) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from topologies.learner import LearnerProcess

    from ..core.events import decode_recommendation
    from ..kafka.admin import ensure_topics
    from ..kafka.clients import consumer_config, producer_config
    from ..kafka.probe import free_port
    from ..kafka.produce import Pacer
    from ..kafka.worker_process import WorkerProcess
    from ..learn.learner import LearnOptions
    from ..learn.update import UpdateConfig
    from ..serving.bundle import ModelBundle

    tag = uuid.uuid4().hex[:8]
    s = settings.with_(
        events_topic=f"events-{tag}",
        recs_topic=f"recs-{tag}",
        dlq_topic=f"dlq-{tag}",
        app_id=f"learn-bench-{tag}",
        partitions=1,
        bundle="",
        bundles_dir=str(base.parent),
        data_dir=str(run / "state"),
        worker_port=free_port(),
        model_poll_s=1.0,
    )
    await ensure_topics(s.bootstrap_servers, {s.events_topic: 1, s.recs_topic: 1, s.dlq_topic: 1})
    known = set(ModelBundle.load(base).vocab.item_ids)
    worker = WorkerProcess(s, run).start()
    learner = LearnerProcess(
        s,
        LearnOptions(
            every_events=None,
            every_ms=int(o.every_s * 1000),
            update=UpdateConfig(lr=1e-3, threads=1),
            early_fraction=o.early_fraction,
        ),
        port=0,
    )
    first_event: dict[str, float] = {}
    eligible: dict[str, float] = {}  # when the item reached the admission count
    seen_count: dict[str, int] = {}
    first_rec: dict[str, float] = {}
    stop = asyncio.Event()

    async def produce() -> int:
        producer = AIOKafkaProducer(**producer_config(s, linger_ms=5))
        await producer.start()
        gen = _generator(o)
        n_total = o.train_events + int(o.rate * o.live_seconds)
        records = gen.records(n_total, now_ms=int(time.time() * 1000))
        pacer, n = Pacer(o.rate), 0
        try:
            for i, (key, value, _) in enumerate(records):
                if i < o.train_events:
                    continue
                import orjson

                item = orjson.loads(value).get("item_id")
                if item and item not in known:
                    now = time.time()
                    first_event.setdefault(item, now)
                    seen_count[item] = seen_count.get(item, 0) + 1
                    if seen_count[item] == learner.learner.opts.min_count:
                        eligible[item] = now
                await producer.send(s.events_topic, key=key, value=value)
                n += 1
                await pacer.tick()
            await producer.flush()
        finally:
            await producer.stop()
        return n

    async def watch() -> None:
        consumer = AIOKafkaConsumer(
            s.recs_topic, **consumer_config(s, auto_offset_reset="earliest", group_id=None)
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:
                        if m.value is None:
                            continue
                        rec = decode_recommendation(m.value)
                        for it in rec.items:
                            if it.item_id not in known and it.item_id not in first_rec:
                                first_rec[it.item_id] = time.time()
        finally:
            await consumer.stop()

    learn_task = asyncio.create_task(learner.run())
    watch_task = asyncio.create_task(watch())
    try:
        sent = await produce()
        await asyncio.sleep(o.every_s + 10)  # the last update and the workers' poll
    finally:
        stop.set()
        learner.stop()
        await asyncio.gather(learn_task, watch_task, return_exceptions=True)
        worker.stop()
    delays = np.array([first_rec[i] - first_event[i] for i in first_event if i in first_rec])
    after_admit = np.array([first_rec[i] - eligible[i] for i in eligible if i in first_rec])
    outs = learner.learner.outcomes
    return {
        "events_sent": sent,
        "rate": o.rate,
        "seconds": o.live_seconds,
        "every_s": o.every_s,
        "early_fraction": o.early_fraction,
        "new_items_seen": len(first_event),
        "new_items_recommended": int(delays.size),
        "delay_s_median": round(float(np.median(delays)), 1) if delays.size else None,
        "delay_s_p90": round(float(np.percentile(delays, 90)), 1) if delays.size else None,
        # from the event that made the item admissible (its admit-count-th occurrence)
        "new_items_admissible": len(eligible),
        "delay_from_admissible_s_median": round(float(np.median(after_admit)), 1)
        if after_admit.size
        else None,
        "delay_from_admissible_s_p90": round(float(np.percentile(after_admit, 90)), 1)
        if after_admit.size
        else None,
        "updates": {
            "published": sum(1 for x in outs if x.published is not None),
            "refused": sum(1 for x in outs if x.decision and not x.decision.publish),
            "items_only": sum(1 for x in outs if x.fallback is not None and x.published),
            "skipped": sum(1 for x in outs if x.skipped),
        },
        "update_s_mean": round(float(np.mean([x.seconds for x in outs if not x.skipped])), 1)
        if any(not x.skipped for x in outs)
        else None,
    }


def run_learn_bench(settings: Settings, o: LearnBenchOptions) -> dict[str, Any]:
    from ..kafka.embedded import kafka_or_embedded

    run = Path(o.run_root) / f"learn-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run.mkdir(parents=True, exist_ok=True)
    base = _base_bundle(settings, o, run)
    out: dict[str, Any] = {"options": asdict(o), "base_bundle": base.name}
    out["update"] = update_cost(base, o, run / "cost")
    _say(f"update cost: {out['update']}")
    if o.live_seconds > 0:
        live_root = run / "live"
        live_root.mkdir()
        import shutil

        shutil.copytree(base, live_root / "bundles" / base.name)
        with kafka_or_embedded(settings, _say) as (s, _broker):
            out["live"] = asyncio.run(_live(s, live_root / "bundles" / base.name, o, live_root))
        _say(f"live: {out['live']}")
    return out


def start_learner_process(s: Settings, every: int, run_dir: Path) -> Any:
    """`stream-rec learn` on the run's events topic (its own bundles directory: the pinned
    workers never swap), updating every ``every`` events: the cost of learning beside
    the workers."""
    import subprocess
    import sys

    bundles = run_dir / "learner-bundles"
    copy = bundles / Path(s.bundle).name
    shutil.copytree(s.bundle, copy)
    env = {
        **os.environ,
        **s.with_(
            bundles_dir=str(bundles), bundle=str(copy), data_dir=str(run_dir / "learner-state")
        ).to_env(),
    }
    cmd = [sys.executable, "-m", "stream_rec.cli", "learn", "--every", str(every), "--port", "0"]
    with open(run_dir / "learner.log", "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_learner_process(proc: Any, run_dir: Path, every: int) -> dict[str, Any]:
    """Stops :func:`start_learner_process`'s learner; what it did (from its log)."""
    proc.terminate()
    proc.wait(30)
    log = (run_dir / "learner.log").read_text(errors="replace")
    return {
        "every_events": every,
        "updates": log.count("update: ") + log.count("update skipped"),
        "log": str(run_dir / "learner.log"),
    }
