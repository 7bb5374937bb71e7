"""The training sessions of a `stream-rec train` run, from any of its sources, folded with the
worker's own :func:`stream_rec.core.session.apply_event` (``build.session_arrays``).

- ``generated``: the seeded shopper generator (clicks, searches, purchases).
- ``diginetica``, ``nowplaying``, ``sessions``: a standard split's training sessions, as click
  events (the last ``max_sessions`` of them for a quick run); never the test ones.
- ``events``: a JSONL event log put through the SR-GNN protocol; its training sessions' events.

Training and the bundle steps after it (``stream-rec neighbours``) read the same sessions.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.events import Event
from ..core.session import SessionPolicy, SessionState, apply_event
from ..datasets.splits import STANDARD_DATASETS
from ..errors import ConfigError
from .recipes import TrainOptions

__all__ = ["TrainingData", "training_data", "session_arrays", "sessions_of", "generated_data_tag",
           "standard_data_tag", "diginetica_data_tag", "events_data_tag"]

_UNBOUNDED = SessionPolicy(max_len=10**9, max_purchased=0, session_gap_ms=2**62)


def session_arrays(events: Iterable[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold one session's events into (item hashes, types, query hashes), all of them."""
    state = SessionState.empty()
    for e in events:
        state = apply_event(state, e, _UNBOUNDED)
    return state.sequence()


def sessions_of(events: Iterable[Event]) -> list[tuple[Event, ...]]:
    """Consecutive events of one ``session_id`` as one session (the split's event order)."""
    return [tuple(g) for _, g in itertools.groupby(events, key=lambda e: e.session_id)]


def generated_data_tag(users: int, items: int, seed: int, events: int) -> str:
    return f"generated:users={users}:items={items}:seed={seed}:events={events}"


def standard_data_tag(dataset: str, max_sessions: int | None = None) -> str:
    return dataset + (f":last={max_sessions}" if max_sessions else "")


def diginetica_data_tag(max_sessions: int | None = None) -> str:
    return standard_data_tag("diginetica", max_sessions)


def events_data_tag(path: str | Path, min_item_count: int, test_days: float) -> str:
    return f"events:{Path(path).name}:min_count={min_item_count}:test_days={test_days:g}"




@dataclass
class TrainingData:
    sessions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # folded: item hashes, types, queries
    session_items: list[list[str]]  # each session's item ids, in order
    n_events: int
    data_tag: str
    extra_info: dict[str, Any] = field(default_factory=dict)


def training_data(opts: TrainOptions, progress: Callable[[str], None]) -> TrainingData:
    """The sessions ``opts`` names, in training order, with the tag and facts a manifest records."""
    opts.recipe()  # validates the data set name
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    sessions_events: Sequence[Sequence[Event]]
    if opts.dataset in STANDARD_DATASETS:
        sessions_events = _standard(opts, progress, extra)
        tag = standard_data_tag(opts.dataset, opts.max_sessions)
    elif opts.dataset == "events":
        sessions_events = _events(opts, progress, extra)
        tag = events_data_tag(str(opts.events_file), opts.min_item_count, opts.test_days)
    else:
        from ..generate import EventGenerator, GeneratorConfig

        gen = EventGenerator(
            GeneratorConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed)
        )
        sessions_events = gen.sessions_for_training(opts.events)
        tag = generated_data_tag(opts.users, opts.items, opts.seed, opts.events)
    sessions = [session_arrays(s) for s in sessions_events]
    n_events = sum(map(len, sessions_events))
    seconds = time.perf_counter() - t0
    progress(f"folded {n_events:,} events into {len(sessions):,} sessions ({seconds:.1f}s)")
    items = [[e.item_id for e in s if e.item_id is not None] for s in sessions_events]
    return TrainingData(sessions, items, n_events, tag, extra)


def _standard(
    opts: TrainOptions, progress: Callable[[str], None], extra: dict[str, Any]
) -> Sequence[Sequence[Event]]:
    from ..datasets.diginetica import split_to_events
    from ..datasets.eventlog import SessionSplit
    from ..datasets.splits import load_named_split
    named = load_named_split(opts.dataset, opts.data_root, opts.data_dir)  # raises on bad stats
    split = named.split
    progress(f"{opts.dataset} split ({named.directory}): {named.describe()}")
    train = (
        split.train_sessions[-opts.max_sessions :] if opts.max_sessions else split.train_sessions
    )
    only_train = SessionSplit(train_sessions=train, test_sessions=[], items=split.items)
    extra.update(
        {
            "split": named.stats.as_dict(),
            "split_checked": named.checked,
            "data_dir": str(named.directory),
        }
    )
    return sessions_of(split_to_events(only_train, "train"))


def _events(
    opts: TrainOptions, progress: Callable[[str], None], extra: dict[str, Any]
) -> Sequence[Sequence[Event]]:
    from ..datasets.eventlog import ProtocolOptions, split_event_log

    if not opts.events_file:
        raise ConfigError("--dataset events needs --events-file FILE (JSONL, .gz too)")
    protocol = ProtocolOptions(min_item_count=opts.min_item_count, test_days=opts.test_days)
    split, invalid = split_event_log(opts.events_file, protocol)
    stats = split.stats()
    progress(
        f"{opts.events_file}: {len(invalid):,} invalid records skipped; "
        + ", ".join(f"{k} {v:,}" for k, v in stats.as_dict().items())
    )
    progress("protocol: " + ", ".join(f"{k} {v:,}" for k, v in (split.report or {}).items()))
    assert split.train_events is not None  # a log always carries its events
    sessions_events = list(split.train_events)
    extra.update(
        {
            "split": stats.as_dict(),
            "protocol_report": split.report,
            "invalid_records": len(invalid),
            "protocol": {"min_item_count": opts.min_item_count, "test_days": opts.test_days},
        }
    )
    return sessions_events[-opts.max_sessions :] if opts.max_sessions else sessions_events
