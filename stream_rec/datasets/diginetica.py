"""DIGINETICA (CIKM Cup 2016): the standard SR-GNN split, the raw CSV files, and events from both.

Files (see ``<data root>/diginetica/SOURCE.md``; never copied into the repository):

- ``train_sessions.txt`` and ``test_prefixes.tsv``: the standard split of SR-GNN / GCE-GNN and the
  papers after them. **Its item ids are SR-GNN's renumbering 1..43,097 (order of first appearance
  in training); nothing in these files maps them back to the raw ``itemId`` s**, so they cannot be
  joined with purchases or product categories.
- ``train-item-views.csv`` (raw; only a 12k-row sample ships here), ``train-purchases.csv``,
  ``product-categories.csv``: raw ids, ``;``-separated. :func:`preprocess_item_views` applies
  SR-GNN's preprocessing to the views and gives the same :class:`SessionSplit` type.

:func:`split_to_events` and :func:`raw_to_events` turn either into events of our contract, so
one set of files drives training, offline evaluation and the streaming replay.
"""

from __future__ import annotations

import calendar
import csv
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import DataError
from ..events import Event
from .eventlog import ProtocolOptions, RawSession, SessionSplit, SplitStats, apply_protocol

__all__ = [
    "DATA_ROOT_ENV",
    "DIGINETICA_STATS",
    "DEFAULT_START_TS_MS",
    "ItemView",
    "Purchase",
    "data_root",
    "diginetica_dir",
    "read_train_sessions",
    "read_test_prefixes",
    "sessions_from_prefixes",
    "load_standard_split",
    "check_stats",
    "read_item_views",
    "read_purchases",
    "read_product_categories",
    "preprocess_item_views",
    "raw_to_events",
    "split_to_events",
]

DATA_ROOT_ENV = "STREAM_REC_DATA_ROOT"
TRAIN_FILE = "train_sessions.txt"
TEST_FILE = "test_prefixes.tsv"

# The standard split as SOURCE.md states it (and SR-GNN's Table 1: 982,961 clicks in all).
DIGINETICA_STATS = SplitStats(
    train_sessions=186_670,
    train_clicks=906_140,
    train_pairs=719_470,
    test_sessions=15_963,
    test_clicks=76_821,
    test_prefixes=60_858,
    items=43_097,
    unseen_test_items=0,
)

DEFAULT_START_TS_MS = 1_451_606_400_000  # 2016-01-01T00:00:00Z, the start of the Diginetica log


