"""The end-to-end benchmark: a broker, N worker processes, our producer and our consumer.

Three phases on the same workers, in one run:

1. **saturation**: the fixed event count is written to fresh topics *before* the
   workers start, so our producer is out of the measured window; the workers drain the
   backlog. Events/s, recs/s and per-stage seconds come from each worker's ``/stats``,
   CPU and RSS from ``/proc``, all sampled every :data:`POLL_S` and differenced between
   the warm-up mark and the last event. ``--profile`` runs py-spy on worker 0 here.
2. **fixed load**: events offered at ``rate`` for ``seconds``; latency per answered event.
3. **flat out**: the same count as (1) again, produced as fast as our producer goes while
   the workers serve: latency at saturation (it includes the wait in the topic) and
   events/s with the producer sharing the machine.

Latency is measured at our consumer: the time a recommendation is received minus the
time we handed its ``source_event_id`` to the producer. With coalescing a recommendation
answers the user's latest event in its batch; each answered event is one sample.

The relay baseline (:mod:`stream_rec.bench.relay`) is measured with the same tools
(:func:`produce`, :class:`ProcStats`) over its own copy of the same records.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..errors import StreamRecError
from ..settings import Settings

__all__ = [
    "Record",
    "ProcStats",
    "percentiles",
    "produce",
    "free_port",
    "say",
    "PipelineResult",
    "run_pipeline",
    "top_frames",
]

POLL_S = 0.05  # /stats and /proc sampling period
Record = tuple[bytes, bytes, str, str]  # key, value, event_id, user_id


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in ms, rounded; None when there is no sample (JSON-safe)."""
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "max": None, "samples": 0}
    a = np.asarray(values, dtype=float)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
            "max": round(float(a.max()), 2), "samples": int(a.size)}


# ------------------------------------------------------------------------------- /proc
class ProcStats:
    """CPU seconds (utime + stime, all threads) and resident memory of one process, from /proc."""

    _TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                # the command name (field 2) may hold spaces: split after its closing paren
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self._TICK  # utime, stime (fields 14, 15)

    def rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None


def machine_cpu_s() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    with open("/proc/stat", "rb") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)  # idle + iowait
    busy = sum(cpu[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / ProcStats._TICK, idle / ProcStats._TICK  # noqa: SLF001


# ------------------------------------------------------------------------------- produce
async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    rate: float = 0.0,
    on_send: Callable[[Record], None] | None = None,
) -> tuple[int, float]:
    """Send ``records`` (flat out, or paced at ``rate``/s); returns (count, seconds).

    Flat out batches hard (linger 5 ms, 256 KiB batches); paced sends linger 1 ms so the
    producer adds little to the latency it is measuring. Delivery is awaited every 1,000.
    """
    from aiokafka import AIOKafkaProducer

    from ..produce import Pacer

    paced = rate > 0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=1 if paced else 5,
                                max_batch_size=16384 if paced else 262144)
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
            n += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            await pacer.tick()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n, time.perf_counter() - t0


# ------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class Sample:
    """Totals over all workers at time ``t`` (perf_counter)."""

    t: float
    events: int
    recs: int
    stages: tuple[float, float, float]  # state, encode, search seconds
    cpu_s: float
    rss_mb: float
    broker_cpu_s: float | None
    bench_cpu_s: float  # this process: our producer, consumer and sampler
    machine_busy_s: float  # every process on the machine, ours and others'
    active_workers: int  # workers that have processed at least one event


_SELF = ProcStats(os.getpid())


