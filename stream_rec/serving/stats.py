"""What a worker counts, for its /stats page and the tests (both engines)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.events import Event
from ..core.session import SessionState, count_offset_checks

__all__ = ["WorkerStats", "note_offset_checks"]


@dataclass
class WorkerStats:
    events: int = 0
    dead_letters: int = 0
    processing_errors: int = 0  # events whose processing raised (dead-lettered)
    dlq_failures: int = 0  # dead letters that could not be written
    recommendations: int = 0
    batches: int = 0
    state_resets: int = 0
    model_swaps: int = 0
    redeliveries: int = 0  # records already applied to their user's state (skipped)
    offset_regressions: int = 0  # records below a state's offset that are no redelivery
    forgotten: int = 0  # users whose state a forget event deleted
    states_expired: int = 0  # idle states deleted by the state TTL (direct engine)


def note_offset_checks(
    stats: WorkerStats,
    warn: Callable[..., Any],
    states: Mapping[str, SessionState | None],
    events: Sequence[Event],
    offsets: Sequence[int | None],
    policy: str,
) -> None:
    """Count a batch's redeliveries and offset regressions (core/session.py) and say so: a
    regression means the events topic was re-created or truncated under the worker's state."""
    redeliveries, regressions = count_offset_checks(states, events, offsets)
    stats.redeliveries += redeliveries
    stats.offset_regressions += regressions
    if regressions:
        warn("offset regression: %d record(s) at or below their user's last applied offset carry "
             "later event times (events topic re-created or truncated?); policy %s, %d so far",
             regressions, policy, stats.offset_regressions)
