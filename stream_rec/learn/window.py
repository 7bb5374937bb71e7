"""The learner's window: the most recent sessions of the stream, bounded, on disk (RocksDB).

Each session gets a sequence number when its first event arrives; the window keeps the newest
``capacity`` sessions (the oldest are dropped as new ones open). An event joins its user's open
session when it carries that session's id, or, without one, when it comes within
``session_gap_ms`` of the user's last event (the workers' rule); otherwise it opens a new
session. ``mark`` records the sequence number up to which sessions have been learned from, so an
update trains on the sessions since the previous one and replays a sample of the older ones.

Keys: ``s`` + 8-byte big-endian sequence -> the session (user, session id, events as JSON);
``m:next`` and ``m:mark`` hold the counters. A session below the mark that gets more events
(it was still open at the update) is learned from again, whole, at the next update. A restart
reopens the same window; the in-memory map of open sessions is rebuilt from the newest ones.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import orjson

from ..core.events import Event
from ..core.session import SessionPolicy

__all__ = ["SessionWindow"]

_SEQ = struct.Struct(">Q")
_NEXT, _MARK = b"m:next", b"m:mark"
_REBUILD_OPEN = 5_000  # newest sessions scanned on open for users' open sessions


def _key(seq: int) -> bytes:
    return b"s" + _SEQ.pack(seq)


class SessionWindow:
    def __init__(
        self,
        path: str | Path,
        capacity: int = 50_000,
        session_gap_ms: int = SessionPolicy().session_gap_ms,
    ) -> None:
        from rocksdict import Options, Rdict

        if capacity < 1:
            raise ValueError(f"window capacity must be >= 1 session; got {capacity}")
        Path(path).mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db = Rdict(str(path), options=opts)
        self.path = Path(path)
        self.capacity = capacity
        self.gap_ms = session_gap_ms
        self.next_seq = self._counter(_NEXT)
        self.mark = self._counter(_MARK)
        # sessions below the mark that got events after an update read them (in memory only)
        self.continued: set[int] = set()
        self._oldest = self._first_seq()
        # user -> (seq, session id or None, last ts) of the user's newest session
        self._open: dict[str, tuple[int, str | None, int]] = {}
        for seq, user, sid, events in self._scan(max(self._oldest, self.next_seq - _REBUILD_OPEN)):
            self._open[user] = (seq, sid, events[-1].ts)

    # ------------------------------------------------------------------ writing
    def add(self, event: Event) -> int:
        """Put ``event`` into its session (opening one when needed); returns the session's seq."""
        cur = self._open.get(event.user_id)
        joins = cur is not None and (
            (event.session_id is not None and event.session_id == cur[1])
            or (event.session_id is None and cur[1] is None and event.ts - cur[2] <= self.gap_ms)
        )
        stored: bytes | None = self._db.get(_key(cur[0])) if joins and cur is not None else None
        if stored is not None and cur is not None:  # still in the window: join it
            seq = cur[0]
            raw = orjson.loads(stored)
            raw["e"].append(_row(event))
            if seq < self.mark:  # learned from while open: its new events are news again
                self.continued.add(seq)
        else:
            seq = self.next_seq
            self.next_seq += 1
            raw = {"u": event.user_id, "s": event.session_id, "e": [_row(event)]}
            self._db[_NEXT] = _SEQ.pack(self.next_seq)
        self._db[_key(seq)] = orjson.dumps(raw)
        self._open[event.user_id] = (
            seq,
            event.session_id,
            max(event.ts, cur[2] if stored is not None and cur else 0),
        )
        self._evict()
        return seq

    def forget(self, user_id: str) -> int:
        """Delete every session of ``user_id`` (a ``forget`` event); returns how many."""
        gone = [seq for seq, user, _s, _e in self._scan(self._oldest) if user == user_id]
        for seq in gone:
            self._db.delete(_key(seq))
        self._open.pop(user_id, None)
        return len(gone)

    def set_mark(self, seq: int, continued: set[int] | None = None) -> None:
        """Sessions below ``seq`` have been learned from (``continued``: the continued sessions
        that were, taken back from :attr:`continued`)."""
        self.mark = seq
        self._db[_MARK] = _SEQ.pack(seq)
        self.continued -= continued or set()

    def continued_sessions(self) -> tuple[set[int], list[tuple[Event, ...]]]:
        """The sessions below the mark that got events since they were learned from (their
        seqs, and the sessions in order): an update trains on them again, whole."""
        seqs = set(self.continued)
        out = []
        for seq in sorted(seqs):
            raw = self._db.get(_key(seq))
            if raw is not None:
                out.append(_events(orjson.loads(raw)))
        return seqs, out

    # ------------------------------------------------------------------ reading
    def sessions(self, start: int = 0, stop: int | None = None) -> list[tuple[Event, ...]]:
        """The sessions with ``start <= seq < stop``, in order, as events."""
        return [events for seq, _u, _s, events in self._scan(start) if stop is None or seq < stop]

    def __len__(self) -> int:
        return max(0, self.next_seq - self._oldest)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ internals
    def _evict(self) -> None:
        while self.next_seq - self._oldest > self.capacity:
            self._db.delete(_key(self._oldest))
            self._oldest += 1
        if len(self._open) > 4 * self.capacity:  # users whose sessions all left the window
            self._open = {u: v for u, v in self._open.items() if v[0] >= self._oldest}

    def _scan(self, start: int) -> Iterator[tuple[int, str, str | None, tuple[Event, ...]]]:
        it = self._db.iter()
        it.seek(_key(max(start, 0)))
        while it.valid():
            key = it.key()
            if not key.startswith(b"s"):
                break
            (seq,) = _SEQ.unpack(key[1:])
            raw = orjson.loads(it.value())
            yield seq, raw["u"], raw["s"], _events(raw)
            it.next()

    def _counter(self, key: bytes) -> int:
        raw = self._db.get(key)
        return 0 if raw is None else int(_SEQ.unpack(raw)[0])

    def _first_seq(self) -> int:
        it = self._db.iter()
        it.seek(b"s")
        if it.valid() and it.key().startswith(b"s"):
            return int(_SEQ.unpack(it.key()[1:])[0])
        return self.next_seq


def _row(e: Event) -> list[object]:
    return [e.type, e.ts, e.item_id, e.query]


def _events(raw: dict[str, object]) -> tuple[Event, ...]:
    user, sid = str(raw["u"]), raw["s"]
    rows = raw["e"]
    assert isinstance(rows, list)
    return tuple(
        Event(f"{user}:{n}", user, typ, ts, item, query, sid if isinstance(sid, str) else None)
        for n, (typ, ts, item, query) in enumerate(rows)
    )