class Fleet:
    """N worker processes (``stream-rec worker``), each with its own state dir, port and log."""

    def __init__(self, settings: Settings, n: int, run_dir: Path) -> None:
        from ..demo import WorkerProcess

        self.workers = []
        for i in range(n):
            d = run_dir / f"worker-{i}"
            d.mkdir(parents=True, exist_ok=True)
            s = settings.with_(data_dir=str(d / "state"), worker_port=free_port())
            self.workers.append(WorkerProcess(s, d))
        self.procs: list[ProcStats] = []

    def start(self) -> None:
        for w in self.workers:
            w.start()
            assert w.proc is not None
            self.procs.append(ProcStats(w.proc.pid))

    def check_alive(self) -> None:
        for i, w in enumerate(self.workers):
            if not w.alive():
                raise StreamRecError(f"worker {i} exited; its log ends with:\n{w.log_tail()}")

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    async def stats_of(self, http: Any, port: int) -> dict[str, Any] | None:
        try:
            async with http.get(f"http://127.0.0.1:{port}/stats") as resp:
                if resp.status != 200:
                    return None
                return dict(await resp.json(content_type=None))
        except Exception:  # not serving yet (starting, joining): counts as zero
            return None

    async def sample(self, http: Any, broker: ProcStats | None) -> Sample:
        stats = await asyncio.gather(*(self.stats_of(http, w.settings.worker_port) for w in self.workers))
        t = time.perf_counter()
        events = recs = active = 0
        stages = [0.0, 0.0, 0.0]
        for s in stats:
            if not s:
                continue
            events += int(s["events"])
            recs += int(s["recommendations"])
            active += int(s["events"]) > 0
            st = s.get("stage_seconds", {})
            for i, name in enumerate(("state", "encode", "search")):
                stages[i] += float(st.get(name, 0.0))
        cpu = sum(p.cpu_s() or 0.0 for p in self.procs)
        rss = sum(p.rss_mb() or 0.0 for p in self.procs)
        return Sample(t, events, recs, (stages[0], stages[1], stages[2]), cpu, rss,
                      broker.cpu_s() if broker else None, _SELF.cpu_s() or 0.0, machine_cpu_s()[0], active)


class Monitor:
    """Samples the fleet every POLL_S in the background; phases read the samples by time."""

    def __init__(self, fleet: Fleet, broker_pid: int | None) -> None:
        self.fleet = fleet
        self.broker = ProcStats(broker_pid) if broker_pid else None
        self.samples: list[Sample] = []
        self.stalls: list[str] = []  # spans where the workers took no event while some waited
        self._progress_t = time.perf_counter()  # when the event count last went up
        self._task: asyncio.Task[None] | None = None
        self._http: Any = None

    async def __aenter__(self) -> Monitor:
        import aiohttp

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._http.close()

    async def _run(self) -> None:
        while True:
            sample = await self.fleet.sample(self._http, self.broker)
            if not self.samples or sample.events > self.samples[-1].events:
                self._progress_t = sample.t
            self.samples.append(sample)
            await asyncio.sleep(POLL_S)

    def check_stalled(self, waiting: int, after_s: float = 30.0) -> None:
        """Note (once per stall) that no event was taken for ``after_s`` while ``waiting`` > 0."""
        idle = time.perf_counter() - self._progress_t
        if waiting and idle > after_s:
            last = self.samples[-1] if self.samples else None
            msg = (f"the worker(s) took no event for {after_s:.0f}+ s at {last.events if last else 0:,} events "
                   f"while {waiting:,} users waited for an answer (a stalled worker, or every event taken and "
                   "the answers slow to reach us)")
            if not self.stalls or self.stalls[-1] != msg:
                say(msg)
                self.stalls.append(msg)
            self._progress_t = time.perf_counter()  # report a long stall once per span

    @property
    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    async def wait_for(
        self, done: Callable[[Sample], bool], timeout: float, what: str, partial: bool = False
    ) -> tuple[Sample, bool]:
        """The first sample that is ``done``, and False; on timeout the last sample and True
        when ``partial`` (a phase that overran reports what it got), else an error."""
        deadline = time.perf_counter() + timeout
        while True:
            s = self.last
            if s is not None and done(s):
                return s, False
            self.fleet.check_alive()
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise what stopped the sampler
            if time.perf_counter() > deadline:
                if partial and s is not None:
                    say(f"timed out after {timeout:.0f}s waiting for {what}: reporting what was measured")
                    return s, True
                got = f"{s.events:,} events, {s.recs:,} recommendations" if s else "no /stats answer"
                raise StreamRecError(f"timed out after {timeout:.0f}s waiting for {what} ({got}); "
                                     f"worker 0's log ends with:\n{self.fleet.workers[0].log_tail()}")
            await asyncio.sleep(POLL_S / 2)

    def at(self, t: float) -> Sample:
        """The first sample taken at or after ``t`` (else the last one)."""
        for s in self.samples:
            if s.t >= t:
                return s
        return self.samples[-1]


