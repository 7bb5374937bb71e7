"""Run the core over a list of events with no broker: for users testing their own rules.

    >>> recs = run_events(recommender, events)          # doctest: +SKIP

The same :meth:`Recommender.step` the worker calls, over an in-memory store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .core.events import Event, InvalidEvent, Recommendation
from .core.intake import take_records
from .core.recommender import Recommender
from .core.seams import SessionStore
from .runtime.stores import MemoryStore

__all__ = ["run_events", "run_records"]


def run_events(
    recommender: Recommender,
    events: Iterable[Event],
    store: SessionStore | None = None,
    batch_size: int = 256,
) -> list[Recommendation]:
    """Feed events in micro-batches of ``batch_size``; returns every recommendation emitted."""
    store = store if store is not None else MemoryStore()
    out: list[Recommendation] = []
    batch: list[Event] = []

    def flush() -> None:
        users = {e.user_id for e in batch}
        result = recommender.step({u: store.get(u) for u in users}, batch)
        for user, state in result.states.items():
            store.put(user, state)
        out.extend(result.recommendations)
        batch.clear()

    for event in events:
        batch.append(event)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return out


def run_records(
    recommender: Recommender, records: Sequence[tuple[bytes | None, bytes]], batch_size: int = 256
) -> tuple[list[Recommendation], list[InvalidEvent]]:
    """Like :func:`run_events` over raw (key, value) records; invalid ones come back as data.

    The records go through the workers' intake (:mod:`stream_rec.core.intake`): a record without
    a key is invalid here as it is live."""
    intake = take_records(
        (key, value, offset, None, None) for offset, (key, value) in enumerate(records))
    invalid = [bad for bad, _ in intake.invalid]
    return run_events(recommender, intake.events, batch_size=batch_size), invalid
