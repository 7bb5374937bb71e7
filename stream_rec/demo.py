"""`stream-rec demo`: the whole system on one machine, live.

Embedded broker -> topics -> model bundle (trained on first run) -> a worker
process -> generated shoppers -> live recommendations with their latency.
Headless (`--json`) runs the same pipeline and ends with one JSON summary line.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson

from .core.events import decode_recommendation
from .errors import BundleError, StreamRecError
from .kafka.fetch_wait import AdaptiveFetchWait
from .kafka.worker_process import WorkerProcess
from .settings import Settings

__all__ = ["DemoOptions", "run_demo"]

PROBE_USER = "demo-probe"


@dataclass(frozen=True)
class DemoOptions:
    max_events: int | None = None
    json: bool = False
    rate: float | None = None
    invalid_rate: float = 0.0
    users: int = 2000
    items: int = 3000
    seed: int = 7
    train_events: int = 60_000
    timeout_s: float = 180.0
    retrain: bool = False
    run_root: str = "var/demo"

    @property
    def effective_rate(self) -> float:
        if self.rate is not None:
            return self.rate
        return 500.0 if self.json else 200.0


def _say(msg: str, quiet: bool = False) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- bundle
def ensure_bundle(settings: Settings, opts: DemoOptions) -> Path:
    """The bundle to serve: --bundle/--model-version, else one trained on this generator, else train."""
    from .model.build import TrainOptions, generated_data_tag, train_bundle
    from .serving.bundle import ModelBundle, resolve_bundle

    if settings.bundle or settings.model_version:
        return resolve_bundle(settings.bundles_dir, settings.bundle or None, settings.model_version or None)
    tag = generated_data_tag(opts.users, opts.items, opts.seed, opts.train_events)
    if not opts.retrain:
        try:
            path = resolve_bundle(settings.bundles_dir)
            if ModelBundle.load(path).manifest.get("training", {}).get("data") == tag:
                _say(f"using model bundle {path}")
                return path
            _say(f"newest bundle {path.name} was trained on other data; training one for this stream")
        except BundleError:
            _say(f"no model bundle in {settings.bundles_dir}/ yet: training one (first run only)")
    return train_bundle(
        settings,
        TrainOptions(events=opts.train_events, users=opts.users, items=opts.items, seed=opts.seed, epochs=4,
                     threads=1),
    )


# ------------------------------------------------------------------------------- live view
@dataclass
class _Tracker:
    sent_at: dict[str, float]
    last_valid: dict[str, str]
    history: dict[str, deque[str]]
    answered: set[str]
    latencies: deque[float]
    # live view: per sent event, the user's events up to it (the one a recommendation answers)
    seen_at: dict[str, tuple[str, ...]] = field(default_factory=dict)
    recs: int = 0
    dead_letters: int = 0
    valid_sent: int = 0
    invalid_sent: int = 0
    first_send: float = 0.0
    last_answer: float = 0.0
    model_version: str = ""

    def percentiles(self) -> dict[str, float]:
        if not self.latencies:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        a = np.fromiter(self.latencies, float)
        p50, p95, p99 = np.percentile(a, [50, 95, 99])
        return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
                "max": round(float(a.max()), 2)}

    def unanswered(self) -> list[str]:
        return [u for u, e in self.last_valid.items() if e not in self.answered]


def _describe_event(raw: bytes) -> str:
    obj = orjson.loads(raw)
    if obj["type"] == "search":
        return f'search "{obj["query"]}"'
    return f'{obj["type"]} {obj["item_id"]}'


def _print_rec(out: TextIO, rec: Any, seen: tuple[str, ...] | None, latency_ms: float) -> None:
    """The user's events up to the one this recommendation answers (``rec.source_event_id``,
    in brackets: the events sent after it are not in this answer), then the top items."""
    *before, answered = seen or ("?",)
    past = " > ".join([*before, f"[{answered}]"])
    top = ", ".join(f"{s.item_id} ({s.score:.2f})" for s in rec.items[:5])
    out.write(f"{rec.user_id:<9} {past}\n          => {top}, ... [{len(rec.items)} items, "
              f"{latency_ms:.1f} ms, answers {rec.source_event_id}]\n")


async def _consume(settings: Settings, topic: str) -> Any:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from .kafka.clients import consumer_config

    consumer = AIOKafkaConsumer(**consumer_config(
        settings, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=20))
    await consumer.start()
    parts = None
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic) or await _refresh(consumer, topic)
        if parts:
            break
        await asyncio.sleep(0.1)
    if not parts:
        await consumer.stop()
        raise StreamRecError(f"topic {topic!r} not found on {settings.bootstrap_servers}")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve positions now so nothing produced from here on is missed
        await consumer.position(tp)
    return consumer


async def _refresh(consumer: Any, topic: str) -> Any:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
    return consumer.partitions_for_topic(topic)


class _LiveRun:
    """One streaming session against a serving worker: produce, read answers and dead letters,
    print the live view, and summarize."""

    def __init__(self, settings: Settings, opts: DemoOptions, worker: WorkerProcess, out: TextIO) -> None:
        self.settings, self.opts, self.worker, self.out = settings, opts, worker, out
        self.t = _Tracker({}, {}, {}, set(), deque(maxlen=None if opts.max_events else 20_000))
        self.stop = asyncio.Event()
        self.live = not opts.json
        self.recs_c: Any = None
        self.dlq_c: Any = None
        self.producer: Any = None

    async def run(self) -> dict[str, Any]:
        from aiokafka import AIOKafkaProducer

        from .kafka.clients import producer_config

        self.recs_c = await _consume(self.settings, self.settings.recs_topic)
        self.dlq_c = await _consume(self.settings, self.settings.dlq_topic)
        self.producer = AIOKafkaProducer(**producer_config(self.settings, linger_ms=1))
        await self.producer.start()
        readers = [asyncio.create_task(self.read_recs()), asyncio.create_task(self.read_dlq())]
        summary = None
        try:
            await self.probe()
            _say("streaming generated shoppers" + ("" if self.opts.max_events else " (Ctrl-C to stop)"))
            summary = asyncio.create_task(self.summary_loop())
            producing = asyncio.create_task(self.produce())
            if self.opts.max_events is None:
                await asyncio.gather(producing, summary)
            else:
                await producing
                await self.wait_for_answers(summary)
        finally:
            self.stop.set()
            for task in readers + ([summary] if summary else []):
                task.cancel()
            await asyncio.gather(*readers, *([summary] if summary else []), return_exceptions=True)
            await self.producer.stop()
            await self.recs_c.stop()
            await self.dlq_c.stop()
        return self.summary()

    async def wait_for_answers(self, summary: asyncio.Task[None]) -> None:
        t = self.t
        deadline = time.perf_counter() + self.opts.timeout_s
        while time.perf_counter() < deadline:
            if not t.unanswered() and t.dead_letters >= t.invalid_sent:
                break
            if summary.done():
                summary.result()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let a straggling dead letter land before counting

    async def read_recs(self) -> None:
        t = self.t
        last_print = 0.0
        fetch_wait = AdaptiveFetchWait(self.recs_c, short_ms=20)  # Tansu: empty short fetches on long logs
        while not self.stop.is_set():
            batch = await self.recs_c.getmany(timeout_ms=100, max_records=2000)
            fetch_wait.update(sum(len(m) for m in batch.values()))
            now = time.perf_counter()
            for msgs in batch.values():
                for msg in msgs:
                    if msg.value is None:  # a forgotten user's tombstone
                        continue
                    rec = decode_recommendation(msg.value)
                    t.model_version = rec.model_version
                    if rec.user_id == PROBE_USER:
                        t.answered.add(rec.source_event_id)
                        continue
                    t.recs += 1
                    t.last_answer = now
                    t.answered.add(rec.source_event_id)
                    sent = t.sent_at.pop(rec.source_event_id, None)
                    seen = t.seen_at.pop(rec.source_event_id, None)
                    if sent is None:
                        continue
                    latency = (now - sent) * 1000
                    t.latencies.append(latency)
                    if self.live and now - last_print > 0.4:
                        last_print = now
                        _print_rec(self.out, rec, seen, latency)

    async def read_dlq(self) -> None:
        fetch_wait = AdaptiveFetchWait(self.dlq_c, short_ms=20)
        while not self.stop.is_set():
            batch = await self.dlq_c.getmany(timeout_ms=200, max_records=2000)
            fetch_wait.update(sum(len(m) for m in batch.values()))
            self.t.dead_letters += sum(len(m) for m in batch.values())

    async def probe(self) -> None:
        """Send one event and wait for its answer: the worker has joined and is serving."""
        worker = self.worker
        t0 = time.perf_counter()
        i = 0
        while True:
            i += 1
            eid = f"probe-{i}"
            value = orjson.dumps({"event_id": eid, "user_id": PROBE_USER, "type": "search",
                                  "query": "warm up", "ts": int(time.time() * 1000)})
            await self.producer.send_and_wait(self.settings.events_topic, value=value, key=PROBE_USER.encode())
            for _ in range(100):
                if eid in self.t.answered:
                    _say(f"worker is serving (first answer after {time.perf_counter() - t0:.1f}s)")
                    return
                if not worker.alive():
                    raise StreamRecError(f"the worker exited; its log ends with:\n{worker.log_tail()}")
                await asyncio.sleep(0.1)
            if time.perf_counter() - t0 > 120:
                raise StreamRecError(f"the worker did not answer within 120 s; its log ends with:\n{worker.log_tail()}")

    async def produce(self) -> None:
        from .generate import EventGenerator, GeneratorConfig
        from .kafka.produce import Pacer

        opts, t = self.opts, self.t
        gen = EventGenerator(GeneratorConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed + 1))
        count = opts.max_events or 10**12
        pacer = Pacer(opts.effective_rate)
        pending = []
        t.first_send = time.perf_counter()
        for key, value, valid in gen.records(count, invalid_rate=opts.invalid_rate, now_ms=int(time.time() * 1000)):
            if valid:
                self.track(value)
            else:
                t.invalid_sent += 1
            pending.append(await self.producer.send(self.settings.events_topic, value=value, key=key))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
            await pacer.tick()
            if self.live and len(t.sent_at) > 200_000:  # coalesced events are never answered: bound memory
                for k in list(t.sent_at)[:100_000]:
                    del t.sent_at[k]
                    t.seen_at.pop(k, None)
        await asyncio.gather(*pending)

    def track(self, value: bytes) -> None:
        """Note a valid event as sent: its time, its user's last event, the live view's history."""
        t = self.t
        obj = orjson.loads(value)
        eid, user = obj["event_id"], obj["user_id"]
        t.sent_at[eid] = time.perf_counter()
        t.last_valid[user] = eid
        t.valid_sent += 1
        if self.live:
            h = t.history.setdefault(user, deque(maxlen=4))
            h.append(_describe_event(value))
            t.seen_at[eid] = tuple(h)

    async def summary_loop(self) -> None:
        t, out = self.t, self.out
        start = time.perf_counter()
        while not self.stop.is_set():
            await asyncio.sleep(2.0)
            el = time.perf_counter() - start
            p = t.percentiles()
            sent = t.valid_sent + t.invalid_sent
            line = (f"[{el:6.1f}s] events {sent:,} ({sent / el:,.0f}/s) | recs {t.recs:,} ({t.recs / el:,.0f}/s)"
                    f" | dead letters {t.dead_letters} | latency p50 {p['p50']:.1f} ms p99 {p['p99']:.1f} ms"
                    f" | model {t.model_version}")
            if self.live:
                out.write(f"\033[1m{line}\033[0m\n" if out.isatty() else line + "\n")
                out.flush()
            else:
                _say(line)
            if not self.worker.alive():
                raise StreamRecError(f"the worker exited; its log ends with:\n{self.worker.log_tail()}")

    def summary(self) -> dict[str, Any]:
        t = self.t
        elapsed = max(1e-9, (t.last_answer or time.perf_counter()) - t.first_send)
        events = t.valid_sent + t.invalid_sent
        return {
            "events": events,
            "valid_events": t.valid_sent,
            "invalid_injected": t.invalid_sent,
            "users": len(t.last_valid),
            "recommendations": t.recs,
            "unanswered_users": len(t.unanswered()),
            "dead_letters": t.dead_letters,
            "latency_ms": t.percentiles(),
            "events_per_s": round(events / elapsed, 1),
            "recs_per_s": round(t.recs / elapsed, 1),
            "offered_rate": self.opts.effective_rate,
            "model_version": t.model_version,
            "elapsed_s": round(elapsed, 2),
        }


async def _stream(settings: Settings, opts: DemoOptions, worker: WorkerProcess, out: TextIO) -> dict[str, Any]:
    return await _LiveRun(settings, opts, worker, out).run()


# ------------------------------------------------------------------------------- entry
def run_demo(settings: Settings, opts: DemoOptions, out: TextIO | None = None) -> dict[str, Any]:
    from .gateway.server import shop_gateway
    from .kafka.admin import ensure_topics
    from .kafka.embedded import kafka_or_embedded
    from .kafka.probe import free_port

    out = out or sys.stdout
    run_root = Path(opts.run_root)
    shutil.rmtree(run_root, ignore_errors=True)  # the embedded broker keeps nothing: neither do we
    run_dir = run_root / time.strftime("run-%Y%m%dT%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bundle = ensure_bundle(settings, opts)
    summary: dict[str, Any] = {}
    with kafka_or_embedded(settings, _say) as (s, _broker):
        asyncio.run(ensure_topics(s.bootstrap_servers, {s.events_topic: s.partitions,
                                                        s.recs_topic: s.partitions, s.dlq_topic: 1},
                                  settings=s))
        s = s.with_(bundle=str(bundle), data_dir=str(run_dir / "state"), worker_port=free_port(),
                    log_level="warning", model_poll_s=0)
        _say(f"starting worker (log: {run_dir / 'worker.log'})")
        shop = nullcontext() if opts.json else shop_gateway(s, opts.items, _say)  # headless: none
        with WorkerProcess(s, run_dir) as worker, shop:
            try:
                summary = asyncio.run(_stream(s, opts, worker, out))
            except KeyboardInterrupt:
                _say("stopping (Ctrl-C): worker, then broker")
                raise
    summary["total_s"] = round(time.perf_counter() - t0, 1)
    if opts.json:
        out.write(orjson.dumps(summary).decode() + "\n")
    else:
        _say(f"summary: {orjson.dumps(summary).decode()}")
    out.flush()
    return summary
