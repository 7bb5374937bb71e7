"""One update: fine-tune the served model, warm-started, on the newest sessions plus a sample of
older ones (so it does not forget what the window does not show).

The loss and the batching are training's own (:func:`stream_rec.model.steps.batch_loss`, sampled
softmax, length-sorted batches); the learning rate is the one training ended at, by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from ..core.features import ItemVocab
from ..errors import ConfigError
from ..model.examples import (
    Session,
    featurize_sessions,
    length_batches,
    pad_examples,
    training_examples,
)
from ..model.sasrec import SessionTransformer
from ..model.steps import batch_loss

__all__ = ["UpdateConfig", "UpdateStats", "fine_tune", "replay_sample"]

T = TypeVar("T")


@dataclass(frozen=True)
class UpdateConfig:
    epochs: int = 1  # passes over (window + replay sample)
    lr: float = 1e-4  # a trained recipe's last (decayed) rate
    batch_size: int = 128
    negatives: int = 8192  # sampled softmax, as in training (0 = full softmax)
    replay: float = 1.0  # older sessions sampled per window session
    seed: int = 7
    threads: int = 1
    max_seconds: float | None = None  # stop after the batch that passes it

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"epochs and batch_size must be >= 1; got {self.epochs}, {self.batch_size}"
            )
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0; got {self.lr}")
        if self.replay < 0:
            raise ConfigError(
                f"replay must be >= 0 (older sessions per new one); got {self.replay}"
            )


@dataclass
class UpdateStats:
    sessions: int = 0  # window sessions trained on
    replayed: int = 0  # older sessions sampled beside them
    positions: int = 0
    steps: int = 0
    loss: float = float("nan")
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stopped_early: bool = False  # max_seconds reached


def replay_sample(older: Sequence[T], n: int, rng: np.random.Generator) -> list[T]:
    """``n`` of ``older`` drawn uniformly without replacement (all of them when fewer)."""
    if n >= len(older):
        return list(older)
    return [older[i] for i in sorted(rng.choice(len(older), size=n, replace=False).tolist())]


def fine_tune(
    model: SessionTransformer,
    vocab: ItemVocab,
    window: Sequence[Session],
    older: Sequence[Session],
    cfg: UpdateConfig = UpdateConfig(),
    progress: Callable[[str], None] | None = None,
) -> UpdateStats:
    """Train ``model`` in place on ``window`` plus a replay sample of ``older`` (sessions as item
    hashes, types, query hashes, mapped through ``vocab``); returns what it did."""
    if model.config.n_items != len(vocab):
        raise ConfigError(f"model has {model.config.n_items} items; the vocabulary {len(vocab)}")
    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(cfg.seed)
    replayed = replay_sample(older, int(round(cfg.replay * len(window))), rng)
    rows = (
        featurize_sessions([*window, *replayed], vocab, model.config.query_buckets)
        if (window or replayed)
        else []
    )
    examples = training_examples(rows, model.config.max_len)
    stats = UpdateStats(sessions=len(window), replayed=len(replayed))
    if not examples:
        return stats
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_sum = 0.0
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model.train()
            for _ in range(cfg.epochs):
                for batch in length_batches(examples, cfg.batch_size, rng):
                    items, types, queries, targets = pad_examples(batch)
                    loss = batch_loss(model, items, types, queries, targets, cfg.negatives)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    n = int((targets >= 0).sum())
                    loss_sum += loss.item() * n
                    stats.positions += n
                    stats.steps += 1
                    if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds:
                        stats.stopped_early = True
                        break
                if stats.stopped_early:
                    break
    finally:
        model.eval()
        torch.set_num_threads(threads_before)
    stats.loss = loss_sum / max(stats.positions, 1)
    stats.seconds, stats.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    if progress is not None:
        progress(
            f"update: {stats.sessions:,} new + {stats.replayed:,} replayed sessions, "
            f"{stats.steps:,} steps, loss {stats.loss:.4f}, {stats.seconds:.1f}s"
        )
    return stats
