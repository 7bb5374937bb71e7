"""The generated shopper stream: seeded, time-ordered, skewed, funnel-shaped, with bad records."""

from __future__ import annotations

import gzip
import math
import random
import time
from collections import Counter

import pytest

from stream_rec.core.events import Event, InvalidEvent, encode_event, parse_event
from stream_rec.core.features import query_token_hashes
from stream_rec.errors import ConfigError, DataError
from stream_rec.generate import (
    INVALID_KINDS,
    EventGenerator,
    GeneratorConfig,
    invalid_record,
    read_jsonl,
    write_jsonl,
)

SMALL = GeneratorConfig(n_users=500, n_items=800, n_categories=12, seed=3)


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return list(EventGenerator(SMALL).events(30_000))


def test_same_seed_same_stream_other_seed_other_shoppers_same_shop():
    a = list(EventGenerator(SMALL).events(2000))
    b = list(EventGenerator(SMALL).events(2000))
    assert a == b
    other = EventGenerator(GeneratorConfig(n_users=500, n_items=800, n_categories=12, seed=4))
    assert [e.user_id for e in other.events(2000)] != [e.user_id for e in a]
    shop = EventGenerator(SMALL).catalogue
    assert other.catalogue.item_ids == shop.item_ids
    assert (other.catalogue.related == shop.related).all()
    assert other.catalogue.words == shop.words


def test_time_ordered_unique_ids_and_valid_events(stream):
    ts = [e.ts for e in stream]
    assert ts == sorted(ts)
    assert ts[0] >= SMALL.start_ts
    assert len({e.event_id for e in stream}) == len(stream)
    assert all(e.session_id for e in stream)
    assert all(e.user_id.startswith("u") and len(e.user_id) == 7 for e in stream)
    for e in stream[:2000]:
        assert parse_event(encode_event(e), e.user_id.encode()) == e


