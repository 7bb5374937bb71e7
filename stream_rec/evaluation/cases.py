"""The scored cases of a split: test sessions as events, and every scored prefix's state.

Shared by offline evaluation (which encodes the states itself) and streaming evaluation
(which replays the events through a worker and ranks what it answers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..core.events import Event
from ..core.session import SessionPolicy, SessionState, apply_event
from ..datasets.eventlog import SessionSplit
from ..settings import Settings

__all__ = ["EvalCase", "split_test_events", "prefix_states", "answering_every_event"]


@dataclass(frozen=True, slots=True)
class EvalCase:
    """One scored prefix: the event whose recommendation is scored, and the item that came next."""

    event_id: str  # the prefix's last event: the recommendation answering it is ranked
    target: str  # item id of the next item event
    prefix_length: int  # item events in the prefix (SR-GNN's prefix length)
    session: int  # index of the test session
    repeat: bool = False  # the target is one of the prefix's items (the shopper goes back to it)


def split_test_events(split: SessionSplit) -> list[tuple[Event, ...]]:
    """The split's test sessions as events: its own events when it has them (an event log), else
    click events synthesized by :func:`stream_rec.datasets.split_to_events` (one user each)."""
    if split.test_events is not None:
        return list(split.test_events)
    from ..datasets.diginetica import split_to_events
    from ..model.build import sessions_of

    return sessions_of(split_to_events(split, "test"))


def prefix_states(
    sessions: Sequence[Sequence[Event]],
    policy: SessionPolicy,
    item_types: Iterable[str] = ("click", "purchase"),
) -> tuple[list[EvalCase], list[SessionState]]:
    """Every scored prefix and the session state after it, folded event by event as serving does."""
    item_types = frozenset(item_types)
    cases: list[EvalCase] = []
    states: list[SessionState] = []
    for s, events in enumerate(sessions):
        state = SessionState.empty()
        items_seen, seen = 0, set[str]()
        for j, event in enumerate(events):
            if event.type in item_types and event.item_id is not None:
                if seen:
                    cases.append(EvalCase(events[j - 1].event_id, event.item_id, items_seen, s,
                                          event.item_id in seen))
                    states.append(state)
                items_seen += 1
                seen.add(event.item_id)
            state = apply_event(state, event, policy)
    return cases, states


def answering_every_event(settings: Settings) -> Settings:
    """What a scored replay serves: every event answered, no filters and no trending cold-start
    answers (both change what is shown, not what the model ranks), the HNSW index."""
    return settings.with_(coalesce=False, filter_purchased=False, filter_clicked=False,
                          cold_start_trending=False, explain=False, index="hnsw")
