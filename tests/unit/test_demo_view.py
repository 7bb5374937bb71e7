"""The live demo's view: each recommendation is printed next to the events it answered."""

from __future__ import annotations

import io
from types import SimpleNamespace

from stream_rec.demo import _print_rec


def test_the_live_demo_prints_the_events_a_recommendation_answered():
    out = io.StringIO()
    items = [SimpleNamespace(item_id=f"i{k}", score=1.0 - k / 10) for k in range(20)]
    rec = SimpleNamespace(user_id="u000042", source_event_id="e7", items=items)
    _print_rec(out, rec, ("click i1", 'search "red boots"', "click i9"), 3.25)
    first, second = out.getvalue().splitlines()
    assert first.split(None, 1) == ["u000042", 'click i1 > search "red boots" > [click i9]']
    assert second.strip().startswith("=> i0 (1.00), i1 (0.90)")
    assert second.endswith("[20 items, 3.2 ms, answers e7]")
