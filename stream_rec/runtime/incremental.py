"""The incremental session encoder: per-user caches, so an event encodes one position.

:class:`IncrementalEncoder` runs a bundle's ``encoder_cache.onnx`` and ``encoder_step.onnx``
(:mod:`stream_rec.model.incremental` exports them and states their contract). For each user it
keeps, in memory, the cache of every position of the session it last encoded and the exact
model inputs of those positions. A session whose inputs are that prefix plus one event is a
*step* (one position encoded against the cache); the same inputs again (a redelivery) reuse the
cached vector; anything else is a *miss* and is encoded in full, which also refills the cache.
Because a hit is decided by the inputs themselves, never by a version counter, a restart, a
rebalance, a session gap, a sliding 50-event window or a model swap (a new encoder, an empty
cache) can only cost a miss, never a wrong vector.

Memory is bounded by ``cache_bytes`` (least recently used users evicted first).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.features import ModelInputs
from ..errors import BundleError
from .encoder import OnnxEncoder, open_session

__all__ = ["IncrementalEncoder"]

_TOKENS = 5  # item row, type, 3 query buckets per position
_TOKEN_BYTES = _TOKENS * 8
_USER_BYTES = 600  # a cached user's Python objects and vector, beyond its positions
_ROW_OVERHEAD = 56  # a position's share beyond its slab row: its inputs (40 B) and row number


class _Entry:
    __slots__ = ("tokens", "rows", "n", "vector")

    def __init__(self, tokens: bytes, rows: np.ndarray, n: int, vector: np.ndarray):
        self.tokens = tokens  # the n positions' inputs, int64 (n, 5) as bytes
        self.rows = rows  # (max_len,) int64 slab rows of positions 0..n-1
        self.n = n
        self.vector = vector  # (D,) the session vector of these n positions


class IncrementalEncoder:
    """A session encoder with a keyed path (:meth:`encode_keyed`) that reuses per-user caches.

    ``encode``/``encode_sessions`` (no keys) run ``full`` (the bundle's ``encoder.onnx``) when
    given, else the cache graph. ``max_len`` is the model's. ``cache_bytes`` bounds the caches:
    the slabs are sized from it (allocated lazily by the OS, so memory grows as users come) and
    least recently used users are evicted when their rows run out.
    """

    repeat = False

    def __init__(
        self,
        cache_path: str | os.PathLike[str],
        step_path: str | os.PathLike[str],
        *,
        max_len: int,
        cache_bytes: int,
        providers: str = "auto",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        full: OnnxEncoder | None = None,
        max_batch: int = 64,
    ):
        threads = (intra_op_threads, inter_op_threads)
        self._cache, self.providers = open_session(cache_path, providers, *threads)
        self._step, _ = open_session(step_path, providers, *threads)
        cache_in = [i.name for i in self._cache.get_inputs()]
        self.parts = [o.name for o in self._cache.get_outputs()][1:]
        step_in = [i.name for i in self._step.get_inputs()]
        step_out = [o.name for o in self._step.get_outputs()]
        if cache_in != ["items", "types", "queries"] or not self.parts:
            raise BundleError(
                f"{os.fspath(cache_path)!r} must take items, types, queries and answer "
                f"session and the cache parts; got {cache_in} -> {self.parts}"
            )
        slabs = [f"slab_{p}" for p in self.parts]  # the step may skip a part it never reads
        if (
            step_in[:5] != ["item", "type", "query", "idx", "past_len"]
            or not set(step_in[5:]) <= set(slabs)
            or step_out[1:] != self.parts
        ):
            raise BundleError(
                f"{os.fspath(step_path)!r} does not match {os.fspath(cache_path)!r}'s cache "
                f"parts {self.parts}: inputs {step_in}, outputs {step_out}"
            )
        # One click, encoded in full: the graphs' sizes.
        one = np.ones((1, 1), np.int64)
        try:
            session, *parts = self._cache.run(
                None,
                {"items": one, "types": one, "queries": np.zeros((1, 1, _TOKENS - 2), np.int64)},
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise BundleError(
                f"incremental encoder {os.fspath(cache_path)!r}: probe failed: {exc}"
            ) from exc
        self._dim = int(session.shape[1])
        widths = [int(p.shape[2]) for p in parts]
        if full is not None and full.dim != self._dim:
            raise BundleError(
                f"encoder.onnx outputs dim {full.dim}; {Path(cache_path).name} {self._dim}"
            )
        self.full, self.max_len, self.cache_bytes, self.max_batch = (
            full,
            max_len,
            cache_bytes,
            max_batch,
        )
        self.row_bytes = 4 * sum(widths) + _ROW_OVERHEAD
        capacity = max(2, cache_bytes // self.row_bytes)
        # Row 0 stays zero: padding positions of a step point at it.
        self._slabs = [np.zeros((capacity, w), np.float32) for w in widths]
        self._free = np.arange(capacity - 1, 0, -1, dtype=np.int64)  # a stack of free rows
        self._top = capacity - 1
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._counts = {"steps": 0, "repeats": 0, "misses": 0, "evictions": 0}
        self._step_feed = {
            f"slab_{p}": slab for p, slab in zip(self.parts, self._slabs) if f"slab_{p}" in step_in
        }

    # ------------------------------------------------------------------ SessionEncoder
    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, inputs: ModelInputs) -> np.ndarray:
        return self.encode_sessions(inputs)[0]

    def encode_sessions(self, inputs: ModelInputs) -> tuple[np.ndarray, None]:
        if self.full is not None:
            return self.full.encode(inputs), None
        return self._run_cache(inputs)[0], None

    def warm_up(self, batch: int) -> None:
        """Run both graphs once at their largest shapes (``batch`` sessions of ``max_len``), so
        ONNX Runtime's memory arenas are sized at start, as :meth:`Recommender.warm_up` does for
        the full encoder; the cache is left empty."""
        full = np.ones((batch, self.max_len), np.int64)
        probe = ModelInputs(full, full, np.zeros((batch, self.max_len, _TOKENS - 2), np.int64))
        self._run_cache(probe)
        idx = np.zeros((batch, self.max_len - 1), np.int64)
        one = np.ones(batch, np.int64)
        self._step.run(
            None,
            {
                "item": one,
                "type": one,
                "query": probe.queries[:, 0],
                "idx": idx,
                "past_len": np.full(batch, self.max_len - 1, np.int64),
                **self._step_feed,
            },
        )

    # ------------------------------------------------------------------ keyed path
    def encode_keyed(self, keys: Sequence[str], inputs: ModelInputs) -> np.ndarray:
        """(B, D) session vectors of left-padded ``inputs``, row b being user ``keys[b]``'s whole
        current session (as ``featurize`` gives it); updates the users' caches."""
        b_n, length = inputs.items.shape
        out = np.empty((b_n, self._dim), np.float32)
        if b_n == 0:
            return out
        tokens = np.concatenate(
            (inputs.items[..., None], inputs.types[..., None], inputs.queries), axis=2
        )
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)  # (B, L, 5)
        real = (inputs.types != 0).sum(axis=1).tolist()  # left padding has type 0
        steps: list[int] = []
        misses: list[int] = []
        seen: set[str] = set()
        entries = self._entries
        for b, key in enumerate(keys):
            m = real[b]
            entry = entries.get(key) if key not in seen else None
            seen.add(key)
            if entry is None or m == 0:
                misses.append(b)
            elif entry.n == m - 1 and entry.tokens == tokens[b, length - m : length - 1].tobytes():
                steps.append(b)
                entries.move_to_end(key)
            elif entry.n == m and entry.tokens == tokens[b, length - m :].tobytes():
                out[b] = entry.vector
                entries.move_to_end(key)
                self._counts["repeats"] += 1
            else:
                misses.append(b)
        if steps:
            self._take_steps(keys, tokens, steps, out)
        if misses:
            self._encode_misses(keys, inputs, tokens, real, misses, out)
        return out

    def _take_steps(
        self, keys: Sequence[str], tokens: np.ndarray, rows: list[int], out: np.ndarray
    ) -> None:
        entries = [self._entries[keys[b]] for b in rows]
        lens = np.fromiter((e.n for e in entries), np.int64, len(rows))
        idx = np.zeros((len(rows), int(lens.max())), np.int64)  # padding -> row 0
        for i, e in enumerate(entries):
            idx[i, : e.n] = e.rows[: e.n]
        new = tokens[rows, -1]  # (S, 5) the newest position of each
        session, *parts = self._step.run(
            None,
            {
                "item": np.ascontiguousarray(new[:, 0]),
                "type": np.ascontiguousarray(new[:, 1]),
                "query": np.ascontiguousarray(new[:, 2:]),
                "idx": idx,
                "past_len": lens,
                **self._step_feed,
            },
        )
        out[rows] = session
        self._counts["steps"] += len(rows)
        slots = self._allocate(len(rows))
        if slots is None:
            return
        for slab, part in zip(self._slabs, parts):
            slab[slots] = part
        for i, (b, e) in enumerate(zip(rows, entries)):
            if self._entries.get(keys[b]) is not e:  # evicted to make room
                self._release(slots[i : i + 1])
                continue
            e.rows[e.n] = slots[i]
            e.n += 1
            e.tokens += new[i].tobytes()
            e.vector = session[i].copy()

    def _encode_misses(
        self,
        keys: Sequence[str],
        inputs: ModelInputs,
        tokens: np.ndarray,
        real: list[int],
        rows: list[int],
        out: np.ndarray,
    ) -> None:
        from ..core.scoring import length_chunks

        lengths = np.array([max(real[b], 1) for b in rows], np.int64)
        order = np.argsort(lengths, kind="stable")
        full_len = inputs.items.shape[1]
        results: dict[
            int, tuple[np.ndarray, list[np.ndarray], int]
        ] = {}  # row -> session, parts, offset
        for chunk in length_chunks(lengths[order], self.max_batch):
            picked = [rows[i] for i in order[chunk]]
            longest = int(lengths[order[chunk]].max())
            cut = slice(full_len - longest, full_len)
            part = ModelInputs(
                inputs.items[picked, cut], inputs.types[picked, cut], inputs.queries[picked, cut]
            )
            session, *parts = self._run_cache(part)
            out[picked] = session
            for i, b in enumerate(picked):
                results[b] = (session[i], [p[i] for p in parts], longest - real[b])
        self._counts["misses"] += len(rows)
        for b in rows:  # batch order: a user's later row is stored last
            m = real[b]
            old = self._entries.pop(keys[b], None)
            if old is not None:
                self._release(old.rows[: old.n])
            if m == 0:
                continue
            slots = self._allocate(m)
            if slots is None:
                continue
            vector, parts, start = results[b]
            for slab, values in zip(self._slabs, parts):
                slab[slots] = values[start:]
            own = np.zeros(self.max_len, np.int64)
            own[:m] = slots
            self._entries[keys[b]] = _Entry(
                tokens[b, full_len - m :].tobytes(), own, m, vector.copy()
            )

    def _run_cache(self, inputs: ModelInputs) -> list[np.ndarray]:
        return self._cache.run(
            None,
            {
                "items": np.ascontiguousarray(inputs.items, dtype=np.int64),
                "types": np.ascontiguousarray(inputs.types, dtype=np.int64),
                "queries": np.ascontiguousarray(inputs.queries, dtype=np.int64),
            },
        )

    def _allocate(self, n: int) -> np.ndarray | None:
        """``n`` free slab rows, evicting least recently used users as needed (None: more
        than the whole cache)."""
        while self._top < n and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._release(entry.rows[: entry.n])
            self._counts["evictions"] += 1
        if self._top < n:
            return None
        self._top -= n
        return self._free[self._top : self._top + n].copy()

    def _release(self, rows: np.ndarray) -> None:
        self._free[self._top : self._top + len(rows)] = rows
        self._top += len(rows)

    def forget(self, key: str) -> None:
        """Drop one user's cache (the next event is a miss)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._release(entry.rows[: entry.n])

    def clear(self) -> None:
        for key in list(self._entries):
            self.forget(key)

    def stats(self) -> dict[str, Any]:
        """Users and positions cached, their bytes and the bound, and steps / repeats / misses /
        evictions since start."""
        positions = len(self._free) - self._top
        return {
            "users": len(self._entries),
            "positions": positions,
            "bytes": positions * self.row_bytes + len(self._entries) * _USER_BYTES,
            "limit_bytes": self.cache_bytes,
            **self._counts,
        }
