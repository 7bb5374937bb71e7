"""The end-to-end benchmark: a broker, N worker processes, our producer and our consumer.

Three phases on the same workers, in one run:

1. **saturation**: the fixed event count is written to fresh topics *before* the
   workers start, so our producer is out of the measured window; the workers drain the
   backlog. Events/s, recs/s and per-stage seconds come from each worker's ``/stats``,
   CPU and RSS from ``/proc``, all sampled every :data:`.monitor.POLL_S` and
   differenced between the warm-up mark and the last event. ``--profile`` runs py-spy
   on worker 0 here.
2. **fixed load**: events offered at ``rate`` for ``seconds``; latency per answered event.
3. **flat out**: the same count as (1) again, produced as fast as our producer goes while
   the workers serve: latency at saturation (it includes the wait in the topic) and
   events/s with the producer sharing the machine.

Latency is measured at our consumer: the time a recommendation is received minus the
time we handed its ``source_event_id`` to the producer. With coalescing a recommendation
answers the user's latest event in its batch; each answered event is one sample.

This module holds the phases and our producer (:func:`produce`); the sampling of the
workers is in :mod:`.monitor`, our consumer of the recommendations in :mod:`.answers`,
and py-spy in :mod:`.profiler`.

The relay baseline (:mod:`stream_rec.bench.relay`) is measured with the same tools
(:func:`produce`, :class:`.monitor.ProcStats`) over its own copy of the same records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..settings import Settings
from .answers import _Answers
from .common import Record, say
from .monitor import POLL_S, Fleet, Monitor, _rss_summary, _window
from .probe import FetchProbe
from .profiler import _Profiler, top_frames

__all__ = ["percentiles", "produce", "PipelineResult", "run_pipeline"]


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in ms, rounded; None when there is no sample (JSON-safe)."""
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "max": None, "samples": 0}
    a = np.asarray(values, dtype=float)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
            "max": round(float(a.max()), 2), "samples": int(a.size)}


# ------------------------------------------------------------------------------- produce
async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    rate: float = 0.0,
    on_send: Callable[[Record], None] | None = None,
    settings: Settings | None = None,
    on_ack: Callable[[Record], None] | None = None,
) -> tuple[int, float]:
    """Send ``records`` (flat out, or paced at ``rate``/s); returns (count, seconds).

    Flat out batches hard (linger 5 ms, 256 KiB batches); paced sends linger 1 ms so the
    producer adds little to the latency it is measuring. Delivery is awaited every 1,000.
    """
    from aiokafka import AIOKafkaProducer

    from ..kafka.clients import producer_config
    from ..kafka.produce import Pacer

    paced = rate > 0
    # acks=1: the load generator's own durability is not what the benchmark measures
    producer = AIOKafkaProducer(**producer_config(
        settings or Settings(), bootstrap, acks=1, enable_idempotence=False,
        linger_ms=1 if paced else 5, max_batch_size=16384 if paced else 262144))
    await producer.start()
    n = 0
    t0 = time.perf_counter()
    try:
        pacer = Pacer(rate)
        pending = []
        for rec in records:
            if on_send is not None:
                on_send(rec)
            pending.append(await producer.send(topic, key=rec[0], value=rec[1]))
            if on_ack is not None:
                pending[-1].add_done_callback(lambda _f, r=rec: on_ack(r))
            n += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            await pacer.tick()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n, time.perf_counter() - t0


# ------------------------------------------------------------------------------- the run
@dataclass
class PipelineResult:
    saturation: dict[str, Any]
    fixed_load: dict[str, Any] | None
    flat_out: dict[str, Any] | None
    rss: dict[str, Any]
    profile: dict[str, Any] | None = None
    engine: str = ""
    model_version: str = ""
    events_sent: int = 0
    notes: list[str] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)  # the saturation phase's, with keep_answers
    learner: dict[str, Any] | None = None  # --with-learner: its update count beside the workers
    encoder_cache: list[Any] | None = None  # each worker's incremental-encoder cache at the end
    fetch_wait: list[Any] | None = None  # each worker's fetch wait at the end (ms, raises)