def _window(a: Sample, b: Sample, workers: int) -> dict[str, Any]:
    """Rates and per-1k-event costs between two samples."""
    dt = max(b.t - a.t, 1e-9)
    ev = b.events - a.events
    k = max(ev, 1) / 1000.0
    stages = {name: round((b.stages[i] - a.stages[i]) / k * 1000, 2)
              for i, name in enumerate(("state", "encode", "search"))}
    cpu = b.cpu_s - a.cpu_s
    wall_ms = dt / k * 1000
    out: dict[str, Any] = {
        "window_events": ev,
        "window_s": round(dt, 3),
        "events_per_s": round(ev / dt, 1),
        "recs_per_s": round((b.recs - a.recs) / dt, 1),
        "events_per_rec": round(ev / max(b.recs - a.recs, 1), 3),  # > 1: coalescing at work
        "cpu_s_per_1k_events": round(cpu / k, 4),
        "worker_cpu_utilisation": round(cpu / dt / workers, 3),  # 1.0 = one core per worker, busy
        # Wall milliseconds per 1k events (per worker: with N workers each handles 1/N of them).
        "ms_per_1k_events": {
            "wall_per_worker": round(wall_ms * workers, 2),
            **stages,
            "other_worker_cpu": round(max(cpu * 1000 / k - sum(stages.values()), 0.0), 2),
            "worker_not_on_cpu": round(max(wall_ms * workers - cpu * 1000 / k, 0.0), 2),
        },
    }
    broker = None
    if a.broker_cpu_s is not None and b.broker_cpu_s is not None:
        broker = b.broker_cpu_s - a.broker_cpu_s
        out["broker_cpu_s_per_1k_events"] = round(broker / k, 4)
    # Where the machine's cores went during the window (cores busy on average).
    bench = b.bench_cpu_s - a.bench_cpu_s
    busy = b.machine_busy_s - a.machine_busy_s
    out["cores_busy"] = {
        "workers": round(cpu / dt, 2),
        "broker": round(broker / dt, 2) if broker is not None else None,
        "bench_process": round(bench / dt, 2),
        "everything_else": round(max(busy - cpu - (broker or 0.0) - bench, 0.0) / dt, 2),
        "machine_cores": os.cpu_count(),
    }
    return out


# ------------------------------------------------------------------------------- consumer
class _Answers:
    """Reads the recommendations topic; latency per answered event, and who is still waiting."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}
        self.last_sent: dict[str, str] = {}  # user -> last event id sent
        self.waiting: set[str] = set()  # users whose last sent event is not answered yet
        self.latencies: list[float] = []
        self.recs = 0
        self.received = 0  # records read from the topic, all phases
        self.arrivals: list[tuple[float, int]] = []  # (time, received so far) per fetch
        self.parse = False  # saturation only counts; the latency phases parse each record
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    def on_send(self, rec: Record) -> None:
        _, _, event_id, user = rec
        self.sent_at[event_id] = time.perf_counter()
        self.last_sent[user] = event_id
        self.waiting.add(user)

    def reset(self) -> None:
        """A new latency phase: forget the previous phase's events and latencies."""
        self.parse = True
        self.sent_at.clear()
        self.last_sent.clear()
        self.waiting.clear()
        self.latencies = []
        self.recs = 0

    async def start(self, settings: Settings, fetch_max_wait_ms: int) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=fetch_max_wait_ms)
        await c.start()
        tps = [TopicPartition(settings.recs_topic, p) for p in range(settings.partitions)]
        c.assign(tps)
        await c.seek_to_end(*tps)
        for tp in tps:  # resolve positions now: nothing produced from here on is missed
            await c.position(tp)
        self._consumer, self._fetch_max_wait_ms = c, fetch_max_wait_ms
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from ..fetch_wait import AdaptiveFetchWait

        fetch_wait = AdaptiveFetchWait(self._consumer, short_ms=self._fetch_max_wait_ms)
        while True:
            batch = await self._consumer.getmany(timeout_ms=50, max_records=5000)
            now = time.perf_counter()
            n = sum(len(msgs) for msgs in batch.values())
            fetch_wait.update(n)  # Tansu answers short fetches with nothing on long logs
            if not n:
                continue
            self.received += n
            self.arrivals.append((now, self.received))
            if not self.parse:
                continue
            for msgs in batch.values():
                for msg in msgs:
                    obj = orjson.loads(msg.value)
                    eid, user = obj["source_event_id"], obj["user_id"]
                    self.recs += 1
                    sent = self.sent_at.pop(eid, None)
                    if sent is not None:
                        self.latencies.append((now - sent) * 1000.0)
                    if self.last_sent.get(user) == eid:
                        self.waiting.discard(user)

    async def wait_received(self, count: int, monitor: Monitor, timeout: float) -> tuple[float, bool]:
        """Until ``count`` records have arrived: (the arrival time, False), or (now, True) at
        the timeout. /stats counts a recommendation when the worker hands it to its producer;
        this is when it reached us."""
        deadline = time.perf_counter() + timeout
        while self.received < count:
            monitor.fleet.check_alive()
            monitor.check_stalled(count - self.received)
            if self._task is not None and self._task.done():
                self._task.result()
            if time.perf_counter() > deadline:
                say(f"timed out after {timeout:.0f}s: {self.received:,} of {count:,} recommendations arrived")
                return time.perf_counter(), True
            await asyncio.sleep(0.005)
        return next(t for t, c in self.arrivals if c >= count), False

    async def wait_answered(self, monitor: Monitor, timeout: float) -> tuple[float, bool]:
        """Until every user's last sent event is answered: (that time, False), or at the
        timeout (the time, True): an overloaded phase reports the answers it got."""
        deadline = time.perf_counter() + timeout
        while self.waiting:
            monitor.fleet.check_alive()
            monitor.check_stalled(len(self.waiting))
            if self._task is not None and self._task.done():
                self._task.result()
            if time.perf_counter() > deadline:
                say(f"timed out after {timeout:.0f}s: {len(self.waiting):,} users' last events have no "
                    "recommendation yet; reporting the answers received")
                return time.perf_counter(), True
            await asyncio.sleep(0.005)
        return time.perf_counter(), False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


