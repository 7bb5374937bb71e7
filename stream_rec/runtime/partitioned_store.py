"""Per-partition RocksDB session tables for the direct worker (and a SessionStore view of one).

Layout and changelog format match faust's table (key = user id bytes, value =
``SessionState.to_bytes()``, changelog topic ``<app_id>-sessions-changelog``,
one RocksDB per partition), so a partition's state can be rebuilt from the
changelog whichever engine wrote it. Each partition's database also records the
last changelog offset it contains, so a restart replays only the changelog tail.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager

from ..core.session import SessionState, state_last_ts

_WRITE_BUFFER_BYTES = 8 << 20  # one memtable's most; the budget below caps them all together
DEFAULT_MEMORY_BYTES = 64 << 20

__all__ = ["PartitionedSessionDB", "PartitionStore", "OFFSET_KEY"]

# Not a user id: user ids are UTF-8 text and never start with a NUL byte.
OFFSET_KEY = b"\x00stream-rec:changelog-offset"
_OFFSET = struct.Struct("<q")


class PartitionedSessionDB:
    """One RocksDB per partition, all inside one memory budget.

    RocksDB's own defaults let memory grow with the data: 64 MB memtables per database
    and a block cache per database. Here every partition's database shares one LRU
    block cache of ``memory_bytes`` and a write-buffer manager that charges the
    memtables to that same cache (at most half of it), so the session tables of a
    worker hold at most about ``memory_bytes`` whatever the number of users or
    partitions (see docs/benchmarks.md, "Memory over 10 minutes").
    """

    def __init__(self, root: str | Path, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        if memory_bytes < 4 << 20:
            raise ValueError(
                f"the state memory budget must be at least 4 MB; got {memory_bytes} bytes")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._dbs: dict[int, Rdict] = {}
        self.memory_bytes = memory_bytes
        self._cache = Cache(memory_bytes)
        self._write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            memory_bytes // 2, False, self._cache
        )

    def path(self, partition: int) -> Path:
        return self.root / f"sessions-{partition}.rocksdb"

    def open(self, partition: int) -> Rdict:
        db = self._dbs.get(partition)
        if db is None:
            opts = Options(raw_mode=True)
            opts.create_if_missing(True)
            opts.set_write_buffer_size(min(_WRITE_BUFFER_BYTES, self.memory_bytes // 8))
            opts.set_max_write_buffer_number(2)
            opts.set_write_buffer_manager(self._write_buffers)
            table = BlockBasedOptions()
            table.set_block_cache(self._cache)
            table.set_cache_index_and_filter_blocks(True)
            opts.set_block_based_table_factory(table)
            db = self._dbs[partition] = Rdict(str(self.path(partition)), options=opts)
        return db

    def sizes(self) -> dict[int, tuple[int, int]]:
        """Per open partition: (estimated keys, bytes of its SST files), RocksDB's own counts."""
        return {p: (db.property_int_value("rocksdb.estimate-num-keys") or 0,
                    db.property_int_value("rocksdb.total-sst-files-size") or 0)
                for p, db in self._dbs.items()}

    def memory_usage(self) -> int:
        """Bytes held by the shared block cache, memtables included (they are charged to it)."""
        return int(self._cache.get_usage())

    def close(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()

    def close_all(self) -> None:
        for p in list(self._dbs):
            self.close(p)

    def drop(self, partition: int) -> None:
        self.close(partition)
        shutil.rmtree(self.path(partition), ignore_errors=True)

    def changelog_offset(self, partition: int) -> int:
        """The last changelog offset applied to this partition's database, -1 if none."""
        raw = self.open(partition).get(OFFSET_KEY)
        return -1 if raw is None else _OFFSET.unpack(raw)[0]

    def get_many(self, partition: int, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.open(partition).get(list(keys))  # type: ignore[return-value]

    def write(
        self,
        partition: int,
        items: Iterable[tuple[bytes, bytes | None]],
        changelog_offset: int | None = None,
    ) -> None:
        """Apply (key, value or None to delete) atomically, with the new changelog offset."""
        wb = WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        if changelog_offset is not None:
            wb.put(OFFSET_KEY, _OFFSET.pack(changelog_offset))
        self.open(partition).write(wb)

    def idle_keys(self, partition: int, before_ms: int, limit: int = 10_000) -> list[bytes]:
        """Up to ``limit`` keys of the partition whose state's last event is before
        ``before_ms`` (read from each state's header; unreadable states are left alone)."""
        out: list[bytes] = []
        for key, value in self.open(partition).items():
            if not (isinstance(key, bytes) and isinstance(value, bytes)) or key.startswith(b"\x00"):
                continue
            last_ts = state_last_ts(value)
            if last_ts is not None and last_ts < before_ms:
                out.append(key)
                if len(out) >= limit:
                    break
        return out

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        self.open(partition)[OFFSET_KEY] = _OFFSET.pack(offset)

    def store(self, partition: int) -> PartitionStore:
        """One partition's table as a :class:`~stream_rec.core.seams.SessionStore`."""
        return PartitionStore(self, partition)


class PartitionStore:
    """One partition of a :class:`PartitionedSessionDB` behind the SessionStore seam.

    The direct engine reads and writes whole batches through the database itself; this view
    is for tools and replays, and puts the engine's table under the store contract suite.
    """

    def __init__(self, db: PartitionedSessionDB, partition: int) -> None:
        self.db, self.partition = db, partition

    def get(self, user_id: str) -> SessionState | None:
        raw = self.db.get_many(self.partition, [user_id.encode()])[0]
        return None if raw is None else SessionState.from_bytes(raw)

    def put(self, user_id: str, state: SessionState) -> None:
        self.db.write(self.partition, [(user_id.encode(), state.to_bytes())])

    def delete(self, user_id: str) -> None:
        self.db.write(self.partition, [(user_id.encode(), None)])

    def __len__(self) -> int:
        return sum(1 for _ in self.users())

    def users(self) -> Iterator[str]:
        for key in self.db.open(self.partition).keys():
            if isinstance(key, bytes) and not key.startswith(b"\x00"):  # not the changelog offset
                yield key.decode()

    def close(self) -> None:
        self.db.close(self.partition)
