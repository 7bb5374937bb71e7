"""The SR-GNN evaluation protocol on any event log, and the :class:`SessionSplit` it produces.

The protocol (Wu et al., AAAI'19, ``datasets/preprocess.py``), stated for sessions of items:

1. drop sessions shorter than ``min_session_len`` (2);
2. split on the session date: with ``split = max date - test_days``, train is ``date < split``
   and test is ``date > split`` (a session exactly on the split date is in neither). A session
   that starts before the split but has events after it (``RawSession.end``) is in neither
   either: its later events belong to the test window, so training on it would leak (SR-GNN
   dates sessions by one day and never meets this; a raw event log does);
3. count item occurrences (``count_items="train"``: in training sessions only, so nothing about
   the test window decides the vocabulary; ``"all"``: over every session, SR-GNN's own order for
   its Diginetica preprocessing), drop items seen fewer than ``min_item_count`` (5) times, then
   sessions left shorter than ``min_session_len``;
4. order training sessions by date (ties keep input order); drop test items never seen in
   training, then test sessions left too short;
5. augment: the session [v1..vn] gives ([v1..vn-1], vn), ..., ([v1], v2), longest first.

``SessionSplit.report`` counts what each step dropped.

:func:`apply_protocol` runs it on :class:`RawSession` s, which the Diginetica reader builds from
its CSV files. For a JSONL log in our event contract, :func:`split_events` first groups events into
sessions (``session_id``, else the user's events cut at an inactivity gap); a session's date is the
time of its first event, and its item sequence is its click and purchase events in time order.
The filters drop item events only: searches (and purchases, which are item events) stay in
``SessionSplit.train_events`` / ``test_events``, so an event-aware model sees the inputs the
streaming pipeline sees.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

from ..core.events import Event, InvalidEvent, parse_event
from ..core.session import SessionPolicy
from ..errors import DataError

__all__ = [
    "ProtocolOptions",
    "RawSession",
    "SessionSplit",
    "SplitStats",
    "augment",
    "apply_protocol",
    "read_event_log",
    "sessionize",
    "split_events",
    "split_event_log",
]

_DAY_S = 86_400.0


@dataclass(frozen=True)
class ProtocolOptions:
    """How sessions are filtered and split. The defaults are SR-GNN's Diginetica settings."""

    min_item_count: int = 5  # items seen fewer times (in sessions of valid length) are dropped
    min_session_len: int = 2  # sessions with fewer items are dropped, before and after filtering
    test_days: float = 7.0  # test = sessions dated after (max date - test_days)
    # Events without a session_id: a user's session ends after this much inactivity.
    session_gap_ms: int = SessionPolicy().session_gap_ms
    item_types: tuple[str, ...] = ("click", "purchase")  # event types whose items form the sequence
    count_items: str = "train"  # where min_item_count counts: "train" sessions only, or "all"

    def __post_init__(self) -> None:
        if self.count_items not in ("train", "all"):
            raise ValueError(f"count_items must be 'train' or 'all'; got {self.count_items!r}")
        if self.min_item_count < 1:
            raise ValueError(f"min_item_count must be >= 1; got {self.min_item_count}")
        if self.min_session_len < 2:
            raise ValueError(
                f"min_session_len must be >= 2 (a target needs a prefix); got {self.min_session_len}"
            )
        if self.test_days <= 0:
            raise ValueError(f"test_days must be > 0; got {self.test_days}")


@dataclass(frozen=True)
class RawSession:
    """One session before the protocol: its key, its date in epoch seconds, its items in time order.

    When ``events`` is given, ``items`` must be the ids of its item-bearing events in order; the
    protocol then filters both together.
    """

    key: str
    date: float
    items: tuple[str, ...]
    events: tuple[Event, ...] | None = None
    end: float | None = None  # time of its last event (epoch seconds); None: the same as date


@dataclass(frozen=True)
class SplitStats:
    train_sessions: int
    train_clicks: int
    train_pairs: int  # augmented (prefix, target) training pairs
    test_sessions: int
    test_clicks: int
    test_prefixes: int
    items: int
    unseen_test_items: int  # distinct test items missing from training (0 under the protocol)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def augment(sessions: Sequence[Sequence[str]]) -> tuple[list[list[str]], list[str]]:
    """SR-GNN's ``process_seqs``: every (prefix, next item) of every session, longest first."""
    prefixes: list[list[str]] = []
    targets: list[str] = []
    for seq in sessions:
        for i in range(len(seq) - 1, 0, -1):
            prefixes.append(list(seq[:i]))
            targets.append(seq[i])
    return prefixes, targets


