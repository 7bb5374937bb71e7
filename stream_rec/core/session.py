"""Per-user session state: the last N events as compact arrays, plus items purchased.

State is pure data with a versioned little-endian binary encoding (never pickle)::

    header  <B H B q q q : version, n events, n purchased, session key, last ts, last offset
    arrays  item_hash int64[n] | type uint8[n] | query_hash uint32[n, Q] | ts int64[n]
            | purchased int64[m]

With N = 50 and Q = 3 a full state is at most 1,483 + 8·m bytes.
``last_offset`` makes replays of an already-applied Kafka record a no-op, so an
at-least-once redelivery after a crash does not count an event twice.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .events import Event
from .features import MAX_QUERY_TOKENS, PURCHASE, TYPE_CODES, item_hash, query_token_hashes

__all__ = ["SessionState", "SessionPolicy", "apply_event", "fold_events", "StateDecodeError",
           "is_redelivery", "is_regression", "count_offset_checks", "state_last_ts"]

_VERSION = 1
_HEADER = struct.Struct("<BHBqqq")
_EMPTY_Q = np.zeros((0, MAX_QUERY_TOKENS), dtype=np.uint32)


class StateDecodeError(ValueError):
    """Stored bytes are not a session state of a version we understand."""


@dataclass(frozen=True)
class SessionPolicy:
    """How events fold into state."""

    max_len: int = 50  # events kept (the model's max length)
    max_purchased: int = 20  # purchased items kept for filtering
    session_gap_ms: int = 30 * 60 * 1000  # inactivity that starts a new session (no session_id)
    # A record at or below the state's last applied offset whose ts is later than every event
    # the state applied cannot be a redelivery (a redelivered record was applied, so its ts is
    # at most ``last_ts``): the topic was re-created or truncated. True: a new epoch, apply it.
    new_epoch_on_regression: bool = True


def is_redelivery(state: SessionState, ts: int, offset: int | None) -> bool:
    """The record (offset, ts) is one the state applied already (see :func:`is_regression`)."""
    return offset is not None and offset <= state.last_offset and ts <= state.last_ts


def is_regression(state: SessionState, ts: int, offset: int | None) -> bool:
    """The record's offset is at or below the state's last applied offset, yet it is no
    redelivery: its event time is later than any the state holds (a new log)."""
    return offset is not None and offset <= state.last_offset and ts > state.last_ts


def count_offset_checks(
    states: Mapping[str, SessionState | None],
    events: Sequence[Event],
    offsets: Sequence[int | None],
) -> tuple[int, int]:
    """(redeliveries, regressions) among a batch's events against their users' stored states:
    what the worker counts and logs, so neither a skipped nor a re-applied record is silent."""
    redeliveries = regressions = 0
    for event, offset in zip(events, offsets):
        state = states.get(event.user_id)
        if state is not None:
            redeliveries += is_redelivery(state, event.ts, offset)
            regressions += is_regression(state, event.ts, offset)
    return redeliveries, regressions


def state_last_ts(data: bytes) -> int | None:
    """The ``last_ts`` of an encoded state from its header alone (None: not a state of this
    version): what the state TTL sweep reads for every stored user."""
    if len(data) < _HEADER.size:
        return None
    version, _, _, _, last_ts, _ = _HEADER.unpack_from(data)
    return int(last_ts) if version == _VERSION else None


def _skipped(policy: SessionPolicy, offset: int | None, ts: int, last_offset: int,
             last_ts: int) -> bool:
    if offset is None or offset > last_offset:
        return False
    return ts <= last_ts or not policy.new_epoch_on_regression


@dataclass(frozen=True)
class SessionState:
    item_hashes: np.ndarray  # (n,) int64, 0 for events without an item
    types: np.ndarray  # (n,) uint8 type codes
    query_hashes: np.ndarray  # (n, Q) uint32, 0 = no token
    ts: np.ndarray  # (n,) int64 epoch ms
    purchased: np.ndarray  # (m,) int64 item hashes, oldest first
    session_key: int = 0  # hash of the session id, 0 when none
    last_ts: int = 0
    last_offset: int = -1  # offset of the last applied record, -1 when unknown

    @classmethod
    def empty(cls) -> SessionState:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.uint8),
            _EMPTY_Q,
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return int(self.item_hashes.shape[0])

    def sequence(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item hashes, types, query hashes) in time order, as `features.featurize` takes them."""
        return self.item_hashes, self.types, self.query_hashes

    def seen_item_hashes(self) -> np.ndarray:
        seen: np.ndarray = self.item_hashes[self.item_hashes != 0]
        return seen

    def to_bytes(self) -> bytes:
        n, m = len(self), int(self.purchased.shape[0])
        return b"".join(
            (
                _HEADER.pack(_VERSION, n, m, self.session_key, self.last_ts, self.last_offset),
                self.item_hashes.astype("<i8", copy=False).tobytes(),
                self.types.astype("u1", copy=False).tobytes(),
                self.query_hashes.astype("<u4", copy=False).tobytes(),
                self.ts.astype("<i8", copy=False).tobytes(),
                self.purchased.astype("<i8", copy=False).tobytes(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        if len(data) < _HEADER.size:
            raise StateDecodeError(f"session state needs >= {_HEADER.size} bytes; got {len(data)}")
        version, n, m, skey, last_ts, last_off = _HEADER.unpack_from(data)
        if version != _VERSION:
            raise StateDecodeError(f"session state version {version}; this build reads {_VERSION}")
        q = MAX_QUERY_TOKENS
        expected = _HEADER.size + n * (8 + 1 + 4 * q + 8) + m * 8
        if len(data) != expected:
            raise StateDecodeError(f"session state of {n} events needs {expected} bytes; got {len(data)}")
        off = _HEADER.size
        items = np.frombuffer(data, "<i8", n, off)
        off += 8 * n
        types = np.frombuffer(data, "u1", n, off)
        off += n
        queries = np.frombuffer(data, "<u4", n * q, off).reshape(n, q)
        off += 4 * n * q
        ts = np.frombuffer(data, "<i8", n, off)
        off += 8 * n
        purchased = np.frombuffer(data, "<i8", m, off)
        return cls(items, types, queries, ts, purchased, skey, last_ts, last_off)


def _appended(a: np.ndarray, start: int, value: int) -> np.ndarray:
    """``a[start:]`` with one more row filled with ``value``, in one allocation."""
    n = a.shape[0] - start
    out = np.empty((n + 1, *a.shape[1:]), a.dtype)
    out[:n] = a[start:]
    out[n] = value
    return out


_NEW_STATE = object.__new__


def _session_key(session_id: str | None) -> int:
    return item_hash(session_id) if session_id else 0


def apply_event(
    state: SessionState, event: Event, policy: SessionPolicy, offset: int | None = None
) -> SessionState:
    """Fold one event into a user's state; returns the new state (inputs are not modified).

    A record whose ``offset`` is not beyond ``state.last_offset`` was applied
    already (redelivery) and leaves the state unchanged, unless it is an offset
    regression (:func:`is_regression`) and the policy applies those as a new epoch.
    """
    if _skipped(policy, offset, event.ts, state.last_offset, state.last_ts):
        return state
    skey = _session_key(event.session_id)
    n = state.item_hashes.shape[0]
    new_session = n > 0 and (
        (skey != state.session_key) if (skey or state.session_key)
        else event.ts - state.last_ts > policy.session_gap_ms
    )
    keep = policy.max_len - 1
    start = n if new_session or keep <= 0 else max(0, n - keep)
    code = TYPE_CODES[event.type]
    ih = item_hash(event.item_id) if event.item_id is not None else 0
    purchased = state.purchased
    if code == PURCHASE and ih:
        purchased = np.concatenate((purchased[purchased != ih], [ih]))[-policy.max_purchased :]
        purchased = purchased.astype(np.int64, copy=False)
    queries = _appended(state.query_hashes, start, 0)
    if event.query is not None:
        toks = query_token_hashes(event.query)
        queries[-1, : len(toks)] = toks
    # Set without the frozen dataclass's per-field __init__: once per event in every worker,
    # 6.3 -> 4.7 us per call here (docs/benchmarks.md, "Session 15").
    new = _NEW_STATE(SessionState)
    new.__dict__.update(
        item_hashes=_appended(state.item_hashes, start, ih),
        types=_appended(state.types, start, code),
        query_hashes=queries,
        ts=_appended(state.ts, start, event.ts),
        purchased=purchased,
        session_key=skey,
        last_ts=max(event.ts, state.last_ts),
        last_offset=state.last_offset if offset is None else offset,
    )
    return new


def fold_events(
    states: Mapping[str, SessionState | None],
    events: Sequence[Event],
    policy: SessionPolicy,
    offsets: Sequence[int | None] | None = None,
) -> dict[str, SessionState]:
    """Fold ``events`` in order into their users' ``states`` (None: new); the changed users'
    new states, equal byte for byte to :func:`apply_event` applied one event at a time (the
    fold :meth:`Recommender.step` does), without recommending: the state backfill.

    Each user's events are folded together (:func:`_fold_user`): one set of arrays per user
    and batch instead of five per event.
    """
    by_user: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        by_user.setdefault(event.user_id, []).append(i)
    out: dict[str, SessionState] = {}
    for user, idx in by_user.items():
        state = states.get(user)
        out[user] = _fold_user(
            SessionState.empty() if state is None else state, [events[i] for i in idx],
            [offsets[i] for i in idx] if offsets is not None else None, policy)
    return out


def _fold_user(
    state: SessionState,
    events: list[Event],
    offsets: list[int | None] | None,
    policy: SessionPolicy,
) -> SessionState:
    """:func:`apply_event` over one user's ``events`` in order, building the arrays once."""
    n = len(state)
    skey, last_ts, last_offset = state.session_key, state.last_ts, state.last_offset
    purchased: list[int] | None = None
    base_start = 0  # rows of ``state`` still in the session
    rows: list[tuple[int, int, list[int] | None, int]] = []  # (item hash, type, tokens, ts)
    applied = False
    for i, event in enumerate(events):
        offset = None if offsets is None else offsets[i]
        if _skipped(policy, offset, event.ts, last_offset, last_ts):
            continue
        applied = True
        key = _session_key(event.session_id)
        length = n - base_start + len(rows)
        if length > 0 and ((key != skey) if (key or skey)
                           else event.ts - last_ts > policy.session_gap_ms):
            base_start, rows = n, []  # a new session: nothing before this event is kept
        code = TYPE_CODES[event.type]
        ih = item_hash(event.item_id) if event.item_id is not None else 0
        if code == PURCHASE and ih:
            if purchased is None:
                purchased = state.purchased.tolist()
            purchased = [p for p in purchased if p != ih] + [ih]
            purchased = purchased[-policy.max_purchased:]
        toks = query_token_hashes(event.query) if event.query is not None else None
        rows.append((ih, code, toks, event.ts))
        skey, last_ts = key, max(event.ts, last_ts)
        if offset is not None:
            last_offset = offset
    if not applied:
        return state
    window = max(1, policy.max_len)
    rows = rows[-window:]
    keep = max(0, min(n - base_start, window - len(rows)))
    lo = n - keep
    queries = np.zeros((keep + len(rows), MAX_QUERY_TOKENS), np.uint32)
    queries[:keep] = state.query_hashes[lo:]
    for j, (_, _, toks, _) in enumerate(rows):
        if toks:
            queries[keep + j, : len(toks)] = toks
    return SessionState(
        item_hashes=np.concatenate((state.item_hashes[lo:].astype(np.int64, copy=False),
                                    np.array([r[0] for r in rows], np.int64))),
        types=np.concatenate((state.types[lo:].astype(np.uint8, copy=False),
                              np.array([r[1] for r in rows], np.uint8))),
        query_hashes=queries,
        ts=np.concatenate((state.ts[lo:].astype(np.int64, copy=False),
                           np.array([r[3] for r in rows], np.int64))),
        purchased=(state.purchased if purchased is None
                   else np.array(purchased, np.int64)).astype(np.int64, copy=False),
        session_key=skey,
        last_ts=last_ts,
        last_offset=last_offset,
    )
