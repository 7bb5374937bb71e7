"""The per-batch intake every door shares: records -> events or dead letters; bytes -> states.

Both worker engines and ``stream_rec.testing`` take a batch of Kafka-shaped records
(key, value, offset, timestamp, origin) through :func:`take_records` and their stored state
bytes through :func:`decode_states`, so the rules below are written once:

- a record without a key is invalid (events must be keyed by ``user_id``; the key is the
  partition of the user's state), and a key must equal the event's ``user_id``;
- a record is bounded (:class:`RecordLimits`): its size, and its ``ts`` against the record's
  Kafka timestamp (when it has one);
- an invalid record becomes data (an :class:`InvalidEvent` with its origin, for the
  dead-letter topic), never an exception;
- stored state that cannot be decoded starts the user afresh, and the reset is reported.

``origin`` is whatever the door needs to route a user's writes and dead letters (a faust
event, an aiokafka record); the intake only carries it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .events import MAX_TS, Event, InvalidEvent, parse_event
from .session import SessionState, StateDecodeError

__all__ = [
    "NO_KEY", "RecordLimits", "Intake", "DecodedStates", "parse_record", "take_records",
    "decode_states",
]

NO_KEY = "record has no key; events must be keyed by user_id"

Origin = TypeVar("Origin")


@dataclass(frozen=True)
class RecordLimits:
    """Bounds on one record beyond the field rules of :func:`~.events.parse_event`.

    ``ts`` is checked against the record's Kafka timestamp ``t`` (ms) when it has one
    (``t >= 0``): it must lie in ``[t - max_past_ms, t + max_future_ms]``; None leaves that
    side open. The past side is open by default: replaying an old event log (``produce
    --file``, streaming evaluation) is a supported use.
    """

    max_record_bytes: int = 64 << 10
    max_future_ms: int | None = 24 * 3600 * 1000
    max_past_ms: int | None = None


def parse_record(
    key: bytes | None,
    value: bytes | bytearray | memoryview | None,
    timestamp_ms: int | None = None,
    limits: RecordLimits = RecordLimits(),
) -> Event | InvalidEvent:
    """One record -> its event, or the reason it is invalid (never raises on bad input)."""
    raw = value if isinstance(value, bytes) else bytes(value or b"")
    if key is None:
        return InvalidEvent(NO_KEY, raw, "no_key")
    if len(raw) > limits.max_record_bytes:
        return InvalidEvent(f"record of {len(raw)} bytes; at most {limits.max_record_bytes} "
                            "(--max-record-bytes)", raw, "record_too_large")
    ts_min, ts_max = 0, MAX_TS
    if timestamp_ms is not None and timestamp_ms >= 0:
        if limits.max_past_ms is not None:
            ts_min = timestamp_ms - limits.max_past_ms
        if limits.max_future_ms is not None:
            ts_max = timestamp_ms + limits.max_future_ms
    return parse_event(raw, key, ts_min, ts_max)


@dataclass
class Intake(Generic[Origin]):
    """A batch's valid events (in order, with their offsets) and its invalid records."""

    events: list[Event] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sources: list[Origin] = field(default_factory=list)  # per event, its record's origin
    # user -> origin of the user's last valid record in the batch (its partition)
    origin: dict[str, Origin] = field(default_factory=dict)
    invalid: list[tuple[InvalidEvent, Origin]] = field(default_factory=list)  # in arrival order
    # users with a `forget` event in the batch: their state is deleted (the engine writes the
    # tombstones); their events up to their last forget are dropped from ``events``
    forgotten: set[str] = field(default_factory=set)


def take_records(
    records: Iterable[tuple[bytes | None, bytes | None, int, int | None, Origin]],
    limits: RecordLimits = RecordLimits(),
) -> Intake[Origin]:
    """(key, value, offset, Kafka timestamp ms or None, origin) records -> :class:`Intake`."""
    out: Intake[Origin] = Intake()
    for key, value, offset, timestamp_ms, origin in records:
        parsed = parse_record(key, value, timestamp_ms, limits)
        if isinstance(parsed, InvalidEvent):
            out.invalid.append((parsed, origin))
            continue
        out.events.append(parsed)
        out.offsets.append(offset)
        out.sources.append(origin)
        out.origin[parsed.user_id] = origin
    if any(e.type == "forget" for e in out.events):
        _apply_forgets(out)
    return out


def _apply_forgets(out: Intake[Origin]) -> None:
    """Drop each forgetting user's events up to and including their last ``forget``: what they
    did before it is never used again; what follows it starts a new state."""
    last = {e.user_id: i for i, e in enumerate(out.events) if e.type == "forget"}
    keep = [i for i, e in enumerate(out.events) if i > last.get(e.user_id, -1)]
    out.events = [out.events[i] for i in keep]
    out.offsets = [out.offsets[i] for i in keep]
    out.sources = [out.sources[i] for i in keep]
    out.forgotten = set(last)


@dataclass
class DecodedStates:
    states: dict[str, SessionState | None]  # None: a new user, or one whose state was reset
    resets: dict[str, StateDecodeError]  # users whose stored bytes could not be decoded


def decode_states(stored: Iterable[tuple[str, bytes | None]]) -> DecodedStates:
    """(user, stored bytes or None) -> states; unreadable bytes reset the user's state."""
    out = DecodedStates({}, {})
    for user, raw in stored:
        try:
            out.states[user] = None if raw is None else SessionState.from_bytes(raw)
        except StateDecodeError as exc:
            out.resets[user] = exc
            out.states[user] = None
    return out
