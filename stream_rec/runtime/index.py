"""Candidate indexes: top-k items by inner product with a session vector.

Implementations: :class:`HnswIndex` (hnswlib, approximate) for serving and
:class:`ExactIndex` (numpy, exact) as the reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["ExactIndex", "HnswIndex"]


# --------------------------------------------------------------------------- implementations
# Both take the model's item table ``vectors`` (n_items + 1, D): row 0 is "no item" and is
# never indexed, rows 1..n are items. Where fewer than k items are left after exclusion,
# the tail of a result row is padded with row 0 and score -inf (callers drop rows <= 0).

_PAD_SCORE = np.float32(-np.inf)
_EXACT_CHUNK_CELLS = 1 << 24  # bounds the (queries x items) score block to 64 MiB


def _check_holds(index: Any, table: np.ndarray, where: str) -> None:
    """The graph holds these item vectors (first, middle, last row): not another bundle's."""
    n = table.shape[0] - 1
    labels = sorted({1, (n + 1) // 2, n})
    try:
        stored = np.asarray(index.get_items(labels), np.float32)
    except RuntimeError as exc:
        raise DataError(f"HNSW index {where!r} lacks item rows {labels}: {exc}") from exc
    if stored.shape != (len(labels), table.shape[1]) or not np.allclose(
            stored, table[labels], atol=1e-5):
        raise DataError(f"HNSW index {where!r} does not hold this bundle's item vectors "
                        f"(rows {labels} differ)")


def _item_table(vectors: np.ndarray) -> np.ndarray:
    table = np.asarray(vectors)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise DataError(
            f"item vectors must be a 2-D array (n_items + 1, dim) with row 0 for 'no item'; "
            f"got shape {table.shape}"
        )
    table = np.ascontiguousarray(table, dtype=np.float32)
    if not np.isfinite(table[1:]).all():
        raise DataError("item vectors contain NaN or infinite values")
    return table


def _query_matrix(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[1] != dim:
        raise DataError(f"queries must have shape (batch, {dim}); got {q.shape}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise DataError("queries contain NaN or infinite values")
    return q


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer; got {k!r}")


class _Exclusions:
    """Per-query rows to leave out, as one sorted array of keys ``query * (n + 1) + row``."""

    def __init__(self, exclude: Sequence[np.ndarray] | None, batch: int, n_items: int) -> None:
        self.stride = n_items + 1
        self.sizes = np.zeros(batch, np.int64)
        if exclude is None:
            self.keys = np.zeros(0, np.int64)
            return
        if len(exclude) != batch:
            raise DataError(f"exclude must hold one array per query ({batch}); got {len(exclude)}")
        parts = []
        for b, rows in enumerate(exclude):
            if rows is None or len(rows) == 0:  # most sessions: nothing purchased, nothing to leave out
                continue
            r = np.unique(np.asarray(rows, dtype=np.int64).ravel())
            r = r[(r >= 1) & (r <= n_items)]  # rows the index does not hold cannot be returned
            self.sizes[b] = r.size
            parts.append(r + b * self.stride)
        self.keys = np.concatenate(parts) if parts else np.zeros(0, np.int64)

    @property
    def most(self) -> int:
        return int(self.sizes.max(initial=0))


def _top_k_kept(
    rows: np.ndarray, scores: np.ndarray, excl: _Exclusions, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From best-first candidates (B, f), the first k not excluded: (rows, scores, kept counts).

    Positions past a query's kept count hold row 0 and score -inf.
    """
    batch, f = rows.shape
    if not excl.keys.size and f >= k:  # nothing to leave out (every query of a scored replay)
        return rows[:, :k], scores[:, :k], np.full(batch, k, np.int64)
    if excl.keys.size:
        keys = rows + np.arange(batch, dtype=np.int64)[:, None] * excl.stride
        dropped = np.isin(keys, excl.keys)
        order = np.argsort(dropped, axis=1, kind="stable")  # kept first, best-first among them
        rows = np.take_along_axis(rows, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        kept = f - dropped.sum(axis=1)
    else:
        kept = np.full(batch, f, np.int64)
    out_rows = np.zeros((batch, k), np.int64)
    out_scores = np.full((batch, k), _PAD_SCORE, np.float32)
    m = min(k, f)
    valid = np.arange(m)[None, :] < kept[:, None]
    out_rows[:, :m] = np.where(valid, rows[:, :m], 0)
    out_scores[:, :m] = np.where(valid, scores[:, :m], _PAD_SCORE)
    return out_rows, out_scores, np.minimum(kept, k)


class ExactIndex:
    """Exact top-k by inner product (numpy): the reference every approximate index is held to."""

    def __init__(self, vectors: np.ndarray) -> None:
        self._items = _item_table(vectors)[1:]  # (n, D); item row r is self._items[r - 1]

    @property
    def dim(self) -> int:
        return int(self._items.shape[1])

    def __len__(self) -> int:
        return int(self._items.shape[0])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = _query_matrix(queries, self.dim)
        n, batch = len(self), q.shape[0]
        excl = _Exclusions(exclude, batch, n)
        if n == 0 or batch == 0:
            return np.zeros((batch, k), np.int64), np.full((batch, k), _PAD_SCORE, np.float32)
        # The exact top (k + most excluded) always holds k rows that are not excluded.
        fetch = min(n, k + excl.most)
        chunk = max(1, _EXACT_CHUNK_CELLS // n)
        rows, scores = [], []
        for lo in range(0, batch, chunk):
            block = q[lo : lo + chunk] @ self._items.T  # (b, n)
            top = np.argpartition(-block, fetch - 1, axis=1)[:, :fetch] if fetch < n else None
            if top is None:
                top = np.broadcast_to(np.arange(n), block.shape)
            s = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-s, axis=1, kind="stable")
            rows.append(np.take_along_axis(top, order, axis=1).astype(np.int64) + 1)
            scores.append(np.take_along_axis(s, order, axis=1))
        out_rows, out_scores, _ = _top_k_kept(np.concatenate(rows), np.concatenate(scores), excl, k)
        return out_rows, out_scores


class HnswIndex:
    """Approximate top-k by inner product with an HNSW graph (hnswlib, space "ip").

    Labels are the item rows 1..n. The graph is deterministic for a seed when built with
    ``threads=1``; more threads build faster but insert in a racy order.
    """

    def __init__(self, index: hnswlib.Index, ef: int = 128, threads: int = 1) -> None:
        """Wraps a ready hnswlib index; use :meth:`build` or :meth:`load` to get one."""
        self._index = index
        self._exact_fallback: ExactIndex | None = None
        self.ef = ef
        self.threads = threads

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        M: int = 16,
        ef_construction: int = 200,
        ef: int = 128,
        seed: int = 0,
        threads: int = 1,
    ) -> HnswIndex:
        table = _item_table(vectors)
        n, dim = table.shape[0] - 1, table.shape[1]
        for name, value in (("M", M), ("ef_construction", ef_construction), ("threads", threads)):
            if value < 1:
                raise ConfigError(f"HNSW {name} must be >= 1; got {value}")
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(
            max_elements=max(n, 1), M=M, ef_construction=ef_construction, random_seed=seed
        )
        if n:
            index.add_items(table[1:], np.arange(1, n + 1, dtype=np.int64), num_threads=threads)
        return cls(index, ef=ef, threads=threads)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the graph atomically (a reader never sees a half-written file)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            self._index.save_index(str(tmp))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        vectors_or_dim: np.ndarray | int,
        ef: int = 128,
        threads: int = 1,
    ) -> HnswIndex:
        """Loads a saved graph. Given the item vectors, also checks the graph holds them all."""
        if isinstance(vectors_or_dim, (int, np.integer)):
            dim, n_expected = int(vectors_or_dim), None
        else:
            shape = np.shape(vectors_or_dim)
            if len(shape) != 2:
                raise DataError(f"item vectors must be 2-D (n_items + 1, dim); got shape {shape}")
            dim, n_expected = int(shape[1]), int(shape[0]) - 1
        where = os.fspath(path)
        if not Path(path).is_file():
            raise DataError(f"HNSW index file {where!r} does not exist")
        index = hnswlib.Index(space="ip", dim=dim)
        try:
            index.load_index(where)
        except RuntimeError as exc:
            raise DataError(f"cannot load HNSW index {where!r} with dim {dim}: {exc}") from exc
        count = index.get_current_count()
        if n_expected is not None and count != n_expected:
            raise DataError(
                f"HNSW index {where!r} holds {count} items; the item vectors have {n_expected}"
            )
        if n_expected and not isinstance(vectors_or_dim, (int, np.integer)):
            _check_holds(index, _item_table(vectors_or_dim), where)
        return cls(index, ef=ef, threads=threads)

    @property
    def ef(self) -> int:
        """Search breadth; each search uses at least the number of rows it fetches."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        if value < 1:
            raise ConfigError(f"HNSW ef must be >= 1; got {value}")
        self._ef = int(value)

    @property
    def threads(self) -> int:
        """Threads for one batched query (hnswlib splits the batch)."""
        return self._threads

    @threads.setter
    def threads(self, value: int) -> None:
        if value < 1:
            raise ConfigError(f"HNSW threads must be >= 1; got {value}")
        self._threads = int(value)

    @property
    def dim(self) -> int:
        return int(self._index.dim)

    def __len__(self) -> int:
        return int(self._index.get_current_count())

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = _query_matrix(queries, self.dim)
        n, batch = len(self), q.shape[0]
        excl = _Exclusions(exclude, batch, n)
        if n == 0 or batch == 0:
            return np.zeros((batch, k), np.int64), np.full((batch, k), _PAD_SCORE, np.float32)
        # Over-fetch by the largest exclusion: hnswlib returns exactly `fetch` distinct rows
        # (or fails, see _knn), so k rows that are not excluded always remain.
        fetch = min(n, k + excl.most)
        rows, scores, _ = _top_k_kept(*self._knn(q, fetch), excl, k)
        return rows, scores

    def _knn(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k best rows per query (int64, best first) and their inner products (float32)."""
        self._index.set_ef(max(self._ef, k))  # hnswlib cannot return more than ef neighbours
        try:
            labels, dist = self._index.knn_query(q, k=k, num_threads=self._threads)
        except RuntimeError:
            # Some query reached fewer than k items: a sparse graph (small M, duplicate
            # vectors) can leave items unreachable at any ef. Those queries go exact.
            return self._knn_one_by_one(q, k)
        # "ip" distance is 1 - <q, v>
        return labels.astype(np.int64), np.subtract(1.0, dist, dtype=np.float32)

    def _knn_one_by_one(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.zeros((q.shape[0], k), np.int64)
        scores = np.zeros((q.shape[0], k), np.float32)
        for b in range(q.shape[0]):
            try:
                labels, dist = self._index.knn_query(q[b : b + 1], k=k, num_threads=1)
                rows[b], scores[b] = labels[0], 1.0 - dist[0]
            except RuntimeError:
                rows[b], scores[b] = self._exact().search(q[b : b + 1], k)
        return rows, scores

    def _exact(self) -> ExactIndex:
        """The exact fallback over the vectors the graph stores (built on first need)."""
        if self._exact_fallback is None:
            n = len(self)
            items = np.asarray(self._index.get_items(np.arange(1, n + 1), return_type="numpy"))
            self._exact_fallback = ExactIndex(
                np.vstack([np.zeros((1, self.dim), np.float32), items])
            )
        return self._exact_fallback