def test_sessions_are_interleaved_and_users_come_back_later(stream):
    # Many shoppers are active at once: consecutive events mostly belong to other sessions.
    switches = sum(a.session_id != b.session_id for a, b in zip(stream, stream[1:], strict=False))
    assert switches > 0.5 * len(stream)
    sessions: dict[str, list[Event]] = {}
    for e in stream:
        sessions.setdefault(e.session_id, []).append(e)
    assert len({e.user_id for s in sessions.values() for e in s[:1]}) < len(sessions), (
        "repeat visits"
    )
    # seconds within a session, hours or days between a user's sessions
    inside = [b.ts - a.ts for s in sessions.values() for a, b in zip(s, s[1:], strict=False)]
    inside.sort()
    assert 3_000 < inside[len(inside) // 2] < 120_000
    starts: dict[str, list[tuple[int, int]]] = {}
    for s in sessions.values():
        starts.setdefault(s[0].user_id, []).append((s[0].ts, s[-1].ts))
    between = [b[0] - a[1] for v in starts.values() for a, b in zip(v, v[1:], strict=False)]
    assert min(between) >= 30 * 60_000, "a user's next session starts after the session gap"
    assert sorted(between)[len(between) // 2] > 3_600_000


def test_click_popularity_is_skewed(stream):
    clicks = Counter(e.item_id for e in stream if e.type == "click")
    top = sum(c for _, c in clicks.most_common(SMALL.n_items // 10))
    share = top / sum(clicks.values())
    assert share > 0.4, f"top 10% of items take {share:.0%} of clicks"


def test_funnels_purchases_follow_clicks_of_the_same_item(stream):
    sessions: dict[str, list[Event]] = {}
    for e in stream:
        sessions.setdefault(e.session_id, []).append(e)
    purchases = 0
    for events in sessions.values():
        clicked: set[str] = set()
        for e in events:
            if e.type == "click":
                clicked.add(e.item_id)
            elif e.type == "purchase":
                purchases += 1
                assert e.item_id in clicked, "a purchase follows a click of the same item"
    with_purchase = sum(any(e.type == "purchase" for e in s) for s in sessions.values())
    assert 0.08 < with_purchase / len(sessions) < 0.2  # purchase_rate 0.15, less the no-click ones
    first = Counter(s[0].type for s in sessions.values())
    assert 0.5 < first["search"] / len(sessions) < 0.7  # search_rate 0.6
    assert purchases > 0


def test_searches_and_next_clicks_carry_signal(stream):
    gen = EventGenerator(SMALL)
    cat = gen.catalogue
    # A search's words are its category's words: the click after it is mostly in that category.
    word_category = {w: c for c, words in enumerate(cat.words) for w in words}
    hits = total = 0
    by_session: dict[str, list[Event]] = {}
    for e in stream:
        by_session.setdefault(e.session_id, []).append(e)
    follows = pairs = 0
    for events in by_session.values():
        for a, b in zip(events, events[1:], strict=False):
            if a.type == "search" and b.type == "click":
                cats = {word_category[w] for w in a.query.split() if w in word_category}
                total += 1
                hits += cat.category_of(b.item_id) in cats
            if a.type == "click" and b.type == "click":
                pairs += 1
                follows += int(b.item_id[1:]) - 1 in cat.related[int(a.item_id[1:]) - 1]
    assert hits / total > 0.8
    assert follows / pairs > 0.4, "next clicks often follow related items"
    assert all(query_token_hashes(e.query) for e in stream if e.type == "search")


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_invalid_records_are_all_rejected_at_about_the_requested_rate(rate):
    n = 4000
    records = list(EventGenerator(SMALL).records(n, invalid_rate=rate))
    assert len(records) == n
    invalid = 0
    for key, value, valid in records:
        parsed = parse_event(value, key)
        if valid:
            assert isinstance(parsed, Event) and key == parsed.user_id.encode()
        else:
            invalid += 1
            assert isinstance(parsed, InvalidEvent), value
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(invalid - n * rate) <= 4 * sd + 1


EXPECTED_REASON = {
    "bad_json": "not valid JSON",
    "truncated_json": "not valid JSON",
    "bad_utf8": "not valid JSON",
    "not_an_object": "expected a JSON object; got list",
    "missing_field": "missing field",
    "unknown_type": "unknown event type",
    "wrong_field_type": "must be",
    "click_without_item": "missing field `item_id`",
    "empty_query": "a search event needs a non-empty string `query`",
    "key_mismatch": "does not match user_id",
}


@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_each_kind_of_invalid_record_is_rejected_for_its_reason(stream, kind):
    rng = random.Random(0)
    for event in stream[:300]:  # every variant of the kind, on clicks, searches and purchases
        key, value = invalid_record(event, kind, rng)
        parsed = parse_event(value, key)
        assert isinstance(parsed, InvalidEvent), value
        assert EXPECTED_REASON[kind] in parsed.reason


def test_records_mix_every_kind_of_invalid_record():
    reasons = [
        parse_event(value, key).reason
        for key, value, _ in EventGenerator(SMALL).records(2000, invalid_rate=1.0)
    ]
    assert {want for want in EXPECTED_REASON.values() if any(want in r for r in reasons)} == set(
        EXPECTED_REASON.values()
    )


def test_live_time_stamps_records_with_the_wall_clock():
    now = int(time.time() * 1000)
    stamps = [parse_event(v, k).ts for k, v, _ in EventGenerator(SMALL).records(500, now_ms=now)]
    assert stamps == sorted(stamps)
    assert now <= stamps[0] and stamps[-1] <= int(time.time() * 1000) + 1


def test_sessions_for_training():
    gen = EventGenerator(SMALL)
    sessions = gen.sessions_for_training(5000)
    assert sum(len(s) for s in sessions) == 5000
    assert all(len({e.session_id for e in s}) == 1 for s in sessions)
    assert all([e.ts for e in s] == sorted(e.ts for e in s) for s in sessions)
    assert sum(len(s) for s in sessions) / len(sessions) > 3


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_jsonl_round_trip(tmp_path, stream, name):
    path = tmp_path / "sub" / name
    assert write_jsonl(stream[:1000], path) == 1000
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            assert f.readline().startswith(b"{")
    lines = list(read_jsonl(path))
    assert [parse_event(line) for line in lines] == stream[:1000]


def test_read_jsonl_skips_blank_lines_and_reports_missing_or_corrupt_files(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \r\nnot json\n')
    assert list(read_jsonl(path)) == [b'{"a": 1}', b"not json"]  # parse_event judges lines
    with pytest.raises(DataError, match="does not exist"):
        list(read_jsonl(tmp_path / "missing.jsonl"))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-20])
    with pytest.raises(DataError, match="cannot read events file"):
        list(read_jsonl(broken))


def test_config_is_validated():
    with pytest.raises(ConfigError, match="n_categories \\(50\\) must not exceed n_items \\(10\\)"):
        GeneratorConfig(n_items=10, n_categories=50)
    with pytest.raises(ConfigError, match="purchase_rate must be in \\[0, 1\\]; got 1.5"):
        GeneratorConfig(purchase_rate=1.5)
    with pytest.raises(ConfigError, match="unknown kind of invalid record 'nope'"):
        invalid_record(next(EventGenerator(SMALL).events(1)), "nope")
    with pytest.raises(ConfigError, match="invalid_rate"):
        next(EventGenerator(SMALL).records(10, invalid_rate=2.0))
    with pytest.raises(ConfigError, match=r"backtrack_rate must be in \[0, 0.37\]"):
        GeneratorConfig(backtrack_rate=0.5)


def _repeat_share(events: list[Event]) -> float:
    """The share of clicks (after a session's first) on an item clicked earlier in the session."""
    seen: dict[str, set[str]] = {}
    n = repeats = 0
    for e in events:
        if e.type != "click" or e.item_id is None:
            continue
        items = seen.setdefault(e.session_id or "", set())
        if items:
            n += 1
            repeats += e.item_id in items
        items.add(e.item_id)
    return repeats / n


def test_backtrack_rate_sets_how_often_a_session_returns_to_its_items(stream):
    """The default stream is the one before the knob; a log like those where shoppers go back
    to items (nearly half of some shops' next clicks) is one setting away."""
    assert list(EventGenerator(SMALL).events(3000)) == stream[:3000]
    heavy = GeneratorConfig(n_users=500, n_items=800, n_categories=12, seed=3, backtrack_rate=0.37)
    base, more = _repeat_share(stream), _repeat_share(list(EventGenerator(heavy).events(30_000)))
    assert 0.08 < base < 0.25 and more > 0.35 and more > base + 0.2



# ---- a drifting catalogue (issue 23): items launched day by day, trending, retired
def _drift_events(n: int = 40_000, **kw):
    from stream_rec.generate import EventGenerator, GeneratorConfig

    cfg = GeneratorConfig(n_users=800, n_items=600, seed=3, launches_per_day=10, **kw)
    return EventGenerator(cfg), list(EventGenerator(cfg).events(n))


def test_drift_launches_new_items_day_by_day_and_is_seeded():
    gen, events = _drift_events()
    again = list(gen.events(40_000))
    assert again == events  # each call replays the same drifting catalogue
    new = [e for e in events if e.item_id and int(e.item_id[1:]) > 600]
    assert len(new) > 0.03 * len(events)
    first_seen: dict[str, int] = {}
    for e in new:
        first_seen.setdefault(e.item_id, e.ts)
    launches = sorted(first_seen.values())
    days = (events[-1].ts - events[0].ts) / 86_400_000
    assert len(first_seen) >= 0.5 * 10 * days  # most launches are clicked
    assert launches[0] - events[0].ts < 0.5 * 86_400_000 < launches[-1] - events[0].ts


def test_a_launched_item_rises_then_fades():
    _, events = _drift_events(80_000, trend_days=1.0)
    day = 86_400_000
    start = events[0].ts
    by_item: dict[str, list[int]] = {}
    for e in events:
        if e.item_id and int(e.item_id[1:]) > 600:
            by_item.setdefault(e.item_id, []).append((e.ts - start) // day)
    # the first launches: clicked in their first days, no longer after 6 trend periods
    early = [ts for item, ts in by_item.items() if int(item[1:]) <= 603]
    assert early and all(max(t) <= 7 for t in early)


def test_no_drift_keeps_the_fixed_stream():
    from stream_rec.generate import EventGenerator, GeneratorConfig

    fixed = list(EventGenerator(GeneratorConfig(n_users=300, n_items=200, seed=2)).events(3000))
    assert all(int(e.item_id[1:]) <= 200 for e in fixed if e.item_id)
