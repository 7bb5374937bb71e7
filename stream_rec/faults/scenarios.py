"""The fault runs of ``scripts/faults.py``: each starts a broker and workers, produces a steady
stream, injects one fault and reports produced / answered / lost / duplicated, the seconds until
every partition answers again, and the workers' RSS."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..core.events import MAX_ID_LEN, MAX_QUERY_LEN, Event, encode_event
from ..generate.invalid import INVALID_KINDS, invalid_record
from .cluster import Cluster
from .ledger import AnswerReader, Ledger, SteadyProducer, recovery_s

__all__ = ["FaultOptions", "SCENARIOS", "run_scenario", "poison_records"]


@dataclass(frozen=True)
class FaultOptions:
    bundle: Path
    run_dir: Path
    partitions: int = 6
    rate: float = 100.0  # events/s of the steady stream
    after_s: float = 15.0  # seconds of stream after each fault
    freeze_s: float = 10.0
    burst_s: float = 60.0
    burst_factor: float = 10.0
    random_poison: int = 1000
    session_timeout_s: float = 0.0  # 0: the worker's default
    bootstrap: str = ""  # empty: an embedded broker per scenario
    say: Callable[[str], None] = print


def poison_records(
    rng: random.Random, n_random: int, max_record_bytes: int
) -> list[tuple[bytes | None, bytes | None]]:
    """Every kind of invalid record the tests use, then ``n_random`` random byte strings."""
    base = Event("poison", "poison-user", "click", int(time.time() * 1000), item_id="i1")
    out: list[tuple[bytes | None, bytes | None]] = [
        invalid_record(base, k, rng) for k in INVALID_KINDS
    ]
    as_dict = orjson.loads(encode_event(base))
    out += [
        (b"poison-user", orjson.dumps({**as_dict, "ts": 2**63})),  # ts beyond int64
        (b"poison-user", orjson.dumps({**as_dict, "user_id": "u" * (MAX_ID_LEN + 1)})),
        (
            b"poison-user",
            orjson.dumps(
                {**as_dict, "type": "search", "item_id": None, "query": "q" * (MAX_QUERY_LEN + 1)}
            ),
        ),
        (b"poison-user", b"x" * (max_record_bytes + 1)),  # larger than --max-record-bytes
        (b"poison-user", None),  # a null value
    ]
    out += [(None, rng.randbytes(rng.randrange(1, 300))) for _ in range(n_random)]
    return out


class _Run:
    """One scenario's cluster, stream and ledger."""

    def __init__(self, o: FaultOptions, name: str) -> None:
        extra = {"session_timeout_s": o.session_timeout_s} if o.session_timeout_s else {}
        self.o, self.name = o, name
        self.cluster = Cluster(o.run_dir / name, o.bundle, o.partitions, o.bootstrap, **extra)
        self.ledger = Ledger()
        items = (o.bundle / "item_ids.txt").read_text().split("\n")[:-1]
        self.producer = SteadyProducer(self.cluster.settings, self.ledger, items, rate=o.rate)
        self.reader = AnswerReader(self.cluster.settings, self.ledger)
        self.rss_max: dict[int, float] = {}
        self.row: dict[str, Any] = {"scenario": name}
        self.fault_t = float("inf")  # the earliest fault: max_latency_s counts events from it

    async def __aenter__(self) -> _Run:
        from ..kafka.admin import ensure_topics

        s = self.cluster.settings
        await ensure_topics(
            s.bootstrap_servers,
            {s.events_topic: s.partitions, s.recs_topic: s.partitions, s.dlq_topic: 1},
            settings=s,
        )
        await self.reader.start()
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.producer.stop()
            await self.reader.settle()
        finally:
            await self.reader.stop()
            self.row["workers_dead"] = len(self.cluster.dead())
            self.cluster.close()

    async def sleep(self, seconds: float) -> None:
        """Wait, sampling the workers' RSS."""
        t_end = time.perf_counter() + seconds
        while (left := t_end - time.perf_counter()) > 0:
            for i, mb in self.cluster.rss_mb().items():
                self.rss_max[i] = max(self.rss_max.get(i, 0.0), mb)
            await asyncio.sleep(min(0.5, left))

    async def start_workers(self, *ids: int) -> None:
        for i in ids:
            self.cluster.start(i)
        await self.steady()

    async def steady(self, timeout_s: float = 120.0) -> None:
        """Until every partition answered the last second's events within a second."""
        t_end = time.perf_counter() + timeout_s
        while time.perf_counter() < t_end:
            await self.sleep(1.0)
            now = time.perf_counter()
            recent = [e for e, t in self.ledger.sent.items() if now - 3.0 < t < now - 1.0]
            answered = [e for e in recent if e in self.ledger.answered]
            parts = {self.ledger.partition[e] for e in answered}
            slow = any(self.ledger.answered[e] - self.ledger.sent[e] > 1.0 for e in answered)
            if (
                recent
                and len(answered) == len(recent)
                and len(parts) == self.o.partitions
                and not slow
            ):
                return
        raise TimeoutError(
            f"{self.name}: the workers did not answer every partition within {timeout_s:.0f}s; "
            f"worker logs under {self.cluster.run_dir}"
        )

    async def recovered(
        self, t0: float, key: str = "recovery_s", wait_s: float | None = None, max_s: float = 120.0
    ) -> None:
        """Stream for ``wait_s`` (default ``after_s``) more seconds, and on until every partition
        answered again (at most ``max_s`` after ``t0``); the seconds that took go in the row."""
        await self.sleep(self.o.after_s if wait_s is None else wait_s)
        while (
            r := recovery_s(self.ledger, t0, self.o.partitions)
        ) is None and time.perf_counter() - t0 < max_s:
            await self.sleep(1.0)
        self.row[key] = None if r is None else round(r, 2)
        self.fault_t = min(self.fault_t, t0)

    def finish(self) -> dict[str, Any]:
        self.row.update(self.ledger.counts())
        self.row["dead_letters"] = self.ledger.dead_letters
        self.row["poison_sent"] = self.ledger.poison_sent
        worst = self.ledger.max_latency_s(self.fault_t)
        self.row["max_latency_s"] = None if worst is None else round(worst, 2)
        self.row["rss_max_mb"] = round(max(self.rss_max.values()), 1) if self.rss_max else None
        return self.row


