"""Streaming evaluation: replay test sessions through the real pipeline, score what it publishes.

The test sessions' events go to a fresh events topic, keyed by user; a worker process (faust,
RocksDB session table, ONNX encoder, HNSW index) answers **every** event (``coalesce=False``) with
no business filter (``filter_purchased=False``, ``filter_clicked=False``); the metrics are computed
from the recommendations topic alone, each recommendation matched to its prefix by
``source_event_id``. The scored prefixes are those of :func:`~stream_rec.evaluation.offline.prefix_states`,
so the result is comparable with the offline HNSW number prefix by prefix.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.events import Event, Recommendation, decode_recommendation, encode_event
from ..datasets.eventlog import SessionSplit
from ..errors import DataError, StreamRecError
from ..kafka.embedded import kafka_or_embedded
from ..kafka.fetch_wait import AdaptiveFetchWait
from ..kafka.probe import free_port
from ..settings import Settings
from .cases import EvalCase, answering_every_event, prefix_states, split_test_events
from .metrics import RankingAccumulator

__all__ = [
    "StreamingOptions",
    "replay_settings",
    "replay_sessions",
    "StreamingResult",
    "streaming_evaluate",
    "score_answers",
]

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"[evaluate] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StreamingOptions:
    timeout_s: float = 1800.0  # longest wait for the last recommendation
    run_dir: str = "var/evaluate"  # worker state and log (replaced on each run)
    send_window: int = 2000  # records in flight to the broker


def replay_settings(settings: Settings, bundle: str | Path, run_dir: Path) -> Settings:
    """The worker's settings for a replay: :func:`answering_every_event`, this bundle pinned,
    HNSW at ``settings.hnsw_ef``, and topics, consumer group and state that no other run uses."""
    tag = uuid.uuid4().hex[:8]
    return answering_every_event(settings).with_(
        bundle=str(bundle),
        model_version="",
        model_poll_s=0,
        events_topic=f"eval-events-{tag}",
        recs_topic=f"eval-recs-{tag}",
        dlq_topic=f"eval-dlq-{tag}",
        app_id=f"stream-rec-eval-{tag}",
        data_dir=str(run_dir / "state"),
        worker_port=free_port(),
    )


async def _replay(
    settings: Settings,
    sessions: Sequence[Sequence[Event]],
    alive: Callable[[], bool],
    log_tail: Callable[[], str],
    options: StreamingOptions,
    say: Progress,
) -> dict[str, Recommendation]:
    """Send every event, then read recommendations until each event has one (or the timeout)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    wanted = {e.event_id for s in sessions for e in s}
    got: dict[str, Recommendation] = {}
    from ..kafka.clients import consumer_config, producer_config

    consumer = AIOKafkaConsumer(settings.recs_topic, **consumer_config(
        settings, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
        fetch_max_wait_ms=50))
    producer = AIOKafkaProducer(**producer_config(settings, linger_ms=5))
    await consumer.start()
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for events in sessions:
            for e in events:
                pending.append(await producer.send(settings.events_topic, key=e.user_id.encode(),
                                                   value=encode_event(e)))
                if len(pending) >= options.send_window:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
        say(f"sent {len(wanted):,} events ({time.perf_counter() - t0:.1f}s)")
        deadline = time.monotonic() + options.timeout_s
        last_report = time.monotonic()
        fetch_wait = AdaptiveFetchWait(consumer, short_ms=50)
        while len(got) < len(wanted) and time.monotonic() < deadline:
            if not alive():
                raise StreamRecError(f"the worker exited; its log ends with:\n{log_tail()}")
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            fetch_wait.update(sum(len(m) for m in batch.values()))  # Tansu: see fetch_wait.py
            for msgs in batch.values():
                for m in msgs:
                    if m.value is None:  # a forgotten user's tombstone
                        continue
                    rec = decode_recommendation(m.value)
                    if rec.source_event_id in wanted:
                        got.setdefault(rec.source_event_id, rec)  # a redelivery keeps the first
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                el = time.perf_counter() - t0
                say(f"{len(got):,}/{len(wanted):,} events answered ({len(got) / el:,.0f}/s)")
    finally:
        await producer.stop()
        await consumer.stop()
    return got


