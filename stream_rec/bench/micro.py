"""Microbenchmarks: the encoder alone, the index alone, and the size of session state.

- :func:`encoder_micro`: sessions/s of ``SessionEncoder.encode`` by batch size, at the
  model's full length (L = max_len) and at realistic lengths (real sessions of the run,
  a batch padded to its longest); latency of a batch of one; featurize cost per session.
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

from ..events import Event
from ..features import MAX_QUERY_TOKENS, ModelInputs, featurize
from ..session import SessionPolicy, SessionState, apply_event

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


def _full_length_inputs(b: int, max_len: int, n_items: int, query_buckets: int, seed: int) -> ModelInputs:
    """b sessions of exactly max_len events: random items, types and query buckets."""
    rng = np.random.default_rng(seed)
    types = rng.integers(1, 4, (b, max_len))
    items = np.where(types == 2, 0, rng.integers(1, n_items + 1, (b, max_len)))
    queries = np.where((types == 2)[..., None], rng.integers(1, query_buckets, (b, max_len, MAX_QUERY_TOKENS)), 0)
    return ModelInputs(items=items.astype(np.int64), types=types.astype(np.int64), queries=queries.astype(np.int64))


def encoder_micro(
    bundle: Any,
    encoder: Any,
    sequences: Sequences,
    batches: Sequence[int] = (1, 16, 64, 256, 1024),
    seconds: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Sessions/s by batch size at L = max_len and at realistic lengths; batch-of-1 latency."""
    rng = np.random.default_rng(seed)
    max_len, n_items, qb = bundle.max_len, len(bundle.vocab), bundle.query_buckets
    lengths = np.array([min(len(s[0]), max_len) for s in sequences]) if len(sequences) else np.array([1])
    rows: list[dict[str, Any]] = []
    for b in batches:
        full = _full_length_inputs(b, max_len, n_items, qb, seed)
        pick = rng.integers(0, len(sequences), b) if len(sequences) else np.zeros(0, np.int64)
        real_seqs = [sequences[i] for i in pick]
        real = featurize(real_seqs, bundle.vocab, qb, max_len) if real_seqs else full
        t_full = _timed(lambda x=full: encoder.encode(x), seconds)
        t_real = _timed(lambda x=real: encoder.encode(x), seconds)
        rows.append({
            "batch": b,
            "sessions_per_s_L_max": round(b / float(np.median(t_full)), 1),
            "sessions_per_s_realistic": round(b / float(np.median(t_real)), 1),
            "realistic_padded_len": int(real.items.shape[1]),
            "ms_per_batch_L_max": round(float(np.median(t_full)) * 1000, 3),
        })
    one_full = _timed(lambda: encoder.encode(_full_length_inputs(1, max_len, n_items, qb, seed)), seconds)
    seq1 = [sequences[int(np.argmin(np.abs(lengths - np.median(lengths))))]] if len(sequences) else []
    one_real = _timed(lambda: encoder.encode(featurize(seq1, bundle.vocab, qb, max_len)), seconds) if seq1 else one_full
    feat_b = min(256, max(len(sequences), 1))
    feat_seqs = [sequences[i % max(len(sequences), 1)] for i in range(feat_b)] if len(sequences) else []
    feat = _timed(lambda: featurize(feat_seqs, bundle.vocab, qb, max_len), seconds / 2) if feat_seqs else [0.0]
    return {
        "by_batch": rows,
        "batch1_latency_ms": {
            "L_max": {"p50": round(float(np.percentile(one_full, 50)) * 1000, 3),
                      "p99": round(float(np.percentile(one_full, 99)) * 1000, 3)},
            "realistic": {"p50": round(float(np.percentile(one_real, 50)) * 1000, 3),
                          "p99": round(float(np.percentile(one_real, 99)) * 1000, 3),
                          "length": int(len(seq1[0][0])) if seq1 else max_len},
        },
        "featurize_us_per_session": round(float(np.median(feat)) / max(len(feat_seqs), 1) * 1e6, 2),
        "realistic_length": {"mean": round(float(lengths.mean()), 2), "p50": float(np.median(lengths)),
                             "p99": float(np.percentile(lengths, 99)), "max": int(lengths.max())},
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
    from ..stores import RocksDictStore

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