@dataclass(frozen=True, eq=False)
class SessionSplit:
    """A train/test split of sessions, item ids as strings, everything in chronological order.

    ``items`` is the training vocabulary in order of first appearance in training. Keys, events
    and ``raw_item_ids`` are present when the source has them (a raw log), ``None`` otherwise.
    """

    train_sessions: list[list[str]]
    test_sessions: list[list[str]]
    items: tuple[str, ...]
    train_keys: list[str] | None = None
    test_keys: list[str] | None = None
    train_events: list[tuple[Event, ...]] | None = None
    test_events: list[tuple[Event, ...]] | None = None
    raw_item_ids: dict[str, str] | None = None  # renumbered id -> id in the source, when renumbered
    split_date: float | None = None  # epoch seconds
    item_types: tuple[str, ...] = ("click", "purchase")  # which events make up the sequences
    report: dict[str, int] | None = None  # what the protocol dropped, step by step

    @cached_property
    def _test_pairs(self) -> tuple[list[list[str]], list[str]]:
        return augment(self.test_sessions)

    @property
    def test_prefixes(self) -> list[list[str]]:
        """Every test prefix, SR-GNN order (per session, longest first)."""
        return self._test_pairs[0]

    @property
    def test_targets(self) -> list[str]:
        """The item following each of :attr:`test_prefixes`."""
        return self._test_pairs[1]

    def train_pairs(self) -> tuple[list[list[str]], list[str]]:
        """The augmented training set (SR-GNN's ``train.txt``), built afresh on each call."""
        return augment(self.train_sessions)

    def test_event_prefixes(self) -> list[tuple[tuple[Event, ...], str]]:
        """(events before the target event, target item) aligned with :attr:`test_prefixes`."""
        if self.test_events is None:
            raise DataError("this split carries no events (it was built from item sequences)")
        out: list[tuple[tuple[Event, ...], str]] = []
        for events in self.test_events:
            positions = [j for j, e in enumerate(events) if e.type in self.item_types]
            for j in reversed(positions[1:]):
                item = events[j].item_id
                assert item is not None
                out.append((events[:j], item))
        return out

    def stats(self) -> SplitStats:
        vocab = set(self.items)
        test_items = {i for s in self.test_sessions for i in s}
        return SplitStats(
            train_sessions=len(self.train_sessions),
            train_clicks=sum(map(len, self.train_sessions)),
            train_pairs=sum(len(s) - 1 for s in self.train_sessions),
            test_sessions=len(self.test_sessions),
            test_clicks=sum(map(len, self.test_sessions)),
            test_prefixes=sum(len(s) - 1 for s in self.test_sessions),
            items=len(self.items),
            unseen_test_items=len(test_items - vocab),
        )


@dataclass
class _Work:
    key: str
    date: float
    end: float
    items: list[str]
    events: list[Event] | None

    def keep_items(self, keep: Callable[[str], bool], item_types: tuple[str, ...]) -> None:
        self.items = [i for i in self.items if keep(i)]
        if self.events is not None:
            self.events = [
                e for e in self.events if e.type not in item_types or keep(e.item_id or "")
            ]