async def run_pipeline(
    settings: Settings,
    *,
    workers: int,
    preload: Sequence[Record],
    warmup: int,
    offered: Iterable[Record],
    rate: float,
    flat: Callable[[], Sequence[Record]],
    run_dir: Path,
    broker_pid: int | None = None,
    profile: bool = False,
    fetch_probe: bool = False,
    timeout_s: float = 300.0,
    keep_answers: bool = False,
) -> PipelineResult:
    """The three phases (module docstring) on fresh topics named in ``settings``; with
    ``keep_answers`` the result holds the saturation phase's recommendations as they arrived."""
    n = len(preload)
    say(f"pipeline: preloading {n:,} events into {settings.events_topic} ({settings.partitions} partitions)")
    _, secs = await produce(settings.bootstrap_servers, settings.events_topic, preload,
                            settings=settings)
    say(f"pipeline: preloaded in {secs:.1f}s; starting {workers} worker(s), engine {settings.engine}")
    fleet = Fleet(settings, workers, run_dir)
    answers = _Answers(keep=keep_answers)
    notes: list[str] = []
    try:
        # Saturation only counts arrivals: a relaxed fetch wait keeps our polling cheap.
        await answers.start(settings, fetch_max_wait_ms=100)
        fleet.start()
        async with Monitor(fleet, broker_pid) as mon:
            sat = await _saturation_phase(mon, answers, fleet, n=n, warmup=warmup, workers=workers,
                                          timeout_s=timeout_s, run_dir=run_dir, profile=profile, notes=notes)
            # The latency phases: Tansu holds a fetch for a good part of fetch_max_wait even when
            # records arrive (measured: p50 166 ms at 500 ms), so poll with a short wait.
            await answers.stop()
            kept, answers = answers.kept or [], _Answers()
            await answers.start(settings, fetch_max_wait_ms=5)
            later = await _latency_phases(settings, mon, answers, sat, offered=offered, rate=rate,
                                          workers=workers, flat=flat, timeout_s=timeout_s, notes=notes,
                                          fetch_probe=fetch_probe)
            rss = _rss_summary(mon.samples, sat.first.t, sat.end.t, later.fixed_end.t)
            notes.extend(mon.stalls)
            version, caches, waits = await _worker_stats(fleet)
    finally:
        await answers.stop()
        fleet.stop()
    return PipelineResult(sat.summary, later.fixed, later.flat_out, rss, sat.profile, settings.engine, version,
                          n + later.sent, notes, kept, encoder_cache=caches, fetch_wait=waits)


@dataclass
class _Saturation:
    summary: dict[str, Any]
    profile: dict[str, Any] | None
    first: Any  # the sample of the first processed event
    end: Any  # the last sample of the phase
    drained: bool  # the backlog was processed and answered in time


async def _saturation_phase(
    mon: Monitor, answers: _Answers, fleet: Fleet, *, n: int, warmup: int, workers: int, timeout_s: float,
    run_dir: Path, profile: bool, notes: list[str],
) -> _Saturation:
    """Phase 1: drain the preloaded backlog; events/s over the window after the warm-up."""
    first, _ = await mon.wait_for(lambda s: s.events > 0, timeout_s, "the first processed event")
    profiler = _Profiler(fleet.procs[0].pid, run_dir / "profile-worker-0.txt") if profile else None
    say(f"pipeline: worker(s) processing (first events {first.t - mon.samples[0].t:.1f}s after start)")
    try:
        end, overran = await mon.wait_for(lambda s: s.events >= n, timeout_s, f"{n:,} processed events",
                                          partial=True)
        # The window ends when the backlog's recommendations have reached our consumer.
        t_done, late = await answers.wait_received(end.recs, mon, timeout_s)
        overran = overran or late
    finally:
        if profiler is not None:
            profiler.stop()
    await asyncio.sleep(2 * POLL_S)  # a sample after t_done
    done = mon.at(t_done)
    start = next((s for s in mon.samples if s.events >= warmup and s.active_workers == workers), None)
    if start is None or start.t >= end.t:
        start = first
        notes.append("saturation window began at the first processed event (warm-up mark not sampled)")
    sat = {"events": n, "warmup_events": start.events, "timed_out": overran, **_window(start, done, workers),
           "delivery_lag_s": round(max(t_done - end.t, 0.0), 3),
           "events_per_s_by_stats_alone": _window(start, end, workers)["events_per_s"]}
    if workers > 1 and sum(1 for s in mon.samples if s.t <= end.t and s.active_workers == workers) < 3:
        notes.append("not every worker was busy during the saturation window (late join?)")
    say(f"pipeline: saturation {sat['events_per_s']:,.0f} events/s, {sat['recs_per_s']:,.0f} recs/s "
        f"over {sat['window_events']:,} events (last recommendation {sat['delivery_lag_s']}s after "
        "the last event was taken)")
    prof = None
    if profiler is not None and profiler.out.exists():
        prof = {"file": str(profiler.out), "worker": 0, **top_frames(profiler.out)}
    elif profiler is not None:
        notes.append(f"py-spy wrote no profile; see {profiler.out.with_suffix('.log')}")
    return _Saturation(sat, prof, first, mon.last or end, not overran)


@dataclass
class _LatencyPhases:
    fixed: dict[str, Any] | None
    flat_out: dict[str, Any] | None
    fixed_end: Any  # the last sample of the fixed-load phase
    sent: int  # events these phases sent


