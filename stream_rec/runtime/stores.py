"""Session stores: where per-user :class:`SessionState` lives between events.

Implementations of :class:`stream_rec.core.seams.SessionStore`: :class:`MemoryStore` (tests,
offline evaluation), :class:`RocksDictStore` (RocksDB via rocksdict, for replay/backfill without
Kafka), and :class:`stream_rec.runtime.partitioned_store.PartitionStore` (one partition of the
direct engine's tables). The faust engine keeps state in a faust Table on the same RocksDB
(``rocksdb://`` store), adapted in ``topologies/worker.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ..core.session import SessionState

__all__ = ["MemoryStore", "RocksDictStore"]


class MemoryStore:
    """A dict of encoded states (encoding on put keeps it honest about what survives)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def get(self, user_id: str) -> SessionState | None:
        raw = self._data.get(user_id)
        return None if raw is None else SessionState.from_bytes(raw)

    def put(self, user_id: str, state: SessionState) -> None:
        self._data[user_id] = state.to_bytes()

    def delete(self, user_id: str) -> None:
        self._data.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._data)

    def users(self) -> Iterator[str]:
        return iter(list(self._data))

    def size_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self._data.items())

    def close(self) -> None:
        pass


class RocksDictStore:
    """Session states in a RocksDB database (rocksdict), keys are UTF-8 user ids."""

    def __init__(self, path: str | Path) -> None:
        from rocksdict import Options, Rdict

        Path(path).mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db = Rdict(str(path), options=opts)
        self.path = Path(path)

    def get(self, user_id: str) -> SessionState | None:
        raw = self._db.get(user_id.encode())
        return None if raw is None else SessionState.from_bytes(raw)

    def put(self, user_id: str, state: SessionState) -> None:
        self._db[user_id.encode()] = state.to_bytes()

    def put_many(self, items: Iterable[tuple[str, SessionState]]) -> None:
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        for user_id, state in items:
            wb.put(user_id.encode(), state.to_bytes())
        self._db.write(wb)

    def delete(self, user_id: str) -> None:
        del self._db[user_id.encode()]

    def __len__(self) -> int:
        return sum(1 for _ in self._db.keys())

    def users(self) -> Iterator[str]:
        return (k.decode() for k in self._db.keys())  # type: ignore[union-attr]  # raw mode: bytes

    def close(self) -> None:
        self._db.close()
