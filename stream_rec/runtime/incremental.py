"""The incremental session encoder: per-user caches, so an event encodes one position.

:class:`IncrementalEncoder` runs a bundle's ``encoder_step.onnx``
(:mod:`stream_rec.model.incremental` exports it and states its contract). For each user it keeps
the cache of every position of the session it last encoded and the exact model inputs of those
positions. A session whose inputs extend that prefix encodes only its new events; the same inputs
again (a redelivery) reuse the cached vector; anything else encodes from the first event, which
also refills the cache. Several rows of one user in a batch (its successive states, coalescing
off) ride on its last row: one row of the graph answers the vector after each new event. A hit is
decided by comparing the inputs themselves, never by a version counter or a hash, so a restart, a
rebalance, a session gap, a sliding 50-event window or a model swap (a new encoder, an empty
cache) can only cost a full encoding, never a wrong vector.

Everything per user lives in arrays (a slot per user: its slab rows, inputs, length and last
vector), so a batch costs a few numpy calls, not Python work per event. Memory is bounded by
``cache_bytes``: user slots and slab rows (one slab per cache part, a row per position) are sized
from it, and the least recently used users are evicted when either runs out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.features import ModelInputs
from ..errors import BundleError
from .encoder import open_session
from .step_cache import NO_SLOT as _NO_SLOT
from .step_cache import StepCache

__all__ = ["IncrementalEncoder"]

_INPUTS = ["items", "types", "queries", "new_len", "idx", "past_len"]


class IncrementalEncoder:
    """A session encoder with a keyed path (:meth:`encode_keyed`) that reuses per-user caches.

    ``encode``/``encode_sessions`` (no keys) run the step graph from the first event, so the
    recommender's warm-up (64 sessions of ``max_len``) sizes its memory arena. ``max_len`` is the
    model's.
    """

    repeat = False

    def __init__(
        self,
        step_path: str | os.PathLike[str],
        *,
        max_len: int,
        cache_bytes: int,
        providers: str = "auto",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        max_batch: int = 64,
    ):
        self._step, self.providers = open_session(
            step_path, providers, intra_op_threads, inter_op_threads
        )
        inputs = self._step.get_inputs()
        names = [i.name for i in inputs]
        self.parts = [o.name for o in self._step.get_outputs()][1:]
        slab_names = [f"slab_{p}" for p in self.parts]  # the graph may skip a part it never reads
        if names[:6] != _INPUTS or not self.parts or not set(names[6:]) <= set(slab_names):
            raise BundleError(
                f"{os.fspath(step_path)!r} is not an incremental encoder: inputs {names}, "
                f"cache parts {self.parts}"
            )
        self.max_len, self.cache_bytes, self.max_batch = max_len, cache_bytes, max_batch
        one = np.ones((1, 1), np.int64)
        empty = {i.name: np.zeros((1, int(i.shape[1])), np.float32) for i in inputs[6:]}
        try:  # one click from scratch: the graph's sizes
            session, *parts = self._run(
                one,
                one,
                np.zeros((1, 1, 3), np.int64),
                one[0],
                np.zeros_like(one),
                np.zeros(1, np.int64),
                empty,
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise BundleError(
                f"incremental encoder {os.fspath(step_path)!r}: probe failed: {exc}"
            ) from exc
        self._dim = int(session.shape[2])
        self.cache = StepCache([int(p.shape[2]) for p in parts], self._dim, max_len, cache_bytes)
        self._feed = {s: slab for s, slab in zip(slab_names, self.cache.slabs) if s in names}
        self._counts = {"steps": 0, "repeats": 0, "misses": 0, "positions": 0}

    # ------------------------------------------------------------------ SessionEncoder
    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, inputs: ModelInputs) -> np.ndarray:
        return self.encode_sessions(inputs)[0]

    def encode_sessions(self, inputs: ModelInputs) -> tuple[np.ndarray, None]:
        aligned, real = _aligned(inputs)
        out = np.empty((len(real), self._dim), np.float32)
        everyone = np.arange(len(real))
        self._encode(
            aligned, everyone, np.zeros(len(real), np.int64), real, everyone, real - 1, out
        )
        return out, None

    # ------------------------------------------------------------------ keyed path
    def encode_keyed(self, keys: Sequence[str], inputs: ModelInputs) -> np.ndarray:
        """(B, D) session vectors of left-padded ``inputs``, row b being user ``keys[b]``'s whole
        current session (as ``featurize`` gives it); updates the users' caches."""
        n_rows = len(keys)
        out = np.empty((n_rows, self._dim), np.float32)
        if not n_rows:
            return out
        aligned, m = _aligned(inputs)  # (B, L, 5) from the first event; (B,) lengths
        self.cache.clock += 1
        last = {k: b for b, k in enumerate(keys)}  # each user's last row leads
        lead = np.fromiter((last[k] for k in keys), np.int64, n_rows)
        leads = np.flatnonzero(lead == np.arange(n_rows))
        get = self.cache.slot.get
        slots = np.fromiter((get(keys[b], _NO_SLOT) for b in leads.tolist()), np.int64, len(leads))
        known = slots != _NO_SLOT
        n = np.where(known, self.cache.n[np.maximum(slots, 0)], 0)
        n = np.where(n <= m[leads], n, 0)  # a cache longer than the session: no use
        self.cache.used[slots[known]] = self.cache.clock  # not evicted while this batch runs
        width = int(n.max()) if len(n) else 0
        if width:  # the cached inputs must equal the session's first n events
            j = np.arange(width)
            same = (self.cache.tokens[np.maximum(slots, 0), :width] == aligned[leads, :width]).all(
                axis=2
            )
            n = np.where((same | (j >= n[:, None])).all(axis=1), n, 0)
        repeat = (n > 0) & (n == m[leads])
        if repeat.any():
            out[leads[repeat]] = self.cache.vectors[slots[repeat]]
            self._counts["repeats"] += int(repeat.sum())
        # Riders: earlier rows of a user that are prefixes of its last row, past its cache.
        riders = np.flatnonzero(lead != np.arange(n_rows))
        n_of = np.zeros(n_rows, np.int64)
        n_of[leads] = np.where(repeat, m[leads], n)  # a repeat lead answers no rider
        rides = np.zeros(len(riders), bool)
        if len(riders):
            by = lead[riders]
            width = int(m[riders].max())
            j = np.arange(width)
            same = (aligned[riders, :width] == aligned[by, :width]).all(axis=2) | (
                j >= m[riders][:, None]
            )
            rides = same.all(axis=1) & (m[riders] <= m[by]) & (m[riders] > n_of[by])
        # Jobs: each non-repeat lead (cached), each non-riding earlier row (from scratch, uncached).
        go = leads[~repeat]
        alone = riders[~rides]
        job_rows = np.concatenate((go, alone))
        job_n = np.concatenate((n[~repeat], np.zeros(len(alone), np.int64)))
        job_slot = np.concatenate((slots[~repeat], np.full(len(alone), _NO_SLOT)))
        job_store = np.concatenate((np.ones(len(go), bool), np.zeros(len(alone), bool)))
        # Which job answers each row, at which new event.
        job_of = np.full(n_rows, -1, np.int64)
        job_of[job_rows] = np.arange(len(job_rows))
        answer_rows = np.concatenate((job_rows, riders[rides]))
        answer_job = np.concatenate((np.arange(len(job_rows)), job_of[lead[riders[rides]]]))
        answer_at = m[answer_rows] - job_n[answer_job] - 1
        steps = int((job_n[: len(go)] > 0).sum()) + int((n_of[lead[riders[rides]]] > 0).sum())
        self._counts["steps"] += steps
        self._counts["misses"] += len(answer_rows) - steps
        self._encode(
            aligned,
            job_rows,
            job_n,
            m[job_rows],
            answer_job,
            answer_at,
            out,
            answer_rows,
            (keys, job_slot, job_store),
        )
        return out

    # ------------------------------------------------------------------ the graph
    def _encode(
        self,
        aligned: np.ndarray,
        rows: np.ndarray,
        past: np.ndarray,
        total: np.ndarray,
        answer_job: np.ndarray,
        answer_at: np.ndarray,
        out: np.ndarray,
        answer_rows: np.ndarray | None = None,
        cache: tuple[Any, ...] | None = None,
    ) -> None:
        """Run jobs (batch ``rows``: ``past`` cached positions, ``total`` events) in chunks of
        similar sizes; ``out[answer_rows[i]]`` = job ``answer_job[i]``'s vector after its new
        event ``answer_at[i]``; with ``cache`` (keys, slots, store?) keep their positions."""
        if not len(rows):
            return
        answer_rows = np.arange(len(rows)) if answer_rows is None else answer_rows
        news = total - past
        session = np.empty((len(rows), int(news.max()), self._dim), np.float32)
        ran: list[tuple[np.ndarray, list[np.ndarray]]] = []
        for jobs in _chunks(news, past, self.max_batch * self.max_len):
            t_max, p_max = int(news[jobs].max()), max(1, int(past[jobs].max()))
            t = np.arange(t_max)
            src = np.minimum(past[jobs, None] + t, aligned.shape[1] - 1)  # (c, T): the new events
            new = aligned[rows[jobs, None], src] * (t < news[jobs, None])[..., None]  # (c, T, 5)
            idx = np.zeros((len(jobs), p_max), np.int64)  # padding: slab row 0
            if cache is not None:
                slots = cache[1][jobs]
                take = (slots != _NO_SLOT)[:, None] & (np.arange(p_max) < past[jobs, None])
                idx = np.where(take, self.cache.rows[np.maximum(slots, 0), :p_max], 0)
            out_session, *parts = self._run(
                new[..., 0], new[..., 1], new[..., 2:], news[jobs], idx, past[jobs], self._feed
            )
            session[jobs, :t_max] = out_session
            ran.append((jobs, parts))
            self._counts["positions"] += int(news[jobs].sum())
        out[answer_rows] = session[answer_job, answer_at]
        if cache is not None:  # after every chunk ran: storing may evict rows a later chunk reads
            keys, slots, store = cache
            self.cache.store(keys, rows, slots, store, past, total, aligned, session, ran)

    def _run(
        self,
        items: np.ndarray,
        types: np.ndarray,
        queries: np.ndarray,
        new_len: np.ndarray,
        idx: np.ndarray,
        past_len: np.ndarray,
        slabs: dict[str, np.ndarray],
    ) -> list[np.ndarray]:
        return list(
            self._step.run(
                None,
                {
                    "items": np.ascontiguousarray(items, dtype=np.int64),
                    "types": np.ascontiguousarray(types, dtype=np.int64),
                    "queries": np.ascontiguousarray(queries, dtype=np.int64),
                    "new_len": new_len.astype(np.int64),
                    "idx": idx,
                    "past_len": past_len.astype(np.int64),
                    **slabs,
                },
            )
        )

    # ------------------------------------------------------------------ the cache
    def forget(self, key: str) -> None:
        """Drop one user's cache (the next event encodes from the first)."""
        self.cache.forget(key)

    def clear(self) -> None:
        self.cache.clear()

    def stats(self) -> dict[str, Any]:
        """The cache's figures (:meth:`StepCache.stats`); since start: sessions answered by a
        step, a repeat or from scratch (misses), and new positions encoded."""
        return {**self.cache.stats(), **self._counts}


