"""Diginetica: SR-GNN's preprocessing on a hand-written raw file, events, and the real files when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_rec.datasets.diginetica import (
    DATA_ROOT_ENV,
    DEFAULT_START_TS_MS,
    check_stats,
    data_root,
    diginetica_dir,
    load_standard_split,
    preprocess_item_views,
    raw_to_events,
    read_item_views,
    read_product_categories,
    read_purchases,
    read_test_prefixes,
    sessions_from_prefixes,
    split_to_events,
)
from stream_rec.datasets.eventlog import ProtocolOptions, SessionSplit
from stream_rec.errors import DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VIEWS = FIXTURES / "diginetica_views_tiny.csv"
PURCHASES = FIXTURES / "diginetica_purchases_tiny.csv"
DATA = diginetica_dir()


def need_data(*names: str) -> Path:
    for name in names:
        if not (DATA / name).is_file():
            pytest.skip(f"{DATA / name} not present (set {DATA_ROOT_ENV})")
    return DATA


# --- SR-GNN preprocessing on the fixture -----------------------------------------------------
# The fixture, session by session (max date 2016-06-01, so the split date is 2016-05-25):
#   1  05-10  clicks written out of time order: 200@3000 100@1000 300@2000 -> 100 300 200
#   2  05-01  400 100; dated before 1 though later in the file, so it is numbered first
#   3, 4      one click each: dropped first, so 777's click in 4 does not count towards its 5
#   5  05-15  100 200 777 777 after sorting; 777 has 4 counted clicks (rare) -> 100 200
#   6  05-20  900 300; 900 is rare -> one item left -> dropped
#   7  05-25  exactly on the split date: in neither train nor test
#   8  05-30  500 100 200 500; 500 is frequent but never in training -> 100 200
#   9  06-01  500 300 500 -> 300 alone -> dropped (it still sets the max date)
#   10 05-24 / 05-26: its date is its last row's, so it is a test session: 300 200 400
#   11 05-18  777 777 300 -> dropped;  12 05-31  500 400 500 -> dropped
#   13 05-05  400@30 300@10 400@20 -> 300 400 400
# Train by date: 2 (05-01), 13 (05-05), 1 (05-10), 5 (05-15); renumbered 400->1 100->2 300->3 200->4.
EXPECTED_TRAIN = [["1", "2"], ["3", "1", "1"], ["2", "3", "4"], ["2", "4"]]
EXPECTED_TEST = [["3", "4", "1"], ["2", "4"]]  # 10 (05-26), then 8 (05-30)


def test_preprocess_applies_every_rule():
    split = preprocess_item_views(VIEWS)
    assert split.train_sessions == EXPECTED_TRAIN
    assert split.train_keys == ["2", "13", "1", "5"]
    assert split.test_sessions == EXPECTED_TEST
    assert split.test_keys == ["10", "8"]
    assert split.items == ("1", "2", "3", "4")
    assert split.raw_item_ids == {"1": "400", "2": "100", "3": "300", "4": "200"}
    assert split.test_prefixes == [["3", "4"], ["3"], ["2"]]
    assert split.test_targets == ["1", "4", "4"]
    assert split.stats().as_dict() == {
        "train_sessions": 4,
        "train_clicks": 10,
        "train_pairs": 6,
        "test_sessions": 2,
        "test_clicks": 5,
        "test_prefixes": 3,
        "items": 4,
        "unseen_test_items": 0,
    }
    prefixes, targets = split.train_pairs()
    assert prefixes[:3] == [["1"], ["3", "1"], ["3"]] and targets[:3] == ["2", "1", "1"]


def test_preprocess_options_change_the_filters():
    # With every item kept, 900 survives: session 6 (05-20) becomes a training session.
    split = preprocess_item_views(VIEWS, ProtocolOptions(min_item_count=1))
    assert "6" in (split.train_keys or [])
    # With a 3-day test window the split date is 05-29: session 10 (05-26) moves to training.
    split = preprocess_item_views(VIEWS, ProtocolOptions(test_days=3))
    assert split.test_keys == ["8"] and "10" in (split.train_keys or [])


def test_official_camel_case_header(tmp_path):
    text = VIEWS.read_text().replace("session_id;user_id;item_id", "sessionId;userId;itemId", 1)
    (tmp_path / "views.csv").write_text(text)
    assert preprocess_item_views(tmp_path / "views.csv").train_sessions == EXPECTED_TRAIN


def test_malformed_raw_files_raise_data_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("session_id;item_id;timeframe;eventdate\n1;2;3;2016-01-01\n")
    with pytest.raises(DataError, match="missing column user_id or userId"):
        read_item_views(bad)
    bad.write_text("session_id;user_id;item_id;timeframe;eventdate\n1;NA;2;soon;2016-01-01\n")
    with pytest.raises(DataError, match=r"bad.csv:2: expected an integer timeframe"):
        read_item_views(bad)
    with pytest.raises(DataError, match="not found"):
        read_item_views(tmp_path / "missing.csv")


def test_raw_to_events_joins_purchases():
    views, purchases = read_item_views(VIEWS), read_purchases(PURCHASES)
    events = raw_to_events(views, purchases)
    assert len(events) == len(views) + 2  # the purchase of session 99 (no views) is left out
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    s8 = [e for e in events if e.session_id == "dg-s8"]
    assert [(e.type, e.item_id) for e in s8] == [
        ("click", "500"),
        ("click", "100"),
        ("click", "200"),
        ("purchase", "200"),
        ("click", "500"),
    ]  # the purchase at timeframe 3 comes after the click at 3
    assert {e.user_id for e in s8} == {"dg-u43"}
    assert s8[0].ts == 1_464_566_400_000 + 1  # 2016-05-30T00:00Z + 1 ms
    s1 = [e for e in events if e.session_id == "dg-s1"]
    assert {e.user_id for e in s1} == {"dg-s1"}  # no user named: keyed by session
    # Rows written out of order come out in time order; the purchase at 500 ms precedes the views.
    assert [(e.type, e.item_id) for e in s1] == [
        ("purchase", "100"),
        ("click", "100"),
        ("click", "300"),
        ("click", "200"),
    ]


def test_product_categories(tmp_path):
    path = tmp_path / "cats.csv"
    path.write_text("itemId;categoryId\n139578;1096\n5;7\n")
    assert read_product_categories(path) == {"139578": "1096", "5": "7"}


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert data_root() == tmp_path and diginetica_dir() == tmp_path / "diginetica"
    assert data_root("/elsewhere") == Path("/elsewhere")
    monkeypatch.delenv(DATA_ROOT_ENV)
    assert data_root() == Path(__file__).resolve().parents[2].parent / "shared" / "data"


# --- the standard split's structure ----------------------------------------------------------


def test_sessions_from_prefixes_undoes_augmentation():
    prefixes = [["1", "2", "3"], ["1", "2"], ["1"], ["4"]]
    targets = ["2", "3", "2", "5"]
    assert sessions_from_prefixes(prefixes, targets) == [["1", "2", "3", "2"], ["4", "5"]]
    with pytest.raises(DataError, match="prefix 1"):
        sessions_from_prefixes([["1", "2"], ["9"]], ["3", "2"])  # not the previous prefix's head
    with pytest.raises(DataError, match="prefix 1"):
        sessions_from_prefixes([["1", "2"], ["1"]], ["3", "7"])  # target is not the dropped item
    with pytest.raises(DataError, match="last session"):
        sessions_from_prefixes([["1", "2"]], ["3"])


def test_read_test_prefixes_with_and_without_header(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("prefix\ttarget\n1 2\t3\n1\t2\n")
    assert read_test_prefixes(path) == ([["1", "2"], ["1"]], ["3", "2"])
    path.write_text("1 2\t3\n1\t2\n")
    assert read_test_prefixes(path) == ([["1", "2"], ["1"]], ["3", "2"])
    path.write_text("1 2 3\n")
    with pytest.raises(DataError, match="prefix<TAB>target"):
        read_test_prefixes(path)


def test_check_stats_names_each_difference():
    tiny = SessionSplit(train_sessions=[["1", "2"]], test_sessions=[["1", "2"]], items=("1", "2"))
    with pytest.raises(
        DataError, match=r"train_sessions: expected 186,670, got 1;.*items: expected 43,097, got 2"
    ):
        check_stats(tiny)


def test_split_to_events_timeline():
    split = SessionSplit(
        train_sessions=[["1", "2"], ["3", "1", "2"]],
        test_sessions=[["2", "1", "3"]],
        items=("1", "2", "3"),
    )
    train = list(split_to_events(split, "train"))
    test = list(split_to_events(split, "test"))
    assert [e.event_id for e in train[:3]] == [
        "dg-train-000000-0",
        "dg-train-000000-1",
        "dg-train-000001-0",
    ]
    assert all(e.user_id == e.session_id and e.type == "click" for e in train + test)
    ts = [e.ts for e in train + test]
    assert ts[0] == DEFAULT_START_TS_MS and all(a < b for a, b in zip(ts, ts[1:], strict=False))
    assert ts[2] - ts[1] == 60_000 and ts[1] - ts[0] == 1_000
    assert test[0].ts - train[-1].ts == 60_000  # test continues the train timeline
    # Scoring after each test event but a session's last against the next item = the split's pairs.
    pairs = []
    for i, e in enumerate(test):
        nxt = test[i + 1] if i + 1 < len(test) else None
        if nxt is not None and nxt.session_id == e.session_id:
            pairs.append(
                ([x.item_id for x in test[: i + 1] if x.session_id == e.session_id], nxt.item_id)
            )
    assert sorted(pairs) == sorted(zip(split.test_prefixes, split.test_targets, strict=True))
    with pytest.raises(ValueError):
        list(split_to_events(split, "valid"))  # type: ignore[arg-type]


# --- the real files, when present ------------------------------------------------------------


def test_standard_split_matches_source_md():
    d = need_data("train_sessions.txt", "test_prefixes.tsv")
    split = load_standard_split(d)
    stats = check_stats(split)  # 186,670 / 906,140 / 719,470 train; 15,963 / 76,821 / 60,858 test
    assert stats.items == 43_097 and split.items[:3] == ("1", "2", "3")
    file_prefixes, file_targets = read_test_prefixes(d / "test_prefixes.tsv")
    assert split.test_prefixes == file_prefixes and split.test_targets == file_targets
    assert split.test_prefixes[0] == ["21553", "20071", "8762", "21566", "6381"]
    assert split.test_sessions[0] == ["21553", "20071", "8762", "21566", "6381", "21566"]
    assert sum(1 for _ in split_to_events(split, "test")) == 76_821


def test_raw_sample_and_purchases():
    d = need_data("sample_train-item-views.csv", "train-purchases.csv")
    views, purchases = (
        read_item_views(d / "sample_train-item-views.csv"),
        read_purchases(d / "train-purchases.csv"),
    )
    assert len(views) == 12_391 and len(purchases) == 18_025
    events = raw_to_events(views, purchases)
    assert sum(e.type == "purchase" for e in events) == 256  # SOURCE.md
    assert len({e.session_id for e in events}) == 2_986
    # Matches the output of SR-GNN's preprocess.py (commit a58c6c62) run on the same file.
    stats = preprocess_item_views(views).stats()
    assert (stats.train_sessions, stats.test_sessions, stats.items) == (469, 39, 309)


def test_real_product_categories():
    d = need_data("product-categories.csv")
    cats = read_product_categories(d / "product-categories.csv")
    assert len(cats) == 184_047 and len(set(cats.values())) == 1_217 and cats["139578"] == "1096"
