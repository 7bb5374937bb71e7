"""Recipes that turn a data source into a model bundle: `stream-rec train`.

Three sources, one path: sessions of events of our contract are folded with the
same :func:`stream_rec.core.session.apply_event` the worker uses, so the model trains
on exactly the arrays it is served.

- ``generated``: the seeded shopper generator (clicks, searches, purchases).
- ``diginetica``: the standard SR-GNN split's training sessions, as click events
  (:func:`stream_rec.datasets.split_to_events`); item ids are the split's ids.
- ``events``: a JSONL event log (``.gz`` too) put through the SR-GNN protocol
  (minimum item count, last ``test_days`` as test); training sees the training
  sessions' events, searches and purchases included. The test sessions are left
  for ``stream-rec evaluate``.

The last ``valid_fraction`` of training sessions (chronological order) is the
validation slice that picks the epoch; no test data is read for training.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.events import Event
from ..core.session import SessionPolicy, SessionState, apply_event
from ..datasets.splits import STANDARD_DATASETS
from ..errors import ConfigError
from ..settings import Settings

if TYPE_CHECKING:
    from ..core.cooccurrence import SessionNeighbours
    from ..core.features import ItemVocab

__all__ = [
    "Recipe",
    "RECIPES",
    "TrainOptions",
    "train_bundle",
    "train_sessions_to_bundle",
    "session_arrays",
    "sessions_of",
    "generated_data_tag",
    "diginetica_data_tag",
    "events_data_tag",
]

log = logging.getLogger("stream_rec.build")

DATASETS = ("generated", "diginetica", "nowplaying", "sessions", "events")


@dataclass(frozen=True)
class Recipe:
    """Model and training hyper-parameters of one data set (``TrainOptions`` may override each)."""

    epochs: int
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_dim: int = 256
    dropout: float = 0.2
    emb_dropout: float = 0.2
    scale: float = 16.0
    lr: float = 1e-3
    lr_decay_every: int = 3
    valid_fraction: float = 0.1  # last share of training sessions held out to pick the epoch
    cooccurrence_weight: float = 0.0  # V-SKNN blended into serving scores; 0 = not in the bundle
    batch_size: int = 128
    max_minutes: float | None = 30.0  # stop training (mid-epoch) after this long; 0/None = never
    negatives: int = 0  # sampled softmax with this many shared uniform negatives; 0 = full softmax
    repeat: bool = False  # the model's repeat head (a logit bonus for the session's own items)
    patience: int = 2  # early stop after this many epochs without a better validation score
    distill: float = 0.0  # weight of V-SKNN's distribution in the training target (model/distill)


# The standard splits (Diginetica, Nowplaying, any `sessions` split): Adam 1e-3 decayed x0.1 every
# 5 epochs (QUALITY.md), sampled softmax with 8,192 shared uniform negatives (per epoch as good as
# the full softmax on Diginetica's validation slice and ~5x cheaper, so ~3x the epochs fit into
# the time cap), V-SKNN distilled into the target (weight 0.5; docs/evaluation.md, "Levers"),
# epochs chosen on validation HR@20 + MRR@20 with early stopping. The repeat head
# and the co-occurrence blend are off: on Diginetica's validation slice the head cost HR@20
# (docs/evaluation.md), and the blend's per-event V-SKNN triples serving CPU.
_STANDARD = Recipe(epochs=20, batch_size=128, lr_decay_every=5, max_minutes=50.0, negatives=8192,
                   distill=0.5)
RECIPES: dict[str, Recipe] = {
    "generated": Recipe(epochs=8, max_minutes=10.0),
    "diginetica": _STANDARD,
    "nowplaying": _STANDARD,
    "sessions": _STANDARD,
    "events": Recipe(epochs=8, max_minutes=30.0),
}


@dataclass(frozen=True)
class TrainOptions:
    """What `stream-rec train` was asked for; ``None`` hyper-parameters come from the recipe."""

    dataset: str = "generated"
    events: int = 60_000  # generated events
    users: int = 2000
    items: int = 3000
    seed: int = 7
    epochs: int | None = None
    dim: int | None = None
    threads: int | None = None
    data_root: str | None = None
    data_dir: str | None = None  # --dataset sessions (or another location of a named split)
    events_file: str | None = None
    max_len: int = 50
    lr: float | None = None
    batch_size: int | None = None
    dropout: float | None = None  # inside the blocks
    emb_dropout: float | None = None
    scale: float | None = None  # cosine -> logit scale
    lr_decay_every: int | None = None
    max_minutes: float | None = None
    negatives: int | None = None
    repeat: bool | None = None
    patience: int | None = None
    distill: float | None = None
    max_sessions: int | None = None  # train on the LAST n training sessions only (quick runs)
    min_item_count: int = 5  # --dataset events: the protocol's filter
    test_days: float = 7.0  # --dataset events: sessions of the last days are the test set
    version: str | None = None  # bundle version name (default: data tag + time)

    def recipe(self) -> Recipe:
        if self.dataset not in RECIPES:
            raise ConfigError(f"--dataset {self.dataset!r}: expected one of {', '.join(DATASETS)}")
        base = RECIPES[self.dataset]
        overrides = {
            name: getattr(self, name)
            for name in ("epochs", "dim", "lr", "batch_size", "dropout", "emb_dropout", "scale",
                         "lr_decay_every", "max_minutes", "negatives", "repeat", "patience", "distill")
            if getattr(self, name) is not None
        }
        return replace(base, **overrides)


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


def _progress(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def train_bundle(settings: Settings, opts: TrainOptions) -> Path:
    """Train on ``opts.dataset`` and write a bundle under ``settings.bundles_dir``; returns its path."""
    recipe = opts.recipe()  # validates the data set name
    if opts.dataset in STANDARD_DATASETS:
        return _train_standard(settings, opts, recipe)
    if opts.dataset == "events":
        return _train_events(settings, opts, recipe)
    from ..generate import EventGenerator, GeneratorConfig

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
        default_epochs=recipe.epochs,
    )


def _train_standard(settings: Settings, opts: TrainOptions, recipe: Recipe) -> Path:
    from ..datasets.diginetica import split_to_events
    from ..datasets.eventlog import SessionSplit
    from ..datasets.splits import load_named_split

    t0 = time.perf_counter()
    named = load_named_split(opts.dataset, opts.data_root, opts.data_dir)  # raises on bad stats
    split = named.split
    _progress(f"{opts.dataset} split ({named.directory}): {named.describe()}")
    # Training sessions only (the last max_sessions of them for a quick run); never the test ones.
    train = split.train_sessions[-opts.max_sessions :] if opts.max_sessions else split.train_sessions
    only_train = SessionSplit(train_sessions=train, test_sessions=[], items=split.items)
    sessions_events = sessions_of(split_to_events(only_train, "train"))
    sessions = [session_arrays(s) for s in sessions_events]
    n_events = sum(map(len, sessions_events))
    _progress(f"folded {n_events:,} click events into {len(sessions):,} sessions "
              f"({time.perf_counter() - t0:.1f}s)")
    return train_sessions_to_bundle(
        settings,
        sessions,
        [[e.item_id for e in s if e.item_id is not None] for s in sessions_events],
        data_tag=standard_data_tag(opts.dataset, opts.max_sessions),
        opts=opts,
        n_events=n_events,
        default_epochs=recipe.epochs,
        extra_info={"split": named.stats.as_dict(), "split_checked": named.checked,
                    "data_dir": str(named.directory)},
    )


def _train_events(settings: Settings, opts: TrainOptions, recipe: Recipe) -> Path:
    from ..datasets.eventlog import ProtocolOptions, split_event_log

    if not opts.events_file:
        raise ConfigError("--dataset events needs --events-file FILE (JSONL, .gz too)")
    t0 = time.perf_counter()
    protocol = ProtocolOptions(min_item_count=opts.min_item_count, test_days=opts.test_days)
    split, invalid = split_event_log(opts.events_file, protocol)
    stats = split.stats()
    _progress(f"{opts.events_file}: {len(invalid):,} invalid records skipped; "
              + ", ".join(f"{k} {v:,}" for k, v in stats.as_dict().items()))
    _progress("protocol: " + ", ".join(f"{k} {v:,}" for k, v in (split.report or {}).items()))
    assert split.train_events is not None  # a log always carries its events
    sessions_events = list(split.train_events)
    if opts.max_sessions:
        sessions_events = sessions_events[-opts.max_sessions :]
    sessions = [session_arrays(s) for s in sessions_events]
    n_events = sum(map(len, sessions_events))
    _progress(f"folded {n_events:,} events into {len(sessions):,} sessions ({time.perf_counter() - t0:.1f}s)")
    return train_sessions_to_bundle(
        settings,
        sessions,
        [[e.item_id for e in s if e.item_id is not None] for s in sessions_events],
        data_tag=events_data_tag(opts.events_file, opts.min_item_count, opts.test_days),
        opts=opts,
        n_events=n_events,
        default_epochs=recipe.epochs,
        extra_info={"split": stats.as_dict(), "protocol_report": split.report, "invalid_records": len(invalid),
                    "protocol": {"min_item_count": opts.min_item_count, "test_days": opts.test_days}},
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
    extra_info: dict[str, Any] | None = None,
) -> Path:
    """Vocabulary (items by descending count), training, ONNX export and bundle, with progress lines.

    The manifest's ``training`` records the data, the hyper-parameters, the wall and CPU time of
    training and the per-epoch validation history; ``metrics`` the selected epoch's numbers.
    """
    from .bundle_writer import write_bundle
    from .sasrec import SASRecConfig
    from .train import TrainConfig, build_vocab, item_popularity, train_model

    recipe = opts.recipe()
    vocab = build_vocab(session_items, min_count=min_count)
    popularity = item_popularity(sessions, vocab)
    model_cfg = SASRecConfig(
        n_items=len(vocab), dim=recipe.dim, max_len=opts.max_len, n_layers=recipe.n_layers,
        n_heads=recipe.n_heads, ffn_dim=recipe.ffn_dim, dropout=recipe.dropout,
        emb_dropout=recipe.emb_dropout, scale=recipe.scale, repeat=recipe.repeat,
    )
    train_cfg = TrainConfig(
        epochs=opts.epochs or default_epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        lr_decay_every=recipe.lr_decay_every, seed=opts.seed, threads=opts.threads,
        valid_fraction=recipe.valid_fraction,
        max_seconds=recipe.max_minutes * 60.0 if recipe.max_minutes else None,  # 0 = no cap
        negatives=recipe.negatives, patience=recipe.patience, distill=recipe.distill,
    )
    _progress(f"training on {len(sessions):,} sessions, {len(vocab):,} items: {model_cfg}, {train_cfg}")
    t0, c0 = time.perf_counter(), time.process_time()
    model, metrics = train_model(sessions, vocab, model_cfg, train_cfg, progress=_progress)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    from .validation import validation_set

    validation = validation_set(model, sessions, vocab, recipe.valid_fraction)
    cooccurrence = None
    if recipe.cooccurrence_weight > 0:  # weight chosen on the validation slice (docs/evaluation.md)
        cooccurrence = (neighbours_for(vocab, session_items), recipe.cooccurrence_weight)
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
            "cpu_seconds": round(cpu_seconds, 1),
            "threads": opts.threads,
            "seed": opts.seed,
            "train_sessions": metrics.train_sessions,
            "valid_sessions": metrics.valid_sessions,
            "hyperparameters": {
                "dim": recipe.dim, "n_layers": recipe.n_layers, "n_heads": recipe.n_heads,
                "ffn_dim": recipe.ffn_dim, "dropout": recipe.dropout,
                "emb_dropout": recipe.emb_dropout, "scale": recipe.scale, "lr": recipe.lr,
                "lr_decay_every": recipe.lr_decay_every, "batch_size": recipe.batch_size,
                "max_minutes": recipe.max_minutes, "max_len": opts.max_len,
                "negatives": recipe.negatives, "repeat": recipe.repeat, "patience": recipe.patience,
                "distill": recipe.distill,
                "valid_fraction": recipe.valid_fraction,
            },
            "history": metrics.history,
            **(extra_info or {}),
        },
        metrics=metrics,
        version=opts.version,
        cooccurrence=cooccurrence,
        validation=validation,
    )
    _progress(f"bundle written to {path} (training {seconds:.0f}s wall, {cpu_seconds:.0f}s CPU; "
              f"valid hr@20 {metrics.valid_hr20:.4f} mrr@20 {metrics.valid_mrr20:.4f} "
              f"at epoch {metrics.best_epoch})")
    return path


def neighbours_for(vocab: ItemVocab, session_items: Sequence[Sequence[str]]) -> SessionNeighbours:
    """The co-occurrence index of training sessions (item ids) over ``vocab``'s rows."""
    from ..core.cooccurrence import SessionNeighbours

    return SessionNeighbours.build(
        [np.fromiter((vocab.row(i) for i in s), np.int64, len(s)) for s in session_items], len(vocab))


