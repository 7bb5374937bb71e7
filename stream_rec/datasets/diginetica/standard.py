"""The standard SR-GNN split (``train_sessions.txt``, ``test_prefixes.tsv``), its statistics,
and its sessions as click events.

Item ids are SR-GNN's renumbering 1..43,097 and cannot be mapped back to the raw ids (see the
package docstring).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from ...core.events import Event
from ...errors import DataError
from ..eventlog import SessionSplit, SplitStats
from .files import diginetica_dir, require_file

__all__ = [
    "TRAIN_FILE",
    "TEST_FILE",
    "DIGINETICA_STATS",
    "DEFAULT_START_TS_MS",
    "read_train_sessions",
    "read_test_prefixes",
    "sessions_from_prefixes",
    "load_standard_split",
    "check_stats",
    "split_to_events",
]

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


def _item_ids(text: str, where: str) -> list[str]:
    ids = text.split(" ")
    if not all(i.isdigit() for i in ids):
        raise DataError(
            f"{where}: expected item ids (digits) separated by single spaces; got {text[:80]!r}"
        )
    return ids


def read_train_sessions(path: str | Path) -> list[list[str]]:
    """``train_sessions.txt``: one session a line, item ids separated by spaces, time order."""
    path = require_file(Path(path), "training sessions")
    with open(path, encoding="ascii") as f:
        return [_item_ids(line.rstrip("\n"), f"{path}:{n}") for n, line in enumerate(f, 1)]


def read_test_prefixes(path: str | Path) -> tuple[list[list[str]], list[str]]:
    """``test_prefixes.tsv``: ``prefix \\t target`` a line, after an optional header."""
    path = require_file(Path(path), "test prefixes")
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