def replay_sessions(
    settings: Settings,
    sessions: Sequence[Sequence[Event]],
    options: StreamingOptions = StreamingOptions(),
    progress: Progress | None = _stderr,
) -> tuple[dict[str, Recommendation], dict[str, Any]]:
    """Replay ``sessions`` through a worker built from ``settings`` (see :func:`replay_settings`);
    the recommendations by source event id, and run facts (events, seconds, events per second)."""
    from ..kafka.admin import ensure_topics
    from ..kafka.worker_process import WorkerProcess

    say = progress or (lambda _msg: None)
    ids = [e.event_id for s in sessions for e in s]
    if len(set(ids)) != len(ids):
        raise DataError("event ids repeat in the replayed sessions; each event needs its own id")
    run_dir = Path(options.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with kafka_or_embedded(settings, say) as (s, _broker):
        topics = {s.events_topic: s.partitions, s.recs_topic: s.partitions, s.dlq_topic: 1}
        asyncio.run(ensure_topics(s.bootstrap_servers, topics, settings=s))
        say(f"starting worker (coalesce off, filters off, hnsw ef {s.hnsw_ef}; log: {run_dir / 'worker.log'})")
        t0 = time.perf_counter()
        with WorkerProcess(s, run_dir) as worker:
            recs = asyncio.run(_replay(s, sessions, worker.alive, worker.log_tail, options, say))
        seconds = time.perf_counter() - t0
    facts = {
        "events": len(ids),
        "answered": len(recs),
        "unanswered": len(ids) - len(recs),
        "seconds": round(seconds, 1),
        "events_per_s": round(len(recs) / max(seconds, 1e-9), 1),
    }
    say(f"{len(recs):,}/{len(ids):,} events answered in {seconds:.0f}s (worker start included)")
    return recs, facts


@dataclass
class StreamingResult:
    """The report (metrics in percent, replay facts) and, per scored prefix's event id, the
    target's rank (0 = miss) and the recommended item ids as they came off the topic."""

    report: dict[str, Any]
    ranks: dict[str, int]
    lists: dict[str, list[str]]

    def agreement(
        self, cases: Sequence[EvalCase], ranks: Iterable[int], lists: Sequence[Sequence[str]]
    ) -> dict[str, int]:
        """How many of the (offline) ``cases`` got the same rank / the same top-k list here."""
        same_rank = sum(int(self.ranks.get(c.event_id, -1) == r) for c, r in zip(cases, ranks))
        same_list = sum(int(self.lists.get(c.event_id) == list(items)) for c, items in zip(cases, lists))
        return {"same_rank_prefixes": same_rank, "same_list_prefixes": same_list}


def streaming_evaluate(
    settings: Settings,
    bundle: str | Path,
    split: SessionSplit,
    *,
    max_sessions: int | None = None,
    options: StreamingOptions = StreamingOptions(),
    progress: Progress | None = _stderr,
) -> StreamingResult:
    """HR/MRR/NDCG/coverage@k (percent) computed from the recommendations topic of a replay of
    ``split``'s test sessions (the first ``max_sessions``) through the pipeline."""
    from ..core.session import SessionPolicy
    from ..serving.bundle import ModelBundle
    from ..serving.compose import served_ef

    loaded = ModelBundle.load(bundle)
    sessions = split_test_events(split)
    if max_sessions:
        sessions = sessions[:max_sessions]
    cases, _ = prefix_states(sessions, SessionPolicy(max_len=loaded.max_len), split.item_types)
    run_dir = Path(options.run_dir) / time.strftime("run-%Y%m%dT%H%M%S")
    worker_settings = replay_settings(settings, bundle, run_dir)
    recs, facts = replay_sessions(worker_settings, sessions, replace(options, run_dir=str(run_dir)),
                                  progress)
    scored = score_answers(cases, recs, k=settings.top_k, catalogue_size=len(loaded.vocab))
    scored.report = {"model_version": loaded.version, "index": "hnsw",
                     "ef": served_ef(loaded, worker_settings), **scored.report, "replay": facts}
    return scored


def score_answers(
    cases: Sequence[EvalCase], recs: Mapping[str, Recommendation], *, k: int, catalogue_size: int,
) -> StreamingResult:
    """Rank each case's target in the recommendation that answered its prefix (``recs`` by
    ``source_event_id``; a prefix without one is a miss): the metrics in percent and
    ``unanswered_prefixes``."""
    acc = RankingAccumulator(k, catalogue_size)
    ranks: dict[str, int] = {}
    lists: dict[str, list[str]] = {}
    for case in cases:
        rec = recs.get(case.event_id)
        items = [] if rec is None else [i.item_id for i in rec.items]
        lists[case.event_id] = items
        ranks[case.event_id] = acc.add(items, case.target, case.prefix_length, repeat=case.repeat)
    report = {**acc.summary(percent=True),
              "unanswered_prefixes": sum(c.event_id not in recs for c in cases)}
    return StreamingResult(report, ranks, lists)