def add_cooccurrence(settings: Settings, opts: TrainOptions, bundle_path: str, weight: float) -> Path:
    """A new bundle version: ``bundle_path``'s model plus co-occurrence over the data set's
    training sessions (all of them: unlike the model, V-SKNN needs no held-out slice)."""
    from ..serving.bundle import ModelBundle
    from .bundle_writer import with_cooccurrence

    bundle = ModelBundle.load(bundle_path)
    if opts.dataset in STANDARD_DATASETS:
        from ..datasets.splits import load_named_split

        sessions = load_named_split(opts.dataset, opts.data_root, opts.data_dir).split.train_sessions
    elif opts.dataset == "events":
        from ..datasets.eventlog import ProtocolOptions, split_event_log

        if not opts.events_file:
            raise ConfigError("--dataset events needs --events-file FILE (JSONL, .gz too)")
        protocol = ProtocolOptions(min_item_count=opts.min_item_count, test_days=opts.test_days)
        sessions = split_event_log(opts.events_file, protocol)[0].train_sessions
    else:
        raise ConfigError(f"co-occurrence needs the training sessions of --dataset "
                          f"{', '.join(STANDARD_DATASETS)} or events; "
                          f"got {opts.dataset!r}")
    t0 = time.perf_counter()
    neighbours = neighbours_for(bundle.vocab, sessions)
    path = with_cooccurrence(bundle, settings.bundles_dir, neighbours, weight,
                             note=f"{opts.dataset} training sessions: {len(sessions):,}")
    _progress(f"co-occurrence of {len(sessions):,} training sessions ({time.perf_counter() - t0:.1f}s), "
              f"weight {weight}: bundle written to {path}")
    return path
