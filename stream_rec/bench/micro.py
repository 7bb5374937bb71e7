"""Microbenchmarks: the encoder alone, the index alone, and the size of session state.

- :func:`encoder_micro`: sessions/s of ``SessionEncoder.encode`` by batch size, at the
  model's full length, at the run's mean session length, and for real sessions padded to
  the longest of their batch; latency of a batch of one; featurize cost per session.
- :func:`index_micro`: batched queries/s and recall@k against the exact index by ``ef``,
  on real session vectors.
- :func:`state_sizes`: bytes per user of the states a stream of events folds into
  (``SessionState.to_bytes``, the same fold the worker applies).
- :func:`rocksdb_size`: disk bytes of ``n_users`` such states in RocksDB
  (``RocksDictStore.put_many``, flushed and compacted), for the 1M-user figure.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.events import Event
from ..core.features import MAX_QUERY_TOKENS, ModelInputs, featurize
from ..core.session import SessionPolicy, SessionState, apply_event

__all__ = ["encoder_micro", "index_micro", "state_sizes", "rocksdb_size", "session_vectors"]

Sequences = Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _timed(fn: Any, min_seconds: float, min_calls: int = 3) -> list[float]:
    """Seconds per call, after one warm-up call, until ``min_seconds`` have passed."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _inputs_of_length(b: int, length: int, n_items: int, query_buckets: int, seed: int) -> ModelInputs:
    """b sessions of exactly ``length`` events: random items, types and query buckets."""
    rng = np.random.default_rng(seed)
    types = rng.integers(1, 4, (b, length))
    items = np.where(types == 2, 0, rng.integers(1, n_items + 1, (b, length)))
    queries = np.where((types == 2)[..., None], rng.integers(1, query_buckets, (b, length, MAX_QUERY_TOKENS)), 0)
    return ModelInputs(items=items.astype(np.int64), types=types.astype(np.int64), queries=queries.astype(np.int64))


def _ms(times: Sequence[float], q: float) -> float:
    return round(float(np.percentile(times, q)) * 1000, 3)


def encoder_micro(
    bundle: Any,
    encoder: Any,
    sequences: Sequences,
    batches: Sequence[int] = (1, 16, 64, 256, 1024),
    seconds: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Sessions/s of ``encoder.encode`` by batch size, at three shapes of batch:

    - ``L_max``: every session at the model's full length (the worst case);
    - ``L_mean``: every session at the mean length of the run's real sessions (a batch
      of similar lengths, as length-sorted chunks give);
    - ``mixed``: real sessions drawn at random, padded to the longest of the batch (what a
      batch costs without sorting).

    Also the latency of a batch of one, and featurize's cost per session.
    """
    rng = np.random.default_rng(seed)
    max_len, n_items, qb = bundle.max_len, len(bundle.vocab), bundle.query_buckets
    lengths = np.array([min(len(s[0]), max_len) for s in sequences]) if len(sequences) else np.array([max_len])
    mean_len = max(1, int(round(float(lengths.mean()))))
    rows: list[dict[str, Any]] = []
    for b in batches:
        shapes = {"L_max": _inputs_of_length(b, max_len, n_items, qb, seed),
                  "L_mean": _inputs_of_length(b, mean_len, n_items, qb, seed)}
        if len(sequences):
            shapes["mixed"] = featurize([sequences[i] for i in rng.integers(0, len(sequences), b)],
                                        bundle.vocab, qb, max_len)
        row: dict[str, Any] = {"batch": b}
        for name, inputs in shapes.items():
            t = _timed(lambda x=inputs: encoder.encode(x), seconds)
            row[f"sessions_per_s_{name}"] = round(b / float(np.median(t)), 1)
        if "mixed" in shapes:
            row["mixed_padded_len"] = int(shapes["mixed"].items.shape[1])
        rows.append(row)
    one_max = _inputs_of_length(1, max_len, n_items, qb, seed)
    one_mean = _inputs_of_length(1, mean_len, n_items, qb, seed)
    t_max = _timed(lambda: encoder.encode(one_max), seconds)
    t_mean = _timed(lambda: encoder.encode(one_mean), seconds)
    feat_seqs = [sequences[i] for i in rng.integers(0, len(sequences), 256)] if len(sequences) else []
    feat = _timed(lambda: featurize(feat_seqs, bundle.vocab, qb, max_len), seconds / 2) if feat_seqs else [0.0]
    return {
        "by_batch": rows,
        "batch1_latency_ms": {"L_max": {"p50": _ms(t_max, 50), "p99": _ms(t_max, 99)},
                              "L_mean": {"p50": _ms(t_mean, 50), "p99": _ms(t_mean, 99)}},
        "featurize_us_per_session": round(float(np.median(feat)) / max(len(feat_seqs), 1) * 1e6, 2),
        "real_length": {"mean": round(float(lengths.mean()), 2), "p50": float(np.median(lengths)),
                        "p99": float(np.percentile(lengths, 99)), "max": int(lengths.max())},
        "L_max": max_len,
        "L_mean": mean_len,
        "providers": list(getattr(encoder, "providers", [])),
    }


def session_vectors(bundle: Any, encoder: Any, sequences: Sequences, n: int, seed: int = 0) -> np.ndarray:
    """(n, dim) vectors of real sessions (the queries the index is asked in the worker)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sequences), n)
    out = []
    for lo in range(0, n, 512):
        chunk = [sequences[i] for i in pick[lo : lo + 512]]
        out.append(encoder.encode(featurize(chunk, bundle.vocab, bundle.query_buckets, bundle.max_len)))
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def index_micro(
    bundle: Any,
    queries: np.ndarray,
    efs: Sequence[int] = (16, 32, 64, 128, 256),
    k: int = 20,
    batch: int = 256,
    threads: int = 1,
    seconds: float = 1.0,
) -> dict[str, Any]:
    """Batched queries/s and recall@k (vs exact inner product) by ef, HNSW and exact."""
    exact = bundle.index("exact")

    def run(index: Any) -> tuple[np.ndarray, float]:
        rows = []
        t0 = time.perf_counter()
        for lo in range(0, len(queries), batch):
            rows.append(index.search(queries[lo : lo + batch], k)[0])
        return np.concatenate(rows), time.perf_counter() - t0

    truth, _ = run(exact)
    exact_times = _timed(lambda: run(exact), seconds / 2, min_calls=1)
    out_rows = []
    hnsw = bundle.index("hnsw", ef=max(efs), threads=threads)
    for ef in efs:
        hnsw.ef = ef
        found, _ = run(hnsw)
        times = _timed(lambda h=hnsw: run(h), seconds, min_calls=1)
        hits = [len(np.intersect1d(a[a > 0], t[t > 0])) for a, t in zip(found, truth)]
        out_rows.append({
            "ef": ef,
            "effective_ef": max(ef, k),  # hnswlib needs ef >= k: the index raises it to k
            "queries_per_s": round(len(queries) / float(np.median(times)), 1),
            f"recall@{k}": round(float(np.mean(hits)) / k, 4),
        })
    return {
        "queries": int(len(queries)),
        "batch": batch,
        "threads": threads,
        "n_items": len(bundle.vocab),
        "by_ef": out_rows,
        "exact_queries_per_s": round(len(queries) / float(np.median(exact_times)), 1),
    }