def _aligned(inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray]:
    """(B, L, 5) int32 inputs from each session's first event (zeros after its last), and each
    row's length (left padding has type 0; an all-padding row counts as its last position)."""
    tokens = np.concatenate(
        (inputs.items[..., None], inputs.types[..., None], inputs.queries), axis=2
    )
    b, length = inputs.items.shape
    real = np.maximum((inputs.types != 0).sum(axis=1), 1)
    j = np.arange(length)
    src = np.minimum(length - real[:, None] + j, length - 1)  # (B, L)
    aligned = tokens[np.arange(b)[:, None], src].astype(np.int32) * (j < real[:, None])[..., None]
    return aligned, real.astype(np.int64)


# Bucket edges: new events exact up to 4, then steps of about a third; cached positions in
# three bands. A bucket is one call (or more when it exceeds the cell budget).
_NEW_EDGES = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48])
_PAST_EDGES = np.array([4, 12])


def _chunks(news: np.ndarray, pasts: np.ndarray, cells: int) -> list[np.ndarray]:
    """Job indices in calls: by bucket of new events and of cached positions, each call at
    most ``cells`` new events padded (the full encoder's largest batch, 64 x 50: one event per
    session goes in calls of up to 3,200). Padding within a bucket costs less than a call
    (~0.3 ms on one core: ~30 new events or ~3,000 cached positions)."""
    bucket = np.searchsorted(_NEW_EDGES, news) * 8 + np.searchsorted(_PAST_EDGES, pasts)
    order = np.lexsort((news, bucket))
    cuts = np.flatnonzero(np.diff(bucket[order])) + 1
    out: list[np.ndarray] = []
    for group in np.split(order, cuts):
        per_call = max(1, cells // int(news[group].max()))
        out.extend(group[i : i + per_call] for i in range(0, len(group), per_call))
    return out