def apply_protocol(
    sessions: Iterable[RawSession],
    options: ProtocolOptions | None = None,
    *,
    renumber_items: bool = False,
) -> SessionSplit:
    """Filter, split and order sessions as SR-GNN does (see the module docstring).

    With ``renumber_items`` the items become "1".."N" in order of first appearance in training
    (SR-GNN's numbering) and ``raw_item_ids`` maps them back.
    """
    opt = options or ProtocolOptions()
    sessions = list(sessions)
    work = [
        _Work(s.key, s.date, s.date if s.end is None else s.end, list(s.items),
              None if s.events is None else list(s.events))
        for s in sessions
        if len(s.items) >= opt.min_session_len
    ]
    if not work:
        raise DataError("no session survives the protocol's filters; expected at least one")
    pairs_before = straddling = 0
    rare: set[str] = set()

    def drop_rare(ws: list[_Work], counted: Iterable[_Work]) -> list[_Work]:
        counts = Counter(i for w in counted for i in w.items)
        rare.update(i for w in ws for i in w.items if counts[i] < opt.min_item_count)
        for w in ws:
            w.keep_items(lambda i: counts[i] >= opt.min_item_count, opt.item_types)
        return [w for w in ws if len(w.items) >= opt.min_session_len]

    if opt.count_items == "all":  # SR-GNN's order: filter everything, then split
        work = drop_rare(work, list(work))
    if not work:
        raise DataError("no session survives the protocol's filters; expected at least one")
    split_date = max(w.date for w in work) - opt.test_days * _DAY_S
    train = [w for w in work if w.date < split_date and w.end < split_date]
    straddling = sum(1 for w in work if w.date < split_date <= w.end)
    test = [w for w in work if w.date > split_date]
    pairs_before = sum(len(w.items) - 1 for w in test)
    if opt.count_items == "train":  # the vocabulary sees nothing of the test window
        counted = list(train)
        train, test = drop_rare(train, counted), drop_rare(test, counted)
    train.sort(key=lambda w: w.date)
    test.sort(key=lambda w: w.date)
    if not train:
        span_days = (max(w.date for w in work) - min(w.date for w in work)) / _DAY_S
        raise DataError(
            f"no training session: the sessions span {span_days:.1f} days; expected more than "
            f"test_days={opt.test_days}, and items seen at least min_item_count={opt.min_item_count} "
            "times in training"
        )

    vocab: dict[str, str] = {}  # source id -> output id, in order of first appearance
    for w in train:
        for i in w.items:
            if i not in vocab:
                vocab[i] = str(len(vocab) + 1) if renumber_items else i
    for w in test:
        w.keep_items(lambda i: i in vocab, opt.item_types)
    test = [w for w in test if len(w.items) >= opt.min_session_len]
    report = {
        "sessions": len(sessions),
        "too_short": len(sessions) - len(work),
        "straddling_split": straddling,
        "train_sessions": len(train),
        "test_sessions": len(test),
        "rare_items_dropped": len(rare),
        "test_prefixes_dropped": pairs_before - sum(len(w.items) - 1 for w in test),
    }

    def output(ws: list[_Work]) -> tuple[list[list[str]], list[tuple[Event, ...]] | None]:
        seqs = [[vocab[i] for i in w.items] for w in ws]
        if any(w.events is None for w in ws):
            return seqs, None
        return seqs, [tuple(renumber(e) for e in w.events or ()) for w in ws]

    def renumber(e: Event) -> Event:
        if not renumber_items or e.item_id not in vocab:  # a search, or ids kept as they are
            return e
        return replace(e, item_id=vocab[e.item_id])

    train_seqs, train_events = output(train)
    test_seqs, test_events = output(test)
    return SessionSplit(
        train_sessions=train_seqs,
        test_sessions=test_seqs,
        items=tuple(vocab.values()),
        train_keys=[w.key for w in train],
        test_keys=[w.key for w in test],
        train_events=train_events,
        test_events=test_events,
        raw_item_ids={new: old for old, new in vocab.items()} if renumber_items else None,
        split_date=split_date,
        item_types=opt.item_types,
        report=report,
    )


def read_event_log(path: str | Path) -> tuple[list[Event], list[tuple[int, InvalidEvent]]]:
    """Read a JSONL event log (``.gz`` or plain): the valid events and, as data, the invalid
    records with their 1-based line numbers. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"event log {str(path)!r} not found; expected a JSONL file (.jsonl or .jsonl.gz)"
        )
    opener = gzip.open if path.suffix == ".gz" else open
    events: list[Event] = []
    invalid: list[tuple[int, InvalidEvent]] = []
    with opener(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parsed = parse_event(line)
            if isinstance(parsed, InvalidEvent):
                invalid.append((lineno, parsed))
            else:
                events.append(parsed)
    return events, invalid


def sessionize(
    events: Iterable[Event], options: ProtocolOptions | None = None
) -> Iterator[RawSession]:
    """Group events into sessions: by (user_id, session_id) when the event has a session id, else
    the user's events cut where the gap between two events exceeds ``session_gap_ms``.

    Events are put in time order first (stable, so equal timestamps keep log order). Sessions come
    out ordered by their first event; the session date is that event's time in seconds.
    """
    opt = options or ProtocolOptions()
    ordered = sorted(events, key=lambda e: e.ts)
    groups: dict[tuple[str, str], list[Event]] = {}
    open_gap_session: dict[str, tuple[str, int]] = {}  # user -> (group key suffix, last ts)
    for e in ordered:
        if e.session_id is not None:
            key = (e.user_id, "s:" + e.session_id)
        else:
            current = open_gap_session.get(e.user_id)
            if current is None or e.ts - current[1] > opt.session_gap_ms:
                suffix = f"g:{e.ts}"
            else:
                suffix = current[0]
            open_gap_session[e.user_id] = (suffix, e.ts)
            key = (e.user_id, suffix)
        groups.setdefault(key, []).append(e)
    for (user, suffix), evs in groups.items():
        session_key = suffix[2:] if suffix.startswith("s:") else f"{user}@{suffix[2:]}"
        items = tuple(e.item_id for e in evs if e.type in opt.item_types and e.item_id is not None)
        yield RawSession(session_key, evs[0].ts / 1000.0, items, tuple(evs), end=evs[-1].ts / 1000.0)


def split_events(events: Iterable[Event], options: ProtocolOptions | None = None) -> SessionSplit:
    """Sessionize events and apply the protocol; the split carries each session's full events."""
    opt = options or ProtocolOptions()
    return apply_protocol(sessionize(events, opt), opt)


def split_event_log(
    path: str | Path, options: ProtocolOptions | None = None
) -> tuple[SessionSplit, list[tuple[int, InvalidEvent]]]:
    """:func:`read_event_log` then :func:`split_events`; invalid records are skipped and returned."""
    events, invalid = read_event_log(path)
    return split_events(events, options), invalid
