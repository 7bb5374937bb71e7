"""One event stamped far in the future cannot take over trending (issue 11): the trending clock
follows event time, clamped to the processing time plus a small allowance."""

from __future__ import annotations

import numpy as np

from stream_rec.core.events import Event
from stream_rec.core.recommender import ServingConfig
from stream_rec.core.trending import TrendingItems
from tests.unit.test_core import make

NOW = 1_760_000_000_000


def test_a_far_future_event_does_not_take_over_trending():
    rec = make(ServingConfig(top_k=3))
    hot = [Event(f"h{i}", f"s{i}", "click", NOW - 1000 + i, item_id=f"i{7 + i % 3}")
           for i in range(30)]
    rec.step({}, hot, now_ms=NOW)
    rec.step({}, [Event("x", "skewed", "click", 10**15, item_id="i40")], now_ms=NOW)
    newcomer = Event("c", "new", "search", NOW, query="q")
    (cold,) = rec.step({}, [newcomer], now_ms=NOW).recommendations
    assert {i.item_id for i in cold.items} == {"i7", "i8", "i9"}
    assert max(i.score for i in cold.items) < 0.5  # before: i40 alone, share 1.0


def test_the_clock_moves_with_event_time_up_to_the_allowance():
    t = TrendingItems(5, half_life_s=1.0, max_ahead_ms=60_000)
    t.update(np.array([1]), NOW, now_ms=NOW)
    t.update(np.array([2]), NOW + 10**12, now_ms=NOW)
    assert t.clock_ms == NOW + 60_000  # clamped
    t.update(np.array([3]), NOW + 1000, now_ms=None)  # no processing time: event time
    assert t.clock_ms == NOW + 60_000
    replay = TrendingItems(5)  # an old log replayed now: its past times are not touched
    replay.update(np.array([1]), 1_000, now_ms=NOW)
    assert replay.clock_ms == 1_000
