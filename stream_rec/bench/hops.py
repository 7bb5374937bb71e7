"""Where an answered event's latency goes: its hops, from the timestamps one run leaves.

Four clocks read per event, all wall-clock epoch time on this machine (so comparable):

- ``sent``: our producer is handed the record (:meth:`HopClock.on_send`);
- ``acked``: the broker acknowledged the record's batch to our producer (:meth:`on_ack`);
- ``emitted_ts``: the worker stamped its answer, after computing it (in the recommendation;
  whole milliseconds);
- the answer's record timestamp (CreateTime: the worker handed it to its producer; ms; a
  broker set to LogAppendTime would make it the broker's), and the time our consumer got it.

They split the latency into measured hops (ms, per event):

- ``to_broker``: sent -> acked: producer linger, the request, the broker's append;
- ``broker_to_answer``: acked -> emitted: the worker's fetch wait, batch wait and compute (it
  may start before our producer hears the ack: a little negative is possible);
- ``answer_to_publish``: emitted -> the answer's record timestamp: the worker's own work after
  computing (state and changelog writes, serializing) before its producer takes the record;
- ``publish_to_us``: record timestamp -> received: the worker producer's linger and request,
  the broker, and our consumer's fetch wait.

With a fetch probe beside the workers (bench/probe.py: a plain consumer of the events topic with
the worker's fetch settings), ``broker_to_answer`` splits in two (``broker_to_answer_split``):

- ``broker_fetch``: acked -> the probe had the record: what the broker's fetch path takes for a
  consumer polling as the worker does (its fetch wait, Tansu's hold of a fetch), no compute;
- ``worker_after_fetch``: the probe had it -> emitted: what the worker adds after that (its
  batch cycle: the wait for the batch in hand to finish, then its own compute).

The worker's /stats add, for the phase's window, ``compute_ms_per_batch`` (state + encode +
search per micro-batch, mean) and ``events_per_batch``; ``fetch_and_batch_wait_ms`` =
``broker_to_answer`` (mean) - ``compute_ms_per_batch`` is inferred, not measured. Millisecond
timestamps make each hop exact to about 1 ms.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["HopClock", "HOPS"]

HOPS = ("to_broker", "broker_to_answer", "answer_to_publish", "publish_to_us")
SPLIT = ("broker_fetch", "worker_after_fetch")  # broker_to_answer, with a fetch probe


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p99": None}
    a = np.asarray(values)
    p50, p99 = np.percentile(a, [50, 99])
    return {"mean": round(float(a.mean()), 2), "p50": round(float(p50), 2),
            "p99": round(float(p99), 2)}


class HopClock:
    """Per event id: when it was sent and acked; per answer: the hops (see the module doc)."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}  # event id -> epoch ms
        self.acked: dict[str, float] = {}
        self.fetched: dict[str, float] = {}  # event id -> epoch ms the fetch probe had it
        self.hops: dict[str, list[float]] = {h: [] for h in HOPS}
        self.split: dict[str, list[float]] = {h: [] for h in SPLIT}

    def clear(self) -> None:
        self.sent.clear()
        self.acked.clear()
        self.fetched.clear()
        self.hops = {h: [] for h in HOPS}
        self.split = {h: [] for h in SPLIT}

    def on_send(self, event_id: str) -> None:
        self.sent[event_id] = time.time() * 1000.0

    def on_ack(self, event_id: str) -> None:
        if event_id in self.sent:
            self.acked[event_id] = time.time() * 1000.0

    def on_fetch(self, event_id: str, fetched_ms: float) -> None:
        """The fetch probe had the event (bench/probe.py)."""
        if event_id in self.sent:
            self.fetched[event_id] = fetched_ms

    def on_answer(self, event_id: str, emitted_ts: int, record_ts: int, received_ms: float) -> None:
        sent, acked = self.sent.pop(event_id, None), self.acked.pop(event_id, None)
        fetched = self.fetched.pop(event_id, None)
        if sent is None or acked is None:
            return
        if fetched is not None:
            self.split["broker_fetch"].append(fetched - acked)
            self.split["worker_after_fetch"].append(emitted_ts - fetched)
        for hop, value in zip(HOPS, (acked - sent, emitted_ts - acked, record_ts - emitted_ts,
                                     received_ms - record_ts)):
            self.hops[hop].append(value)

    def summary(
        self, latencies: list[float], window: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Each hop's mean/p50/p99 (ms) and the phase's mean latency (``latencies``, timed on
        another clock: the hops' means add up to it); with the phase's /stats window, the
        compute per batch and the inferred fetch and batch wait."""
        out: dict[str, Any] = {h: _stats(v) for h, v in self.hops.items()}
        out["samples"] = len(self.hops["to_broker"])
        if self.split["broker_fetch"]:
            split: dict[str, Any] = {h: _stats(v) for h, v in self.split.items()}
            out["broker_to_answer_split"] = {**split, "samples": len(self.split["broker_fetch"])}
        out["latency_mean"] = _stats(latencies)["mean"]
        if window and window.get("compute_ms_per_batch") is not None:
            compute = window["compute_ms_per_batch"]
            out["compute_ms_per_batch"] = compute
            out["events_per_batch"] = window.get("events_per_batch")
            mean = out["broker_to_answer"]["mean"]
            inferred = None if mean is None else round(mean - compute, 2)
            out["fetch_and_batch_wait_ms_inferred"] = inferred
        out["resolution_ms"] = 1.0
        return out