def fold_states(events: Iterable[Event], policy: SessionPolicy) -> dict[str, SessionState]:
    """Each user's state after ``events``, folded in order with the worker's own fold."""
    states: dict[str, SessionState] = {}
    for e in events:
        states[e.user_id] = apply_event(states.get(e.user_id) or SessionState.empty(), e, policy)
    return states


def state_sizes(states: dict[str, SessionState]) -> dict[str, Any]:
    """Bytes of ``SessionState.to_bytes`` per user: mean, p50, p99, max, and the bound."""
    sizes = np.array([len(s.to_bytes()) for s in states.values()], dtype=float)
    if not sizes.size:
        return {"users": 0}
    return {
        "users": int(sizes.size),
        "mean_bytes": round(float(sizes.mean()), 1),
        "p50_bytes": float(np.median(sizes)),
        "p99_bytes": float(np.percentile(sizes, 99)),
        "max_bytes": int(sizes.max()),
        "mean_events": round(float(np.mean([len(s) for s in states.values()])), 2),
    }


def _disk_bytes(path: Path) -> tuple[int, int]:
    """(allocated bytes as `du` counts them, apparent bytes) of a directory tree."""
    used = apparent = 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            used += st.st_blocks * 512
            apparent += st.st_size
    return used, apparent


def rocksdb_size(states: Sequence[SessionState], n_users: int, workdir: str | Path | None = None) -> dict[str, Any]:
    """Write ``n_users`` states (cycling through the real ones) to RocksDB; its size on disk."""
    from ..runtime.stores import RocksDictStore

    if not states:
        return {"users": 0}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rocksdb-", dir=workdir) as tmp:
        store = RocksDictStore(Path(tmp) / "db")
        chunk = 20_000
        for lo in range(0, n_users, chunk):
            store.put_many((f"u{i:07d}", states[i % len(states)]) for i in range(lo, min(lo + chunk, n_users)))
        db = store._db  # noqa: SLF001 - flush and compact for the settled size
        db.flush(wait=True)
        db.compact_range(None, None)
        store.close()
        used, apparent = _disk_bytes(Path(tmp) / "db")
    per_user = used / n_users
    return {
        "users_written": n_users,
        "disk_bytes": used,
        "apparent_bytes": apparent,
        "bytes_per_user": round(per_user, 1),
        "bytes_per_1m_users": int(round(per_user * 1_000_000)),
        "value_bytes_mean": round(float(np.mean([len(s.to_bytes()) for s in states])), 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