async def _latency_phases(
    settings: Settings, mon: Monitor, answers: _Answers, sat: _Saturation, *, offered: Iterable[Record],
    rate: float, workers: int, flat: Callable[[], Sequence[Record]], timeout_s: float, notes: list[str],
    fetch_probe: bool = False,
) -> _LatencyPhases:
    """Phases 2 (fixed offered load) and 3 (flat out while serving), each once the backlog drained."""
    fixed: dict[str, Any] | None = None
    flat_out: dict[str, Any] | None = None
    drained, sent = sat.drained, 0
    if rate > 0 and drained:
        if rate >= 0.95 * sat.summary["events_per_s"]:
            notes.append(f"the offered {rate:g}/s is at or above the measured capacity "
                         f"({sat.summary['events_per_s']:,.0f}/s): latency at that load is queueing")
        # An overloaded offered load only grows its backlog: stop waiting for answers
        # after a while, then let the backlog drain before the flat-out phase.
        fixed = await _offered_phase(settings, mon, answers, offered, rate, workers, timeout_s,
                                     fetch_probe)
        sent += fixed["sent"]
        if fixed["timed_out"]:
            say("pipeline: waiting for the offered load's backlog to drain")
            _, overran = await answers.wait_answered(mon, timeout_s)
            drained = not overran
    fixed_end = mon.last or sat.end
    if drained:
        records = flat()
        flat_out = await _flat_phase(settings, mon, answers, records, timeout_s)
        sent += flat_out["sent"]
    else:
        notes.append("skipped the flat-out phase: the backlog of the previous phase did not drain")
    return _LatencyPhases(fixed, flat_out, fixed_end, sent)


async def _offered_phase(
    settings: Settings, mon: Monitor, answers: _Answers, records: Iterable[Record], rate: float,
    workers: int, timeout_s: float, fetch_probe: bool = False,
) -> dict[str, Any]:
    """Offer ``records`` at ``rate``; latency of the answers that come within a while after
    (with ``fetch_probe``, the worker's hop split: bench/probe.py)."""
    answers.reset()
    before = mon.last
    assert before is not None
    say(f"pipeline: offering {rate:,.0f} events/s")
    probe = FetchProbe(answers.clock) if fetch_probe else None
    if probe is not None:
        await probe.start(settings)
    try:
        sent, secs = await produce(settings.bootstrap_servers, settings.events_topic, records, rate=rate,
                                   on_send=answers.on_send, settings=settings, on_ack=answers.on_ack)
        # Overloaded, the backlog only grows: waiting past twice the phase's length adds nothing.
        done, overran = await answers.wait_answered(mon, min(timeout_s, 30.0 + 2 * secs))
    finally:
        if probe is not None:
            await probe.stop()
    after = mon.at(done)
    window = _window(before, after, workers)
    out: dict[str, Any] = {"offered_per_s": rate, "sent": sent, "sent_per_s": round(sent / max(secs, 1e-9), 1),
           "timed_out": overran,
           **{k: window[k] for k in ("events_per_s", "recs_per_s", "cpu_s_per_1k_events")},
           "latency_ms": percentiles(answers.latencies), "hops_ms": answers.clock.summary(answers.latencies, window)}
    lat = out["latency_ms"]
    say(f"pipeline: at {out['sent_per_s']:,.0f}/s offered: latency p50 {lat['p50']} ms, "
        f"p99 {lat['p99']} ms, max {lat['max']} ms")
    return out


async def _flat_phase(
    settings: Settings, mon: Monitor, answers: _Answers, records: Sequence[Record], timeout_s: float,
) -> dict[str, Any]:
    """Produce ``records`` flat out while the workers serve: latency at saturation."""
    answers.reset()
    before = mon.last
    assert before is not None
    target = before.events + len(records)
    sent, secs = await produce(settings.bootstrap_servers, settings.events_topic, records,
                               on_send=answers.on_send, settings=settings, on_ack=answers.on_ack)
    done, overran = await answers.wait_answered(mon, timeout_s)
    after, late = await mon.wait_for(lambda s: s.events >= target, 10.0, "the flat-out events", partial=True)
    out: dict[str, Any] = {"sent": sent, "produce_per_s": round(sent / max(secs, 1e-9), 1), "timed_out": overran or late,
           "events_per_s": round((after.events - before.events) / max(max(done, after.t) - before.t, 1e-9), 1),
           "latency_ms": percentiles(answers.latencies),
           "hops_ms": answers.clock.summary(answers.latencies, _window(before, after, 1))}
    say(f"pipeline: flat out {out['events_per_s']:,.0f} events/s (producer {out['produce_per_s']:,.0f}/s); "
        f"latency p50 {out['latency_ms']['p50']} ms, p99 {out['latency_ms']['p99']} ms")
    return out


async def _worker_stats(fleet: Fleet) -> tuple[str, list[Any], list[Any]]:
    """The model version worker 0 serves, each worker's incremental-encoder cache figures, and
    each worker's fetch wait at the end (ms, times the adaptive wait was raised)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
        stats = [await fleet.stats_of(http, w.settings.worker_port) or {} for w in fleet.workers]
    waits = [{"ms": s.get("fetch_wait_ms"), "raises": s.get("fetch_wait_raises")} for s in stats]
    return str(stats[0].get("model_version", "")), [s.get("encoder_cache") for s in stats], waits
