"""Sampling the worker processes while they run: /stats, CPU and RSS from /proc, every POLL_S.

:class:`Fleet` starts and stops the ``stream-rec worker`` processes and takes one
:class:`Sample` (totals over all workers, the broker, this process and the machine);
:class:`Monitor` takes one every :data:`POLL_S` in the background and finds samples by
time; :func:`_window` turns two samples into rates and per-1k-event costs, and
:func:`_rss_summary` a run's samples into its memory figures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StreamRecError
from ..settings import Settings
from .common import say

__all__ = ["POLL_S", "ProcStats", "machine_cpu_s", "Sample", "Fleet", "Monitor"]

POLL_S = 0.05  # /stats and /proc sampling period


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
    batches: int = 0  # micro-batches processed


_SELF = ProcStats(os.getpid())


class Fleet:
    """N worker processes (``stream-rec worker``), each with its own state dir, port and log."""

    def __init__(self, settings: Settings, n: int, run_dir: Path) -> None:
        from ..kafka.probe import free_port
        from ..kafka.worker_process import WorkerProcess

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
        events = recs = active = batches = 0
        stages = [0.0, 0.0, 0.0]
        for s in stats:
            if not s:
                continue
            events += int(s["events"])
            recs += int(s["recommendations"])
            active += int(s["events"]) > 0
            batches += int(s.get("batches", 0))
            st = s.get("stage_seconds", {})
            for i, name in enumerate(("state", "encode", "search")):
                stages[i] += float(st.get(name, 0.0))
        cpu = sum(p.cpu_s() or 0.0 for p in self.procs)
        rss = sum(p.rss_mb() or 0.0 for p in self.procs)
        return Sample(t, events, recs, (stages[0], stages[1], stages[2]), cpu, rss,
                      broker.cpu_s() if broker else None, _SELF.cpu_s() or 0.0, machine_cpu_s()[0], active,
                      batches)


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
        "events_per_batch": round(ev / (b.batches - a.batches), 2) if b.batches > a.batches else None,
        "compute_ms_per_batch": (round(sum(b.stages[i] - a.stages[i] for i in range(3)) * 1000
                                       / (b.batches - a.batches), 3) if b.batches > a.batches else None),
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
