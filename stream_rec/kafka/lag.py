"""Consumer lag per assigned partition, read from an aiokafka consumer without a request.

The consumer already knows each assigned partition's high watermark (from its last fetch) and
its own position; their difference is the lag Prometheus scrapes. aiokafka exposes the high
watermark (``highwater``) but the position only through a coroutine, so the subscription state
is read directly (as ``kill -USR1``'s dump does); partitions without both are left out.
"""

from __future__ import annotations

from typing import Any

__all__ = ["consumer_lag"]


def consumer_lag(consumer: Any) -> dict[int, int]:
    try:
        assignment = consumer._subscription.subscription.assignment
    except AttributeError:
        return {}
    if assignment is None:
        return {}
    out = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state.has_valid_position and state.highwater is not None:
            out[tp.partition] = max(0, state.highwater - state.position)
    return out
