"""The two wire contracts: shopper events in, recommendations out.

Events are JSON objects keyed by ``user_id`` on the events topic::

    {"event_id": "e-1", "user_id": "u-7", "type": "click", "item_id": "123",
     "ts": 1732370000000, "session_id": "s-3"}

``parse_event`` never raises on bad input: it returns an :class:`Event` or an
:class:`InvalidEvent` carrying the reason, which becomes a dead-letter record.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson

__all__ = [
    "EVENT_TYPES",
    "Event",
    "InvalidEvent",
    "parse_event",
    "event_to_dict",
    "encode_event",
    "Recommendation",
    "ScoredItem",
    "encode_recommendation",
    "decode_recommendation",
    "RecommendationBatch",
    "dead_letter",
]

EVENT_TYPES = ("click", "search", "purchase")
_ITEM_TYPES = frozenset(("click", "purchase"))
_MAX_ID_LEN = 256
_MAX_QUERY_LEN = 1024


@dataclass(frozen=True, slots=True)
class Event:
    """A validated shopper event."""

    event_id: str
    user_id: str
    type: str  # one of EVENT_TYPES
    ts: int  # epoch milliseconds
    item_id: str | None = None  # click / purchase
    query: str | None = None  # search
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """A record that failed validation, with the reason and the original bytes."""

    reason: str
    raw: bytes


def _ident(obj: dict[str, Any], name: str, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValueError(f"missing field `{name}`")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"field `{name}` must be a string or integer; got {type(value).__name__}")
    text = str(value)
    if not text or len(text) > _MAX_ID_LEN:
        raise ValueError(f"field `{name}` must be 1..{_MAX_ID_LEN} characters; got {len(text)}")
    return text


def _validate(obj: Any) -> Event:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object; got {type(obj).__name__}")
    event_id = _ident(obj, "event_id", True)
    user_id = _ident(obj, "user_id", True)
    etype = obj.get("type")
    if etype is None:
        raise ValueError("missing field `type`")
    if etype not in EVENT_TYPES:
        raise ValueError(f"unknown event type {etype!r}; expected one of {', '.join(EVENT_TYPES)}")
    ts = obj.get("ts")
    if ts is None:
        raise ValueError("missing field `ts`")
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise ValueError(f"field `ts` must be a non-negative integer (epoch ms); got {ts!r}")
    item_id = _ident(obj, "item_id", etype in _ITEM_TYPES)
    query = None
    if etype == "search":
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("a search event needs a non-empty string `query`")
        if len(query) > _MAX_QUERY_LEN:
            raise ValueError(f"field `query` longer than {_MAX_QUERY_LEN} characters")
    session_id = _ident(obj, "session_id", False)
    assert event_id is not None and user_id is not None
    return Event(event_id, user_id, etype, ts, item_id, query, session_id)


def parse_event(raw: bytes, key: bytes | None = None) -> Event | InvalidEvent:
    """Decode and validate one record. Never raises on bad input.

    When the record has a Kafka key it must match ``user_id``: a mismatch means
    the producer partitioned the event under another user's state.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InvalidEvent(f"not valid JSON: {exc}", raw)
    try:
        event = _validate(obj)
    except ValueError as exc:
        return InvalidEvent(str(exc), raw)
    if key is not None and key.decode("utf-8", "replace") != event.user_id:
        return InvalidEvent(
            f"record key {key!r} does not match user_id {event.user_id!r}; "
            "events must be keyed by user_id",
            raw,
        )
    return event


def event_to_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "type": event.type,
        "ts": event.ts,
    }
    if event.item_id is not None:
        out["item_id"] = event.item_id
    if event.query is not None:
        out["query"] = event.query
    if event.session_id is not None:
        out["session_id"] = event.session_id
    return out


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event_to_dict(event))


class ScoredItem(NamedTuple):
    """One recommended item. The workers publish answers without building these
    (:class:`RecommendationBatch`); replay, evaluation and tests get them from ``to_list``."""

    item_id: str
    score: float
    because: str | None = None  # the session's item that most supports this one (--explain)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The refreshed top-k for one user, published keyed by ``user_id``."""

    user_id: str
    items: tuple[ScoredItem, ...]
    model_version: str
    source_event_id: str
    event_ts: int
    emitted_ts: int


def _item_json(item_id: str, score: float, because: str | None) -> dict[str, Any]:
    """One item as published; ``score`` already rounded to its 6 decimals."""
    if because is None:
        return {"item_id": item_id, "score": score}
    return {"item_id": item_id, "score": score, "because": because}


