"""Incremental against full encoding on a bundle: the vectors at every test prefix, and the time.

    .venv/bin/python scripts/incremental_check.py --bundle B --dataset diginetica [--open 256]
    .venv/bin/python scripts/incremental_check.py --bundle B --dataset nowplaying --in-order

Replays the data set's test sessions as a stream (``--open`` sessions at a time, round robin:
live traffic; or ``--in-order``: one session after another, as the served bench does), encodes
each batch of ``--batch`` sessions' current states with the bundle's ``encoder.onnx`` and with
its incremental encoder (per-user caches, ``--cache-mb``), and prints one JSON line: the max abs
difference between the two over every prefix, each one's encode time per event (featurising
included, one thread) and the cache's figures. docs/benchmarks.md, "Session 10", quotes it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import orjson

from stream_rec.core.features import CLICK, item_hash
from stream_rec.core.scoring import encode_sequences
from stream_rec.datasets.splits import load_named_split
from stream_rec.serving.bundle import ModelBundle


def _stream(sessions: list[list[str]], open_: int, in_order: bool) -> list[tuple[int, int]]:
    """(session, prefix length) in arrival order."""
    if in_order:
        return [(s, p) for s in range(len(sessions)) for p in range(1, len(sessions[s]) + 1)]
    out: list[tuple[int, int]] = []
    live: list[int] = []
    at: dict[int, int] = {}
    nxt = 0
    while nxt < len(sessions) or live:
        while len(live) < open_ and nxt < len(sessions):
            live.append(nxt)
            at[nxt] = 0
            nxt += 1
        keep = []
        for s in live:
            at[s] += 1
            out.append((s, at[s]))
            if at[s] < len(sessions[s]):
                keep.append(s)
        live = keep
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--dataset", required=True, choices=("diginetica", "nowplaying"))
    p.add_argument("--open", type=int, default=256, help="sessions open at a time (default 256)")
    p.add_argument("--in-order", action="store_true", help="one session after another")
    p.add_argument("--batch", type=int, default=256, help="sessions per encoder call (default 256)")
    p.add_argument("--cache-mb", type=int, default=256, help="the incremental cache (default 256)")
    args = p.parse_args()
    bundle = ModelBundle.load(args.bundle)
    if not bundle.incremental:
        print(
            f"{args.bundle} has no incremental encoder: run `stream-rec incremental --bundle`",
            file=sys.stderr,
        )
        return 2
    full = bundle.encoder(providers="cpu", intra_op_threads=1, inter_op_threads=1)
    inc = bundle.incremental_encoder(args.cache_mb << 20, "cpu", 1, 1)
    sessions = load_named_split(args.dataset).split.test_sessions
    hashed = [np.array([item_hash(i) for i in s], np.int64) for s in sessions]
    stream = _stream(sessions, args.open, args.in_order)
    worst, t_full, t_inc = 0.0, 0.0, 0.0
    for i in range(0, len(stream), args.batch):
        chunk = stream[i : i + args.batch]
        seqs = [
            (hashed[s][:k], np.full(k, CLICK, np.int64), np.zeros((k, 3), np.int64))
            for s, k in chunk
        ]
        keys = [f"s{s}" for s, _ in chunk]
        common = {"max_len": bundle.max_len, "query_buckets": bundle.query_buckets, "max_batch": 64}
        t0 = time.perf_counter()
        a = encode_sequences(full, bundle.vocab, seqs, **common)
        t1 = time.perf_counter()
        b = encode_sequences(inc, bundle.vocab, seqs, keys=keys, **common)
        t2 = time.perf_counter()
        t_full, t_inc = t_full + t1 - t0, t_inc + t2 - t1
        worst = max(worst, float(np.abs(a.vectors - b.vectors).max()))
    n = len(stream)
    print(
        orjson.dumps(
            {
                "bundle": bundle.version,
                "dataset": args.dataset,
                "events": n,
                "sessions": len(sessions),
                "order": "in order" if args.in_order else f"{args.open} open",
                "batch": args.batch,
                "max_abs_diff": worst,
                "full_us_per_event": round(1e6 * t_full / n, 1),
                "incremental_us_per_event": round(1e6 * t_inc / n, 1),
                "ratio": round(t_inc / t_full, 3),
                "cache": inc.stats(),
            }
        ).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
