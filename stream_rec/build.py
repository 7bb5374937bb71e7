"""Recipes that turn a data source into a model bundle: `stream-rec train`.

Sessions are folded with the same :func:`stream_rec.session.apply_event` the
worker uses, so the model trains on exactly the arrays it is served.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .events import Event
from .session import SessionPolicy, SessionState, apply_event
from .settings import Settings

__all__ = ["TrainOptions", "train_bundle", "session_arrays", "generated_data_tag"]

log = logging.getLogger("stream_rec.build")


@dataclass(frozen=True)
class TrainOptions:
    dataset: str = "generated"
    events: int = 60_000
    users: int = 2000
    items: int = 3000
    seed: int = 7
    epochs: int | None = None
    dim: int = 64
    threads: int | None = None
    data_root: str | None = None
    events_file: str | None = None
    max_len: int = 50


_UNBOUNDED = SessionPolicy(max_len=10**9, max_purchased=0, session_gap_ms=2**62)


def session_arrays(events: Iterable[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold one session's events into (item hashes, types, query hashes), all of them."""
    state = SessionState.empty()
    for e in events:
        state = apply_event(state, e, _UNBOUNDED)
    return state.sequence()


def generated_data_tag(users: int, items: int, seed: int, events: int) -> str:
    return f"generated:users={users}:items={items}:seed={seed}:events={events}"


def _progress(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def train_bundle(settings: Settings, opts: TrainOptions) -> Path:
    if opts.dataset != "generated":
        raise ConfigError(f"--dataset {opts.dataset}: not available yet; expected generated")
    from .generate import EventGenerator, GeneratorConfig

    t0 = time.perf_counter()
    gen = EventGenerator(GeneratorConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed))
    sessions_events: Sequence[Sequence[Event]] = gen.sessions_for_training(opts.events)
    sessions = [session_arrays(s) for s in sessions_events]
    n_events = sum(len(s) for s in sessions_events)
    _progress(f"generated {n_events:,} events in {len(sessions):,} sessions ({time.perf_counter() - t0:.1f}s)")
    return train_sessions_to_bundle(
        settings,
        sessions,
        [[e.item_id for e in s if e.item_id is not None] for s in sessions_events],
        data_tag=generated_data_tag(opts.users, opts.items, opts.seed, opts.events),
        opts=opts,
        n_events=n_events,
        default_epochs=8,
    )


def train_sessions_to_bundle(
    settings: Settings,
    sessions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    session_items: Sequence[Sequence[str]],
    *,
    data_tag: str,
    opts: TrainOptions,
    n_events: int,
    default_epochs: int,
    min_count: int = 1,
) -> Path:
    """Vocabulary (items by descending count), training, ONNX export and bundle, with progress lines."""
    from .bundle import write_bundle
    from .model.sasrec import SASRecConfig
    from .model.train import TrainConfig, build_vocab, item_popularity, train_model

    vocab = build_vocab(session_items, min_count=min_count)
    popularity = item_popularity(sessions, vocab)
    model_cfg = SASRecConfig(n_items=len(vocab), dim=opts.dim, max_len=opts.max_len)
    train_cfg = TrainConfig(epochs=opts.epochs or default_epochs, seed=opts.seed, threads=opts.threads)
    t0 = time.perf_counter()
    model, metrics = train_model(sessions, vocab, model_cfg, train_cfg, progress=_progress)
    seconds = time.perf_counter() - t0
    path = write_bundle(
        settings.bundles_dir,
        model,
        vocab,
        popularity,
        training_info={
            "data": data_tag,
            "sessions": len(sessions),
            "events": n_events,
            "epochs": train_cfg.epochs,
            "seconds": round(seconds, 1),
            "seed": opts.seed,
        },
        metrics=metrics,
    )
    _progress(f"bundle written to {path} (training {seconds:.0f}s)")
    return path