def _recommendation_json(
    user_id: str, items: list[dict[str, Any]], model_version: str, source_event_id: str, event_ts: int, emitted_ts: int
) -> bytes:
    return orjson.dumps(
        {
            "user_id": user_id,
            "items": items,
            "model_version": model_version,
            "source_event_id": source_event_id,
            "event_ts": event_ts,
            "emitted_ts": emitted_ts,
        }
    )


def encode_recommendation(rec: Recommendation) -> bytes:
    return _recommendation_json(
        rec.user_id,
        [_item_json(item_id, round(score, 6), because) for item_id, score, because in rec.items],
        rec.model_version,
        rec.source_event_id,
        rec.event_ts,
        rec.emitted_ts,
    )


@dataclass(frozen=True, slots=True)
class RecommendationBatch:
    """The answers of one micro-batch as the index returned them: rows into the catalogue.

    Workers publish :meth:`records` straight from the arrays; :meth:`to_list` builds the
    :class:`Recommendation` objects only for callers that want them. Per answer that skips
    20 item objects and 20 calls of ``round`` (10.6 against 40 µs per answer, see
    docs/benchmarks.md, "Session 3"). Scores are rounded to the 6 decimals they are published
    with, in one vectorised step, so ``records()`` and ``encode_recommendation`` of
    ``to_list()`` give the same bytes.
    """

    users: list[str]
    source_event_ids: list[str]
    event_ts: list[int]
    emitted_ts: int
    model_version: str
    item_ids: Sequence[str]  # catalogue row r (1-based; 0 = no item) is item_ids[r - 1]
    rows: np.ndarray  # (n, k) int catalogue rows, best first
    scores: np.ndarray  # (n, k) float
    because: list[list[int]] | None = None  # per item, the supporting session item's row (0 = none)

    def __len__(self) -> int:
        return len(self.users)

    def _lists(self) -> tuple[list[list[int]], list[list[float]]]:
        return self.rows.tolist(), np.round(self.scores.astype(np.float64), 6).tolist()

    def _resolved(self, rows: list[int], scores: list[float], why: list[int]) -> list[tuple[str, float, str | None]]:
        """(item id, score, supporting item id or None) for one answer's rows; row 0 = no item."""
        ids = self.item_ids
        return [(ids[r - 1], s, ids[w - 1] if w > 0 else None) for r, s, w in zip(rows, scores, why) if r > 0]

    def records(self) -> list[tuple[bytes, bytes]]:
        """(key, value) per answer, ready to publish on the recommendations topic."""
        ids, (rows, scores), out = self.item_ids, self._lists(), []
        for b, user in enumerate(self.users):
            if self.because is None:  # the hot path: one dict per item, nothing else
                items = [{"item_id": ids[r - 1], "score": s} for r, s in zip(rows[b], scores[b]) if r > 0]
            else:
                items = [_item_json(*item) for item in self._resolved(rows[b], scores[b], self.because[b])]
            value = _recommendation_json(
                user, items, self.model_version, self.source_event_ids[b], self.event_ts[b], self.emitted_ts
            )
            out.append((user.encode(), value))
        return out

    def to_list(self) -> list[Recommendation]:
        (rows, scores), out = self._lists(), []
        for b, user in enumerate(self.users):
            why = self.because[b] if self.because is not None else [0] * len(rows[b])
            items = tuple(ScoredItem(*item) for item in self._resolved(rows[b], scores[b], why))
            out.append(Recommendation(user, items, self.model_version, self.source_event_ids[b],
                                      self.event_ts[b], self.emitted_ts))
        return out


def decode_recommendation(raw: bytes) -> Recommendation:
    obj = orjson.loads(raw)
    return Recommendation(
        user_id=obj["user_id"],
        items=tuple(ScoredItem(i["item_id"], float(i["score"]), i.get("because")) for i in obj["items"]),
        model_version=obj["model_version"],
        source_event_id=obj["source_event_id"],
        event_ts=int(obj["event_ts"]),
        emitted_ts=int(obj["emitted_ts"]),
    )


def dead_letter(
    invalid: InvalidEvent, topic: str, partition: int, offset: int, now_ms: int
) -> bytes:
    """The dead-letter record: reason, original bytes (as text when decodable) and origin."""
    try:
        original: str = invalid.raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        original = base64.b64encode(invalid.raw).decode("ascii")
        encoding = "base64"
    return orjson.dumps(
        {
            "reason": invalid.reason,
            "original": original,
            "original_encoding": encoding,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "dead_lettered_ts": now_ms,
        }
    )