# ------------------------------------------------------------------------------- profile
class _Profiler:
    """py-spy record on one process (raw collapsed stacks), stopped with SIGINT."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            raise StreamRecError("--profile needs py-spy (in the dev extra: pip install py-spy)")
        self.out = out
        self.log = open(out.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--nonblocking", "--output", str(out)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _frame_name(frame: str) -> str:
    """'handle (/x/site-packages/topologies/worker.py:123)' -> 'handle (topologies/worker.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", os.getcwd() + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


# Frames that wrap everything below them (thread and event-loop plumbing, the CLI entry):
# left out of the inclusive ranking, where they would sit on top and say nothing.
_WRAPPERS = ("threading.py", "concurrent/futures/", "asyncio/runners.py", "asyncio/base_events.py",
             "asyncio/events.py", "<frozen runpy>", "stream_rec/cli.py")


def top_frames(collapsed: Path, n: int = 15) -> dict[str, Any]:
    """Top functions by own samples and by inclusive samples from py-spy's raw output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + c
        for f in set(frames):
            if not any(w in f for w in _WRAPPERS):
                incl[f] = incl.get(f, 0) + c

    def top(d: dict[str, int]) -> list[dict[str, Any]]:
        best = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [{"frame": f, "share": round(c / max(total, 1), 4)} for f, c in best]

    return {"samples": total, "own": top(own), "inclusive": top(incl)}


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
    timeout_s: float = 300.0,
) -> PipelineResult:
    """The three phases (module docstring) on fresh topics named in ``settings``."""
    n = len(preload)
    say(f"pipeline: preloading {n:,} events into {settings.events_topic} ({settings.partitions} partitions)")
    _, secs = await produce(settings.bootstrap_servers, settings.events_topic, preload)
    say(f"pipeline: preloaded in {secs:.1f}s; starting {workers} worker(s), engine {settings.engine}")
    fleet = Fleet(settings, workers, run_dir)
    answers = _Answers()
    notes: list[str] = []
    fixed: dict[str, Any] | None = None
    flat_out: dict[str, Any] | None = None
    total = n
    try:
        # Saturation only counts arrivals: a relaxed fetch wait keeps our polling cheap.
        await answers.start(settings, fetch_max_wait_ms=100)
        fleet.start()
        async with Monitor(fleet, broker_pid) as mon:
            # -- 1. saturation: drain the backlog
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
            sat_end = mon.last or end
            drained = not overran
            # The latency phases: Tansu holds a fetch for a good part of fetch_max_wait even when
            # records arrive (measured: p50 166 ms at 500 ms), so poll with a short wait.
            await answers.stop()
            answers = _Answers()
            await answers.start(settings, fetch_max_wait_ms=5)

            # -- 2. fixed offered load
            if rate > 0 and drained:
                if rate >= 0.95 * sat["events_per_s"]:
                    notes.append(f"the offered {rate:g}/s is at or above the measured capacity "
                                 f"({sat['events_per_s']:,.0f}/s): latency at that load is queueing")
                # An overloaded offered load only grows its backlog: stop waiting for answers
                # after a while, then let the backlog drain before the flat-out phase.
                fixed = await _offered_phase(settings, mon, answers, offered, rate, workers, timeout_s)
                total += fixed["sent"]
                if fixed["timed_out"]:
                    say("pipeline: waiting for the offered load's backlog to drain")
                    _, overran = await answers.wait_answered(mon, timeout_s)
                    drained = not overran
            fixed_end = mon.last or sat_end

            # -- 3. flat out while serving
            if drained:
                records = flat()
                flat_out = await _flat_phase(settings, mon, answers, records, timeout_s)
                total += flat_out["sent"]
            else:
                notes.append("skipped the flat-out phase: the backlog of the previous phase did not drain")
            rss = _rss_summary(mon.samples, first.t, sat_end.t, fixed_end.t)
            notes.extend(mon.stalls)
            version = await _model_version(fleet)
    finally:
        await answers.stop()
        fleet.stop()
    return PipelineResult(sat, fixed, flat_out, rss, prof, settings.engine, version, total, notes)


async def _offered_phase(
    settings: Settings, mon: Monitor, answers: _Answers, records: Iterable[Record], rate: float,
    workers: int, timeout_s: float,
) -> dict[str, Any]:
    """Offer ``records`` at ``rate``; latency of the answers that come within a while after."""
    answers.reset()
    before = mon.last
    assert before is not None
    say(f"pipeline: offering {rate:,.0f} events/s")
    sent, secs = await produce(settings.bootstrap_servers, settings.events_topic, records, rate=rate,
                               on_send=answers.on_send)
    # Overloaded, the backlog only grows: waiting past twice the phase's length adds nothing.
    done, overran = await answers.wait_answered(mon, min(timeout_s, 30.0 + 2 * secs))
    after = mon.at(done)
    window = _window(before, after, workers)
    out: dict[str, Any] = {"offered_per_s": rate, "sent": sent, "sent_per_s": round(sent / max(secs, 1e-9), 1),
           "timed_out": overran,
           **{k: window[k] for k in ("events_per_s", "recs_per_s", "cpu_s_per_1k_events")},
           "latency_ms": percentiles(answers.latencies)}
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
                               on_send=answers.on_send)
    done, overran = await answers.wait_answered(mon, timeout_s)
    after, late = await mon.wait_for(lambda s: s.events >= target, 10.0, "the flat-out events", partial=True)
    out: dict[str, Any] = {"sent": sent, "produce_per_s": round(sent / max(secs, 1e-9), 1), "timed_out": overran or late,
           "events_per_s": round((after.events - before.events) / max(max(done, after.t) - before.t, 1e-9), 1),
           "latency_ms": percentiles(answers.latencies)}
    say(f"pipeline: flat out {out['events_per_s']:,.0f} events/s (producer {out['produce_per_s']:,.0f}/s); "
        f"latency p50 {out['latency_ms']['p50']} ms, p99 {out['latency_ms']['p99']} ms")
    return out


def _rss_summary(samples: Sequence[Sample], start: float, sat_end: float, fixed_end: float) -> dict[str, Any]:
    """RSS of the worker(s): peak, at phase ends, and the slope over the fixed-load phase."""
    live = [s for s in samples if s.t >= start and s.rss_mb > 0]
    if not live:
        return {"max_mb": None}
    steady = [s for s in live if sat_end <= s.t <= fixed_end]
    slope = None
    if len(steady) >= 10 and steady[-1].t - steady[0].t > 1.0:
        t = np.array([s.t for s in steady]) - steady[0].t
        slope = round(float(np.polyfit(t, [s.rss_mb for s in steady], 1)[0]) * 60.0, 2)
    series = live[:: max(1, len(live) // 20)]
    return {
        "max_mb": round(max(s.rss_mb for s in live), 1),
        "after_saturation_mb": round(min(live, key=lambda s: abs(s.t - sat_end)).rss_mb, 1),
        "end_mb": round(live[-1].rss_mb, 1),
        "fixed_load_slope_mb_per_min": slope,
        "series_mb": [[round(s.t - start, 1), round(s.rss_mb, 1)] for s in series],
    }


async def _model_version(fleet: Fleet) -> str:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
        s = await fleet.stats_of(http, fleet.workers[0].settings.worker_port)
    return str((s or {}).get("model_version", ""))
