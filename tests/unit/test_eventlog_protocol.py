"""The SR-GNN protocol on a JSONL event log (tests/fixtures/events_tiny.jsonl)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from stream_rec.core.events import Event
from stream_rec.datasets.eventlog import (
    ProtocolOptions,
    RawSession,
    apply_protocol,
    read_event_log,
    sessionize,
    split_event_log,
    split_events,
)
from stream_rec.errors import DataError

LOG = Path(__file__).resolve().parents[1] / "fixtures" / "events_tiny.jsonl"
# Items seen twice are kept; the test window is the last day. Day d below = 2024-01-01 + d days.
#   s-1  day 0    search, click A, click B, purchase B (written out of time order)  -> train A B B
#   u2   day 1    no session id: A, C, then B two hours later (a new, 1-item session) -> train A C
#   s-3  day 2    R (seen once, rare), C  -> C alone -> dropped;   s-4 day 3: one click -> dropped
#   s-7  day 5    exactly on the split date (max start day 6 - 1 day) -> neither train nor test
#   s-8  day 5.2  C A B                                                               -> test
#   s-6  day 5.5  N C: N never in training -> C alone -> dropped
#   s-5  day 6    N, search, A, N, B: N dropped, the search kept                      -> test A B
#   two bad records (line 11 not JSON, line 25 a click without item_id), a blank line 21
OPTIONS = ProtocolOptions(min_item_count=2, test_days=1)


def test_invalid_records_come_back_as_data():
    events, invalid = read_event_log(LOG)
    assert len(events) == 22
    assert [(line, rec.reason.split(":")[0]) for line, rec in invalid] == [
        (11, "not valid JSON"),
        (25, "missing field `item_id`"),
    ]


def test_protocol_on_the_log():
    split, invalid = split_event_log(LOG, OPTIONS)
    assert len(invalid) == 2
    assert split.train_sessions == [["A", "B", "B"], ["A", "C"]]
    assert split.train_keys == ["s-1", "u2@1704153600000"]
    assert split.test_sessions == [["C", "A", "B"], ["A", "B"]]  # by start time, not file order
    assert split.test_keys == ["s-8", "s-5"]
    assert split.items == ("A", "B", "C")
    assert split.split_date == 1704067200 + 5 * 86400
    assert split.test_prefixes == [["C", "A"], ["C"], ["A"]]
    assert split.test_targets == ["B", "A", "B"]
    assert split.stats().test_prefixes == 3 and split.stats().unseen_test_items == 0


def test_full_events_are_kept_per_session():
    split, _ = split_event_log(LOG, OPTIONS)
    assert split.train_events is not None and split.test_events is not None
    assert [e.event_id for e in split.train_events[0]] == ["e1", "e2", "e3", "e4"]  # time order
    assert [e.event_id for e in split.test_events[1]] == ["e12", "e13", "e15"]  # N's clicks gone
    aligned = [([e.event_id for e in evs], target) for evs, target in split.test_event_prefixes()]
    assert aligned == [(["e20", "e21"], "B"), (["e20"], "A"), (["e12", "e13"], "B")]


def test_gzip_log_reads_the_same(tmp_path):
    gz = tmp_path / "events.jsonl.gz"
    gz.write_bytes(gzip.compress(LOG.read_bytes()))
    plain, _ = split_event_log(LOG, OPTIONS)
    packed, _ = split_event_log(gz, OPTIONS)
    assert (
        packed.train_sessions == plain.train_sessions
        and packed.test_sessions == plain.test_sessions
    )


def test_default_options():
    events, _ = read_event_log(LOG)
    # Counting over every session (SR-GNN's order): A and B are seen exactly 5 times (kept), C 4
    # (dropped) under the default threshold.
    split = split_events(events, ProtocolOptions(test_days=1, count_items="all"))
    assert split.train_sessions == [["A", "B", "B"]] and split.test_sessions == [
        ["A", "B"],
        ["A", "B"],
    ]
    assert split.test_keys == ["s-8", "s-5"]
    with pytest.raises(DataError, match="no session survives"):
        split_events(events, ProtocolOptions(min_item_count=6, count_items="all"))
    # The log spans 6 days: a 7-day test window leaves nothing to train on.
    with pytest.raises(DataError, match="no training session: the sessions span 6.0 days"):
        split_events(events)


def test_sessionize_uses_the_inactivity_gap():
    def click(user: str, ts: int, item: str) -> Event:
        return Event(f"{user}-{ts}", user, "click", ts, item_id=item)

    minute = 60_000
    events = [
        click("u", 0, "a"),
        click("u", 29 * minute, "b"),
        click("u", 60 * minute, "c"),
        click("v", minute, "d"),
    ]
    sessions = list(sessionize(events, ProtocolOptions(session_gap_ms=30 * minute)))
    assert [(s.key, s.items) for s in sessions] == [
        ("u@0", ("a", "b")),
        ("v@60000", ("d",)),
        ("u@3600000", ("c",)),
    ]
    assert sessions[0].date == 0.0


def test_apply_protocol_can_renumber_events():
    search = Event("q", "u", "search", 1, query="red")
    sessions = [
        RawSession(
            "t1",
            0.0,
            ("x", "y"),
            (
                search,
                Event("1", "u", "click", 2, item_id="x"),
                Event("2", "u", "click", 3, item_id="y"),
            ),
        ),
        RawSession(
            "t2",
            10 * 86400.0,
            ("y", "x"),
            (Event("3", "w", "click", 4, item_id="y"), Event("4", "w", "click", 5, item_id="x")),
        ),
    ]
    split = apply_protocol(sessions, ProtocolOptions(min_item_count=1), renumber_items=True)
    assert split.train_sessions == [["1", "2"]] and split.test_sessions == [["2", "1"]]
    assert split.raw_item_ids == {"1": "x", "2": "y"}
    assert split.train_events is not None and [e.item_id for e in split.train_events[0]] == [
        None,
        "1",
        "2",
    ]


def test_options_are_validated():
    with pytest.raises(ValueError, match="min_session_len"):
        ProtocolOptions(min_session_len=1)
    with pytest.raises(ValueError, match="test_days"):
        ProtocolOptions(test_days=0)
    with pytest.raises(DataError, match="not found"):
        read_event_log(LOG.with_name("missing.jsonl"))


def _clicks(key: str, start_s: float, items: str, gap_s: float = 60.0) -> list[Event]:
    return [Event(f"{key}-{j}", key, "click", int((start_s + j * gap_s) * 1000), item_id=i,
                  session_id=key) for j, i in enumerate(items)]


def test_no_session_is_in_both_windows_and_items_count_in_training_only():
    day = 86_400.0
    events = [
        *_clicks("old", 0, "abab"),
        *_clicks("older", day, "abc"),
        # Starts a minute before the split (day 5 - 1 day test window = day 4), ends after it.
        *_clicks("straddle", 4 * day - 60, "abcc", gap_s=40.0),
        *_clicks("new", 4 * day + 3600, "abcd"),
        *_clicks("newest", 5 * day, "ab"),
    ]
    split = split_events(events, ProtocolOptions(test_days=1, min_item_count=2))
    assert split.train_keys == ["old", "older"] and split.test_keys == ["new", "newest"]
    assert split.report is not None and split.report["straddling_split"] == 1
    # c is seen once in training (twice with the test window, which must not count): dropped,
    # with d (never in training); "new" keeps a, b; its two later prefixes are gone.
    assert split.items == ("a", "b")
    assert split.test_sessions == [["a", "b"], ["a", "b"]]
    assert split.report["rare_items_dropped"] == 2 and split.report["test_prefixes_dropped"] == 2
    # SR-GNN's order counts the test window too: c (3 times in all) survives.
    alt = split_events(events, ProtocolOptions(test_days=1, min_item_count=2, count_items="all"))
    assert "c" in alt.items and alt.report is not None and alt.report["straddling_split"] == 1
