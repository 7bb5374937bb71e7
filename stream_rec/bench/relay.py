"""The baseline: a plain aiokafka consume-and-produce relay (no state, no model).

It moves each record of an input topic to an output topic with the same key, in
batches of at most ``batch_max`` (the worker's micro-batch size), and waits for the
batch's delivery before taking the next one (the at-least-once pattern the worker
follows too). Its producer is configured like the faust worker's (acks=all, linger 1 ms).
It runs as its own process (``python -m stream_rec.bench.relay``, its security settings
from the STREAM_REC_* environment :func:`measure_relay` hands it) and prints one
progress line ``<CLOCK_MONOTONIC seconds> <records relayed>`` per batch to stdout.

:func:`measure_relay` preloads the same records the pipeline gets into fresh topics
with the same partition count, starts the relay and measures its events/s between the
warm-up mark and the last record, exactly as the pipeline's saturation phase does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import StreamRecError
from ..settings import Settings
from .common import Record, say
from .monitor import ProcStats
from .pipeline import produce

__all__ = ["relay", "measure_relay", "main"]


async def relay(
    bootstrap: str, in_topic: str, out_topic: str, group: str, batch_max: int,
    session_timeout_s: float, stop: asyncio.Event, settings: Settings | None = None,
) -> int:
    """Relay until ``stop`` is set; returns the records relayed."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from ..kafka.clients import consumer_config, producer_config

    s = settings or Settings()
    consumer = AIOKafkaConsumer(in_topic, **consumer_config(
        s, bootstrap, group_id=group, auto_offset_reset="earliest",
        session_timeout_ms=int(session_timeout_s * 1000),
        heartbeat_interval_ms=int(min(3.0, session_timeout_s / 3) * 1000),
    ))
    producer = AIOKafkaProducer(**producer_config(s, bootstrap, linger_ms=1))
    await producer.start()
    await consumer.start()
    n = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=batch_max)
            futures = [
                await producer.send(out_topic, key=msg.key, value=msg.value)
                for msgs in batch.values() for msg in msgs
            ]
            await asyncio.gather(*futures)
            if futures:
                n += len(futures)
                sys.stdout.write(f"{time.monotonic():.6f} {n}\n")
                sys.stdout.flush()
        sys.stdout.write(f"{time.monotonic():.6f} {n}\n")
    finally:
        await consumer.stop()
        await producer.stop()
    return n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream_rec.bench.relay", description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--in-topic", required=True)
    p.add_argument("--out-topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--batch-max", type=int, default=256)
    p.add_argument("--session-timeout-s", type=float, default=10.0)
    args = p.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await relay(args.bootstrap_servers, args.in_topic, args.out_topic, args.group,
                    args.batch_max, args.session_timeout_s, stop, Settings.from_env())

    asyncio.run(run())
    return 0


async def measure_relay(
    bootstrap: str,
    records: Sequence[Record],
    *,
    partitions: int,
    warmup: int,
    batch_max: int,
    session_timeout_s: float,
    run_dir: Path,
    timeout_s: float = 300.0,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Preload ``records``, start the relay process, measure events/s after ``warmup`` records."""
    from ..kafka.admin import ensure_topics

    tag = uuid.uuid4().hex[:8]
    in_topic, out_topic = f"bench-relay-in-{tag}", f"bench-relay-out-{tag}"
    await ensure_topics(bootstrap, {in_topic: partitions, out_topic: partitions},
                        settings=settings)
    n = len(records)
    await produce(bootstrap, in_topic, records, settings=settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / f"relay-{tag}.log", "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream_rec.bench.relay", "--bootstrap-servers", bootstrap,
        "--in-topic", in_topic, "--out-topic", out_topic, "--group", f"bench-relay-{tag}",
        "--batch-max", str(batch_max), "--session-timeout-s", str(session_timeout_s),
        stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(settings or Settings()).to_env()},
    )
    assert proc.stdout is not None
    cpu = ProcStats(proc.pid)
    marks: list[tuple[float, int, float]] = []  # (monotonic s, relayed, cpu s)
    try:
        deadline = time.monotonic() + timeout_s
        while not marks or marks[-1][1] < n:
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), max(deadline - time.monotonic(), 0.01))
            except asyncio.TimeoutError:
                raise StreamRecError(f"relay timed out after {timeout_s:.0f}s "
                                     f"({marks[-1][1] if marks else 0:,} of {n:,} relayed)") from None
            if not line:
                raise StreamRecError(f"the relay exited (code {await proc.wait()}); see {log.name}")
            t, count = line.split()
            marks.append((float(t), int(count), cpu.cpu_s() or 0.0))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
    end = marks[-1]
    start = next((m for m in marks if m[1] >= warmup), marks[0])
    if start[0] >= end[0]:
        start = marks[0]
    dt = max(end[0] - start[0], 1e-9)
    k = max(end[1] - start[1], 1) / 1000.0
    result = {
        "events": n,
        "window_events": end[1] - start[1],
        "window_s": round(dt, 3),
        "events_per_s": round((end[1] - start[1]) / dt, 1),
        "cpu_s_per_1k_events": round((end[2] - start[2]) / k, 4),
        "cpu_utilisation": round((end[2] - start[2]) / dt, 3),
    }
    say(f"relay: {result['events_per_s']:,.0f} events/s over {result['window_events']:,} events")
    return result


if __name__ == "__main__":
    sys.exit(main())
