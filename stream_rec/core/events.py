"""The two wire contracts: shopper events in, recommendations out.

Events are JSON objects keyed by ``user_id`` on the events topic::

    {"event_id": "e-1", "user_id": "u-7", "type": "click", "item_id": "123",
     "ts": 1732370000000, "session_id": "s-3"}

``parse_event`` never raises on bad input: it returns an :class:`Event` or an
:class:`InvalidEvent` carrying the reason (text) and its ``code`` (one of ``REASON_CODES``, for
machines), which becomes a dead-letter record.

Every field is bounded (docs/reliability.md): ids at most ``MAX_ID_LEN`` characters, a query at
most ``MAX_QUERY_LEN``, ``ts`` an epoch-ms integer in ``[ts_min, ts_max]`` and always within
int64 (``MAX_TS``), so no value that passes can overflow the state's int64 arrays.
"""

from __future__ import annotations

import base64
import hashlib
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
    "MAX_ID_LEN",
    "MAX_QUERY_LEN",
    "MAX_TS",
    "MAX_REASON_LEN",
    "DLQ_ORIGINAL_BYTES",
    "REASON_CODES",
]

EVENT_TYPES = ("click", "search", "purchase", "forget")  # forget: a control event (intake.py)
_ITEM_TYPES = frozenset(("click", "purchase"))
MAX_ID_LEN = 256  # characters of event_id, user_id, item_id, session_id
MAX_QUERY_LEN = 1024  # characters of a search query
MAX_TS = 2**63 - 1  # ts is stored as int64 epoch ms
MAX_REASON_LEN = 300  # characters of a dead letter's reason (it may quote the input)
DLQ_ORIGINAL_BYTES = 64 << 10  # default bytes of the original kept in a dead letter
# Machine-readable reasons (InvalidEvent.code, the dead letter's `reason_code`).
REASON_CODES = (
    "no_key", "key_mismatch", "record_too_large", "not_json", "not_object", "missing_field",
    "bad_field", "unknown_type", "too_long", "ts_out_of_range", "processing_error",
)


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
    """A record that failed validation (or processing): reason, original bytes, reason code."""

    reason: str
    raw: bytes
    code: str = "bad_field"  # one of REASON_CODES


class _Invalid(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _clip(text: str, limit: int = MAX_REASON_LEN) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ident(obj: dict[str, Any], name: str, required: bool) -> str | None:
    value = obj.get(name)
    if type(value) is str and 0 < len(value) <= MAX_ID_LEN:  # the common case, checked first
        return value
    if value is None:
        if required:
            raise _Invalid("missing_field", f"missing field `{name}`")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid(
            "bad_field", f"field `{name}` must be a string or integer; got {type(value).__name__}")
    text = str(value)
    if not text or len(text) > MAX_ID_LEN:
        raise _Invalid(
            "too_long" if text else "bad_field",
            f"field `{name}` must be 1..{MAX_ID_LEN} characters; got {len(text)}")
    return text


def _validate(obj: Any, ts_min: int, ts_max: int) -> Event:
    if not isinstance(obj, dict):
        raise _Invalid("not_object", f"expected a JSON object; got {type(obj).__name__}")
    event_id = _ident(obj, "event_id", True)
    user_id = _ident(obj, "user_id", True)
    etype = obj.get("type")
    if etype is None:
        raise _Invalid("missing_field", "missing field `type`")
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        raise _Invalid("unknown_type", _clip(
            f"unknown event type {etype!r}; expected one of {', '.join(EVENT_TYPES)}"))
    ts = obj.get("ts")
    if ts is None:
        raise _Invalid("missing_field", "missing field `ts`")
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise _Invalid("bad_field", _clip(
            f"field `ts` must be a non-negative integer (epoch ms); got {ts!r}"))
    if not ts_min <= ts <= ts_max:
        raise _Invalid("ts_out_of_range", _clip(
            f"field `ts` must be within [{ts_min}, {ts_max}] (epoch ms); got {ts}"))
    item_id = _ident(obj, "item_id", etype in _ITEM_TYPES)
    query = None
    if etype == "search":
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _Invalid("bad_field", "a search event needs a non-empty string `query`")
        if len(query) > MAX_QUERY_LEN:
            raise _Invalid("too_long", f"field `query` longer than {MAX_QUERY_LEN} characters")
    session_id = _ident(obj, "session_id", False)
    assert event_id is not None and user_id is not None
    return Event(event_id, user_id, etype, ts, item_id, query, session_id)


def parse_event(
    raw: bytes, key: bytes | None = None, ts_min: int = 0, ts_max: int = MAX_TS
) -> Event | InvalidEvent:
    """Decode and validate one record. Never raises on bad input.

    When the record has a Kafka key it must match ``user_id``: a mismatch means
    the producer partitioned the event under another user's state. ``ts`` must lie in
    ``[ts_min, ts_max]`` (the intake derives the window from the record's Kafka timestamp).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InvalidEvent(_clip(f"not valid JSON: {exc}"), raw, "not_json")
    try:
        event = _validate(obj, max(ts_min, 0), min(ts_max, MAX_TS))
    except _Invalid as exc:
        return InvalidEvent(str(exc), raw, exc.code)
    if key is not None and key.decode("utf-8", "replace") != event.user_id:
        return InvalidEvent(
            _clip(f"record key {key[:MAX_ID_LEN * 4]!r} does not match user_id "
                  f"{event.user_id!r}; events must be keyed by user_id", 2 * MAX_REASON_LEN),
            raw,
            "key_mismatch",
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


def _kept_text(kept: bytes, truncated: bool) -> tuple[str, str]:
    """(text, encoding) of the kept bytes: UTF-8 when they decode (a truncation may cut a
    character: up to 3 trailing bytes are dropped then), else base64."""
    for cut in range(4 if truncated else 1):
        try:
            return kept[: len(kept) - cut].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(kept).decode("ascii"), "base64"


def dead_letter(
    invalid: InvalidEvent, topic: str, partition: int, offset: int, now_ms: int,
    max_original_bytes: int = DLQ_ORIGINAL_BYTES,
) -> bytes:
    """The dead-letter record: reason and its code, origin, and the original bytes (as text
    when decodable) up to ``max_original_bytes``, with the full length and its sha256.

    Its size is bounded whatever came in: at most ~6 x ``max_original_bytes`` (JSON escapes a
    control byte as 6 characters; base64 takes 4/3) plus about 1 KiB.
    """
    raw = invalid.raw
    truncated = len(raw) > max_original_bytes
    original, encoding = _kept_text(raw[:max_original_bytes], truncated)
    return orjson.dumps(
        {
            "reason": _clip(invalid.reason, 2 * MAX_REASON_LEN),
            "reason_code": invalid.code,
            "original": original,
            "original_encoding": encoding,
            "original_bytes": len(raw),
            "original_sha256": hashlib.sha256(raw).hexdigest(),
            "original_truncated": truncated,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "dead_lettered_ts": now_ms,
        }
    )