async def kill_one_of_three(r: _Run) -> None:
    await r.start_workers(0, 1, 2)
    t0 = time.perf_counter()
    r.cluster.kill(1)
    await r.recovered(t0)


async def failover(r: _Run) -> None:
    await r.start_workers(0, 1)
    t0 = time.perf_counter()
    await asyncio.to_thread(r.cluster.stop, 0)
    r.row["stop_s"] = round(time.perf_counter() - t0, 2)
    await r.recovered(t0)


async def restart(r: _Run) -> None:
    await r.start_workers(0)
    t0 = time.perf_counter()
    r.cluster.kill(0)
    r.cluster.start(0)
    await r.recovered(t0)


async def scale_out_and_in(r: _Run) -> None:
    await r.start_workers(0)
    t_out = time.perf_counter()
    await r.start_workers(1, 2)
    await r.recovered(t_out, "recovery_out_s", wait_s=r.o.after_s / 2)
    t_in = time.perf_counter()
    await asyncio.gather(asyncio.to_thread(r.cluster.stop, 1), asyncio.to_thread(r.cluster.stop, 2))
    await r.recovered(t_in, "recovery_in_s")
    r.row["recovery_s"] = max(
        (r.row[k] for k in ("recovery_out_s", "recovery_in_s") if r.row[k] is not None),
        default=None,
    )


async def broker_freeze(r: _Run) -> None:
    await r.start_workers(0, 1)
    r.fault_t = time.perf_counter()
    r.cluster.signal_broker(signal.SIGSTOP)
    try:
        await asyncio.sleep(r.o.freeze_s)
    finally:
        r.cluster.signal_broker(signal.SIGCONT)
    t1 = time.perf_counter()
    await r.recovered(t1)


async def poison_burst(r: _Run) -> None:
    await r.start_workers(0, 1)
    rng = random.Random(5)
    for key, value in poison_records(rng, r.o.random_poison, r.cluster.settings.max_record_bytes):
        r.producer.send_now(key, value)
        if rng.random() < 0.1:
            r.producer.send_now(*r.producer.event())
    t0 = time.perf_counter()
    await r.recovered(t0)


async def load_burst(r: _Run) -> None:
    await r.start_workers(0, 1)
    base = r.producer.rate
    r.fault_t = time.perf_counter()
    r.producer.rate = base * r.o.burst_factor
    await r.sleep(r.o.burst_s)
    r.producer.rate = base
    t1 = time.perf_counter()
    await r.recovered(t1)
    r.row["burst_events_per_s"] = base * r.o.burst_factor


SCENARIOS: dict[str, Callable[[_Run], Awaitable[None]]] = {
    "kill": kill_one_of_three,
    "failover": failover,
    "restart": restart,
    "scale": scale_out_and_in,
    "freeze": broker_freeze,
    "poison": poison_burst,
    "burst": load_burst,
}


async def run_scenario(name: str, o: FaultOptions) -> dict[str, Any]:
    if name not in SCENARIOS:
        raise ValueError(f"unknown fault scenario {name!r}: expected one of {', '.join(SCENARIOS)}")
    o.say(f"[{name}] starting")
    t0 = time.perf_counter()
    run = _Run(o, name)
    async with run:
        await SCENARIOS[name](run)
    row = run.finish()
    row["seconds"] = round(time.perf_counter() - t0, 1)
    o.say(f"[{name}] {row}")
    return row