def data_root(root: str | Path | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$STREAM_REC_DATA_ROOT``, else
    ``../shared/data`` relative to the repository root."""
    if root is None:
        root = (
            os.environ.get(DATA_ROOT_ENV)
            or Path(__file__).resolve().parents[2].parent / "shared" / "data"
        )
    return Path(root)


def diginetica_dir(root: str | Path | None = None) -> Path:
    return data_root(root) / "diginetica"


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(
            f"{what} not found at {str(path)!r}; set {DATA_ROOT_ENV} or pass the data root"
        )
    return path


# --- the standard split -------------------------------------------------------------------------


def _item_ids(text: str, where: str) -> list[str]:
    ids = text.split(" ")
    if not all(i.isdigit() for i in ids):
        raise DataError(
            f"{where}: expected item ids (digits) separated by single spaces; got {text[:80]!r}"
        )
    return ids


def read_train_sessions(path: str | Path) -> list[list[str]]:
    """``train_sessions.txt``: one session a line, item ids separated by spaces, time order."""
    path = _need(Path(path), "training sessions")
    with open(path, encoding="ascii") as f:
        return [_item_ids(line.rstrip("\n"), f"{path}:{n}") for n, line in enumerate(f, 1)]


def read_test_prefixes(path: str | Path) -> tuple[list[list[str]], list[str]]:
    """``test_prefixes.tsv``: ``prefix \\t target`` a line, after an optional header."""
    path = _need(Path(path), "test prefixes")
    prefixes: list[list[str]] = []
    targets: list[str] = []
    with open(path, encoding="ascii") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if n == 1 and line == "prefix\ttarget":
                continue
            prefix, tab, target = line.partition("\t")
            if not tab:
                raise DataError(f"{path}:{n}: expected `prefix<TAB>target`; got {line[:80]!r}")
            prefixes.append(_item_ids(prefix, f"{path}:{n}"))
            targets.append(_item_ids(target, f"{path}:{n}")[0])
    return prefixes, targets


def sessions_from_prefixes(
    prefixes: Sequence[Sequence[str]], targets: Sequence[str]
) -> list[list[str]]:
    """Undo SR-GNN's augmentation. A session [v1..vn] was written as ([v1..vn-1], vn), ...,
    ([v1], v2): longest first, so a prefix of length 1 closes a session. Raises DataError where
    the pairs do not have that shape."""
    if len(prefixes) != len(targets):
        raise DataError(
            f"expected one target per prefix; got {len(prefixes)} prefixes, {len(targets)} targets"
        )
    sessions: list[list[str]] = []
    current: list[str] | None = None
    expected_len = 0
    for n, (prefix, target) in enumerate(zip(prefixes, targets, strict=True)):
        if current is None:
            current = [*prefix, target]
        elif (
            len(prefix) != expected_len
            or list(prefix) != current[: len(prefix)]
            or current[len(prefix)] != target
        ):
            raise DataError(
                f"prefix {n}: expected the previous prefix minus its last item ({expected_len} items, "
                f"target {current[expected_len] if expected_len < len(current) else '?'}); "
                f"got {len(prefix)} items, target {target}"
            )
        expected_len = len(prefix) - 1
        if expected_len == 0:
            sessions.append(current)
            current = None
    if current is not None:
        raise DataError("the last session's prefixes end before a prefix of length 1")
    return sessions


def load_standard_split(directory: str | Path | None = None) -> SessionSplit:
    """The standard split from ``directory`` (default: :func:`diginetica_dir`).

    Item ids are SR-GNN's renumbered ids "1".."43097"; see the module docstring.
    """
    d = Path(directory) if directory is not None else diginetica_dir()
    train = read_train_sessions(d / TRAIN_FILE)
    prefixes, targets = read_test_prefixes(d / TEST_FILE)
    test = sessions_from_prefixes(prefixes, targets)
    items = tuple(dict.fromkeys(i for s in train for i in s))
    return SessionSplit(train_sessions=train, test_sessions=test, items=items)


def check_stats(split: SessionSplit, expected: SplitStats = DIGINETICA_STATS) -> SplitStats:
    """The split's statistics; raises DataError naming each one that differs from ``expected``."""
    got = split.stats()
    diffs = [
        f"{name}: expected {want:,}, got {have:,}"
        for (name, want), have in zip(
            expected.as_dict().items(), got.as_dict().values(), strict=True
        )
        if want != have
    ]
    if diffs:
        raise DataError("split statistics differ from SOURCE.md: " + "; ".join(diffs))
    return got


# --- raw CSV files ------------------------------------------------------------------------------


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
    path = _need(Path(path), "item views")
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
    path = _need(Path(path), "purchases")
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
    path = _need(
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
    return apply_protocol(sessions, options, renumber_items=True)


# --- events -------------------------------------------------------------------------------------


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


def split_to_events(
    split: SessionSplit,
    part: Literal["train", "test"] = "train",
    *,
    start_ts_ms: int | None = None,
    click_gap_ms: int = 1_000,
    session_gap_ms: int = 60_000,
    key_prefix: str = "dg",
) -> Iterator[Event]:
    """The split's sessions as click events, sessions in order, one user per session.

    Session ``i`` of ``part`` gets ``user_id == session_id == f"{key_prefix}-{part}-{i:06d}"``;
    its clicks are ``click_gap_ms`` apart and each session starts ``session_gap_ms`` after the
    previous one's last click. Timestamps strictly increase. By default train starts at
    :data:`DEFAULT_START_TS_MS` and test continues right after train, as one timeline.

    A test session's events are the whole session (its longest prefix plus target): scoring the
    recommendation made after each event but the last against the next item gives exactly the
    split's (prefix, target) pairs.
    """
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test'; got {part!r}")
    if click_gap_ms < 1 or session_gap_ms < 1:
        raise ValueError(
            "click_gap_ms and session_gap_ms must be >= 1 so timestamps strictly increase"
        )
    sessions = split.train_sessions if part == "train" else split.test_sessions
    if start_ts_ms is None:
        start_ts_ms = DEFAULT_START_TS_MS
        if part == "test":
            n_train, train_clicks = len(split.train_sessions), sum(map(len, split.train_sessions))
            start_ts_ms += (train_clicks - n_train) * click_gap_ms + n_train * session_gap_ms
    ts = start_ts_ms
    for i, items in enumerate(sessions):
        key = f"{key_prefix}-{part}-{i:06d}"
        for j, item in enumerate(items):
            yield Event(f"{key}-{j}", key, "click", ts, item_id=item, session_id=key)
            ts += click_gap_ms
        ts += session_gap_ms - click_gap_ms
