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

import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..datasets.splits import STANDARD_DATASETS
from ..errors import ConfigError
from ..settings import Settings
from .recipes import (
    OPTIONS_FILE,
    RECIPES,
    Recipe,
    TrainOptions,
    load_options,
    model_config_for,
    save_options,
)
from .training_data import (
    diginetica_data_tag,
    events_data_tag,
    generated_data_tag,
    session_arrays,
    sessions_of,
)

if TYPE_CHECKING:
    from ..core.cooccurrence import SessionNeighbours
    from ..core.features import ItemVocab

__all__ = [
    "Recipe",
    "RECIPES",
    "TrainOptions",
    "train_bundle",
    "resume_bundle",
    "train_sessions_to_bundle",
    "session_arrays",
    "sessions_of",
    "generated_data_tag",
    "diginetica_data_tag",
    "events_data_tag",
]

log = logging.getLogger("stream_rec.build")

def _progress(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def train_bundle(settings: Settings, opts: TrainOptions) -> Path:
    """Train on ``opts.dataset`` and write a bundle under ``settings.bundles_dir``; returns its path.

    Every epoch is checkpointed in the run directory (``opts.checkpoint_dir``, by default a new
    one under ``<bundles_dir>/.runs/``, removed once the bundle is written); a run directory
    that holds a checkpoint is resumed (:func:`resume_bundle`)."""
    opts.recipe()  # validates the data set name before anything is written
    if opts.bundles_dir is None:
        opts = replace(opts, bundles_dir=str(Path(settings.bundles_dir).resolve()))
    auto = opts.checkpoint_dir is None
    if auto:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        run = Path(settings.bundles_dir) / ".runs" / f"{opts.dataset}-{stamp}-{os.getpid()}"
        opts = replace(opts, checkpoint_dir=str(run))
    run_dir = Path(str(opts.checkpoint_dir))
    if not (run_dir / OPTIONS_FILE).is_file():
        save_options(run_dir, opts)
    _progress(f"checkpoints after each epoch in {run_dir} (a stopped run continues with "
              f"`stream-rec train --resume {run_dir}`)")
    path = _train_from_source(settings, opts)
    if auto:
        shutil.rmtree(run_dir, ignore_errors=True)
    return path


def resume_bundle(settings: Settings, run_dir: str, threads: int | None = None,
                  max_minutes: float | None = None, refit_rates: tuple[float, ...] | None = None,
                  refit_soup: int | None = None, refit_tail: float | None = None,
                  bundles_dir_given: bool = True) -> Path:
    """Continue the run in ``run_dir`` from its last completed epoch, with the options it was
    started with (``threads`` and ``max_minutes`` may be given anew); writes its bundle.

    ``refit_rates``, ``refit_soup`` and ``refit_tail`` change only what follows training (a
    finished run goes straight to its refit): given, they are the run's options from now on
    (``options.json``). Without ``bundles_dir_given`` the bundle goes where the run started
    writing (``TrainOptions.bundles_dir``; runs started before it was recorded: ``settings``')."""
    opts = load_options(run_dir)
    if not bundles_dir_given and opts.bundles_dir:  # where the run was writing when it started
        settings = replace(settings, bundles_dir=opts.bundles_dir)
    if refit_rates is not None or refit_soup is not None or refit_tail is not None:
        opts = replace(opts, refit_rates=refit_rates if refit_rates is not None else opts.refit_rates,
                       refit_soup=refit_soup if refit_soup is not None else opts.refit_soup,
                       refit_tail=refit_tail if refit_tail is not None else opts.refit_tail)
        save_options(run_dir, opts)
    if threads is not None:
        opts = replace(opts, threads=threads)
    if max_minutes is not None:
        opts = replace(opts, max_minutes=max_minutes)
    return train_bundle(settings, opts)


def _train_from_source(settings: Settings, opts: TrainOptions) -> Path:
    from .training_data import training_data

    data = training_data(opts, _progress)
    return train_sessions_to_bundle(
        settings, data.sessions, data.session_items, data_tag=data.data_tag, opts=opts,
        n_events=data.n_events, default_epochs=opts.recipe().epochs, extra_info=data.extra_info,
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
    from .train import TrainConfig, build_vocab, item_popularity, train_model

    recipe = opts.recipe()
    vocab = build_vocab(session_items, min_count=min_count)
    popularity = item_popularity(sessions, vocab)
    model_cfg = model_config_for(opts, len(vocab))
    train_cfg = TrainConfig(
        epochs=opts.epochs or default_epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        lr_decay_every=recipe.lr_decay_every, seed=opts.seed, threads=opts.threads,
        valid_fraction=recipe.valid_fraction,
        max_seconds=recipe.max_minutes * 60.0 if recipe.max_minutes else None,  # 0 = no cap
        negatives=recipe.negatives, patience=recipe.patience, distill=recipe.distill,
        refit_soup=recipe.refit_soup, teacher_run=opts.teacher_run, teacher_mix=opts.teacher_mix,
        order=recipe.order, refit_rates=recipe.refit_rates, refit_tail=recipe.refit_tail,
        checkpoint_dir=opts.checkpoint_dir,
    )
    _progress(f"training on {len(sessions):,} sessions, {len(vocab):,} items: {model_cfg}, {train_cfg}")
    t0, c0 = time.perf_counter(), _cpu_seconds()
    model, metrics = train_model(sessions, vocab, model_cfg, train_cfg, progress=_progress)
    seconds, cpu_seconds = time.perf_counter() - t0, _cpu_seconds() - c0
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
            # the completed epochs' wall and CPU time, earlier runs of a resumed one included
            "epoch_seconds": round(metrics.fit_seconds, 1),
            "epoch_cpu_seconds": round(metrics.fit_cpu_seconds, 1),
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
                "distill": recipe.distill, "readout": recipe.readout, "positions": recipe.positions,
                "item_dropout": recipe.item_dropout, "recency": recipe.recency, "transition": recipe.transition,
                "mixed_scoring": recipe.mixed_scoring,
                "attend": recipe.attend, "item_neighbours": recipe.item_neighbours,
                "valid_fraction": recipe.valid_fraction, "refit_soup": recipe.refit_soup,
                "global_neighbours": recipe.global_neighbours, "order": recipe.order,
                "refit_rates": list(recipe.refit_rates), "refit_tail": recipe.refit_tail,
                "teacher_run": opts.teacher_run,
                "teacher_mix": opts.teacher_mix if opts.teacher_run else None,
            },
            "history": metrics.history,
            # what the refit chose (rate, passes, soup) and the validation halves' scores
            "refit": _refit_info(metrics.refit),
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
    if recipe.item_neighbours:
        from .item_blend import add_item_neighbours

        return add_item_neighbours(path, settings.bundles_dir, sessions, _progress,
                                   queries=metrics.selected_queries,
                                   item_vectors=metrics.selected_items) or path
    return path


def _refit_info(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The refit's report for the manifest: the halves' scores in percent, rounded."""
    if not report:
        return None
    halves = {k: [round(100 * h, 2), round(100 * m, 2)] for k, (h, m) in report["half_scores"].items()}
    return {**report, "half_scores": halves, "seconds": round(report["seconds"], 1)}


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


def _cpu_seconds() -> float:
    """This process's CPU time and its finished children's (the refit's worker processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime
