"""A poison event costs only itself: a step that raises is retried per user, then per event.

:meth:`Recommender.step` folds a whole micro-batch in one encode and one search, so one event
that makes it raise (a bug, an input no rule foresaw) would fail every event of the batch.
:func:`step_isolated` runs the batch as one step, as before, and only when that raises runs
each user's events as one step, and a user whose step still raises event by event: the events
that raise alone come back in ``failed`` (for the dead-letter topic), every other event is
answered. Valid batches take the first path, so their answers do not change.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from .events import Event, InvalidEvent, RecommendationBatch
from .recommender import Recommender
from .session import SessionState

__all__ = ["IsolatedStep", "step_isolated", "processing_error", "emitted_now"]


@dataclass
class IsolatedStep:
    states: dict[str, SessionState] = field(default_factory=dict)  # users whose state changed
    answers: list[RecommendationBatch] = field(default_factory=list)  # to publish, in order
    failed: list[tuple[int, Exception]] = field(default_factory=list)  # (event index, error)


def emitted_now(answers: list[RecommendationBatch]) -> list[RecommendationBatch]:
    """``answers`` stamped with the wall clock now: a live worker's ``emitted_ts`` is when the
    answers were ready (after compute), not when their batch was taken (the ``now_ms`` the step
    used for its trending clock), so the latency a consumer reads includes the compute."""
    now = int(time.time() * 1000)
    return [replace(a, emitted_ts=now) for a in answers]


def _pick(offsets: Sequence[int | None] | None, idx: Sequence[int]) -> list[int | None] | None:
    return None if offsets is None else [offsets[i] for i in idx]


def step_isolated(
    recommender: Recommender,
    states: Mapping[str, SessionState | None],
    events: Sequence[Event],
    offsets: Sequence[int | None] | None = None,
    now_ms: int | None = None,
) -> IsolatedStep:
    """:meth:`Recommender.step` that never raises for an event: see the module docstring."""
    try:
        result = recommender.step(states, events, offsets, now_ms)
        return IsolatedStep(result.states, [result.answers])
    except Exception:  # noqa: BLE001 - any failure is isolated below, then reported per event
        pass
    out = IsolatedStep()
    by_user: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        by_user.setdefault(event.user_id, []).append(i)
    for user, idx in by_user.items():
        try:
            result = recommender.step(
                {user: states.get(user)}, [events[i] for i in idx], _pick(offsets, idx), now_ms)
        except Exception:  # noqa: BLE001
            pass
        else:
            out.states.update(result.states)
            out.answers.append(result.answers)
            continue
        state = states.get(user)
        for i in idx:
            try:
                result = recommender.step({user: state}, [events[i]], _pick(offsets, [i]), now_ms)
            except Exception as exc:  # noqa: BLE001
                out.failed.append((i, exc))
                continue
            state = out.states[user] = result.states[user]
            out.answers.append(result.answers)
    return out


def processing_error(exc: Exception, raw: bytes | None) -> InvalidEvent:
    """The dead letter's content for an event whose processing raised ``exc``."""
    return InvalidEvent(f"processing failed: {type(exc).__name__}: {exc}", raw or b"",
                        "processing_error")
