"""Invalid records for the events topic, one kind for each reason ``parse_event`` rejects."""

from __future__ import annotations

import random

import orjson

from ..core.events import Event, event_to_dict
from ..errors import ConfigError

__all__ = ["INVALID_KINDS", "invalid_record"]

# Invalid records, each rejected by `events.parse_event` for a different reason.
INVALID_KINDS = (
    "bad_json",
    "truncated_json",
    "bad_utf8",
    "not_an_object",
    "missing_field",
    "unknown_type",
    "wrong_field_type",
    "click_without_item",
    "empty_query",
    "key_mismatch",
)


def invalid_record(
    event: Event, kind: str, rng: random.Random | None = None
) -> tuple[bytes, bytes]:
    """``(key, value)`` of ``event`` made invalid in one of :data:`INVALID_KINDS`.

    ``rng`` picks among a kind's variants (which field goes missing, ...); without it, the first.
    """
    if kind not in INVALID_KINDS:
        raise ConfigError(
            f"unknown kind of invalid record {kind!r}; expected one of {INVALID_KINDS}"
        )
    pick = rng.randrange if rng is not None else (lambda n: 0)
    key = event.user_id.encode()
    obj = event_to_dict(event)
    if kind == "bad_json":
        return key, orjson.dumps(obj).replace(b'"', b"'")
    if kind == "truncated_json":
        raw = orjson.dumps(obj)
        return key, raw[: max(1, len(raw) * (2 + pick(7)) // 10)]
    if kind == "bad_utf8":
        return key, orjson.dumps(obj).replace(b'"type"', b'"t\xffpe"')
    if kind == "not_an_object":
        return key, orjson.dumps([obj])
    if kind == "missing_field":
        del obj[("event_id", "user_id", "type", "ts")[pick(4)]]
    elif kind == "unknown_type":
        obj["type"] = ("view", "add_to_cart", "CLICK", "")[pick(4)]
    elif kind == "wrong_field_type":
        field, value = (
            ("ts", str(event.ts)),
            ("ts", event.ts / 1000.0),
            ("ts", -1),
            ("user_id", [event.user_id]),
            ("event_id", {"id": event.event_id}),
            ("item_id", True),
        )[pick(6)]
        if field == "item_id":
            obj["type"] = "click"
        obj[field] = value
    elif kind == "click_without_item":
        obj["type"] = "click"
        obj.pop("item_id", None)
        obj.pop("query", None)
    elif kind == "empty_query":
        obj["type"] = "search"
        obj.pop("item_id", None)
        obj["query"] = ("", "   ", "\t")[pick(3)]
    elif kind == "key_mismatch":
        key = (event.user_id + "x").encode()
    return key, orjson.dumps(obj)
