"""The raw Diginetica CSV files (``;``-separated, raw ids), SR-GNN's preprocessing of the item
views into a :class:`SessionSplit`, and raw views and purchases as events."""

from __future__ import annotations

import calendar
import csv
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ...core.events import Event
from ...errors import DataError
from ..eventlog import ProtocolOptions, RawSession, SessionSplit, apply_protocol
from .files import diginetica_dir, require_file

__all__ = [
    "ItemView",
    "Purchase",
    "read_item_views",
    "read_purchases",
    "read_product_categories",
    "preprocess_item_views",
    "raw_to_events",
]


@dataclass(frozen=True, slots=True)
class ItemView:
    session_id: str
    user_id: str | None  # None where the file says NA
    item_id: str
    timeframe: int  # ms since the session started
    eventdate: str  # YYYY-MM-DD


@dataclass(frozen=True, slots=True)
class Purchase:
    session_id: str
    user_id: str | None
    timeframe: int
    eventdate: str
    ordernumber: str
    item_id: str


def _rows(path: Path, columns: Mapping[str, Sequence[str]]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a ``;`` file as {our column name: value}; each column may have several header names."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=";")
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file; expected a header line")
        index: dict[str, int] = {}
        for name, aliases in columns.items():
            found = [header.index(a) for a in aliases if a in header]
            if not found:
                raise DataError(
                    f"{path}: missing column {' or '.join(aliases)}; header is {';'.join(header)}"
                )
            index[name] = found[0]
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{n}: expected {len(header)} fields; got {len(row)}")
            yield n, {name: row[i] for name, i in index.items()}


def _int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{where}: expected an integer timeframe; got {value!r}") from None


def read_item_views(path: str | Path) -> list[ItemView]:
    """``train-item-views.csv``, with SR-GNN's snake_case header or the official camelCase one."""
    path = require_file(Path(path), "item views")
    cols = {
        "session": ("session_id", "sessionId"),
        "user": ("user_id", "userId"),
        "item": ("item_id", "itemId"),
        "timeframe": ("timeframe",),
        "date": ("eventdate",),
    }
    return [
        ItemView(
            r["session"],
            None if r["user"] == "NA" else r["user"],
            r["item"],
            _int(r["timeframe"], f"{path}:{n}"),
            r["date"],
        )
        for n, r in _rows(path, cols)
    ]


def read_purchases(path: str | Path) -> list[Purchase]:
    """``train-purchases.csv``: ``sessionId;userId;timeframe;eventdate;ordernumber;itemId``."""
    path = require_file(Path(path), "purchases")
    cols = {
        "session": ("sessionId", "session_id"),
        "user": ("userId", "user_id"),
        "timeframe": ("timeframe",),
        "date": ("eventdate",),
        "order": ("ordernumber",),
        "item": ("itemId", "item_id"),
    }
    return [
        Purchase(
            r["session"],
            None if r["user"] == "NA" else r["user"],
            _int(r["timeframe"], f"{path}:{n}"),
            r["date"],
            r["order"],
            r["item"],
        )
        for n, r in _rows(path, cols)
    ]


def read_product_categories(path: str | Path | None = None) -> dict[str, str]:
    """``product-categories.csv`` as {raw itemId: categoryId} (default: the data root's file)."""
    path = require_file(
        Path(path) if path is not None else diginetica_dir() / "product-categories.csv",
        "product categories",
    )
    return {
        r["item"]: r["category"]
        for _, r in _rows(path, {"item": ("itemId",), "category": ("categoryId",)})
    }


class _Dates:
    """eventdate -> epoch seconds at midnight, cached (a log has few distinct dates)."""

    def __init__(self, local_time: bool):
        self._to_epoch = time.mktime if local_time else calendar.timegm
        self._cache: dict[str, float] = {}

    def __call__(self, text: str) -> float:
        seconds = self._cache.get(text)
        if seconds is None:
            try:
                parsed = time.strptime(text, "%Y-%m-%d")
            except ValueError:
                raise DataError(f"expected an eventdate as YYYY-MM-DD; got {text!r}") from None
            seconds = self._cache[text] = float(self._to_epoch(parsed))
        return seconds


def preprocess_item_views(
    views: str | Path | Sequence[ItemView],
    options: ProtocolOptions | None = None,
    *,
    local_time: bool = False,
) -> SessionSplit:
    """SR-GNN's ``preprocess.py`` on raw item views (a path or rows), as SOURCE.md's Protocol states.

    Each session's clicks are sorted by ``timeframe`` (stable); its date is the ``eventdate`` of
    its last row in file order. Items are renumbered "1".."N" by first appearance in the
    date-ordered training sessions; ``raw_item_ids`` maps them back and ``train_keys`` /
    ``test_keys`` hold the raw session ids.

    Timezone: SR-GNN converts ``eventdate`` with ``time.mktime``, i.e. midnight in the machine's
    local zone. We use midnight UTC by default so the split does not depend on the machine; the
    two agree unless a daylight-saving change falls between the split date and the last date,
    which does not happen for Diginetica (split 2016-05-25, last date 2016-06-01). Pass
    ``local_time=True`` for ``mktime`` exactly.
    """
    rows = read_item_views(views) if isinstance(views, (str, Path)) else views
    date_of = _Dates(local_time)
    clicks: dict[str, list[tuple[int, str]]] = {}
    last_date: dict[str, str] = {}
    for v in rows:
        clicks.setdefault(v.session_id, []).append((v.timeframe, v.item_id))
        last_date[v.session_id] = v.eventdate
    sessions = [
        RawSession(
            sid, date_of(last_date[sid]), tuple(item for _, item in sorted(cs, key=lambda c: c[0]))
        )
        for sid, cs in clicks.items()
    ]
    # SR-GNN's preprocessing counts items over every session, test ones included.
    options = replace(options or ProtocolOptions(), count_items="all")
    return apply_protocol(sessions, options, renumber_items=True)


def raw_to_events(views: Sequence[ItemView], purchases: Sequence[Purchase] = ()) -> list[Event]:
    """Views as clicks plus the purchases of the same sessions, in time order, for a replay.

    ``ts`` is midnight UTC of ``eventdate`` plus ``timeframe``; a click and a purchase at the same
    instant keep click first. ``session_id`` is ``dg-s<sessionId>``; ``user_id`` is
    ``dg-u<userId>`` where the session names a user, else the session id. Purchases of sessions
    without views are left out. Item ids are the raw ids.
    """
    date_of = _Dates(local_time=False)
    users: dict[str, str | None] = {}
    for v in views:
        if users.get(v.session_id) is None:
            users[v.session_id] = v.user_id
    for p in purchases:
        if p.session_id in users and users[p.session_id] is None:
            users[p.session_id] = p.user_id

    def ids(session: str) -> tuple[str, str]:
        user = users[session]
        return (f"dg-u{user}" if user is not None else f"dg-s{session}"), f"dg-s{session}"

    keyed: list[tuple[int, int, int, Event]] = []
    for n, v in enumerate(views):
        user, session = ids(v.session_id)
        ts = int(date_of(v.eventdate) * 1000) + v.timeframe
        keyed.append(
            (
                ts,
                0,
                n,
                Event(f"dg-view-{n}", user, "click", ts, item_id=v.item_id, session_id=session),
            )
        )
    for n, p in enumerate(purchases):
        if p.session_id not in users:
            continue
        user, session = ids(p.session_id)
        ts = int(date_of(p.eventdate) * 1000) + p.timeframe
        keyed.append(
            (
                ts,
                1,
                n,
                Event(
                    f"dg-purchase-{n}", user, "purchase", ts, item_id=p.item_id, session_id=session
                ),
            )
        )
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]
