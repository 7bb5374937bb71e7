"""A tiny session Transformer and a corpus it learns in seconds, shared by the model and bundle tests.

Import it after ``pytest.importorskip("torch")``: the config and training need torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, PURCHASE, SEARCH, ItemVocab, item_hash
from stream_rec.model import (
    SASRecConfig,
    SessionTransformer,
    TrainConfig,
    TrainMetrics,
    train_model,
)
from stream_rec.model.train import Session

__all__ = ["TINY", "tiny_config", "spread", "successor_corpus", "train_tiny"]

# Small enough to train on one thread in seconds, big enough to learn the successor pattern.
TINY: dict[str, Any] = dict(dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_len=12, query_buckets=64)


def tiny_config(n_items: int, **overrides: Any) -> SASRecConfig:
    """:data:`TINY` for ``n_items`` items, with ``overrides`` (e.g. ``n_layers=2``)."""
    return SASRecConfig(n_items=n_items, **{**TINY, **overrides})


def spread(model: SessionTransformer, scale: float = 0.3) -> SessionTransformer:
    """``model`` in eval mode with noise of ``scale`` added to every parameter: untrained weights
    are too uniform (attention, the readout's weights) for a test to see order in them."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def successor_corpus(
    n_sessions: int, n_items: int, seed: int = 0, *, mixed: bool = False
) -> tuple[list[Session], list[list[str]]]:
    """Sessions of 3-8 events in which item i is followed by item i+1 (mod ``n_items``).

    Returns (model rows per session, item ids per session). All clicks by default; ``mixed``
    makes 10% of events searches (the chain goes on after them) and 5% of the rest purchases.
    """
    rng = np.random.default_rng(seed)
    sessions, ids = [], []
    for _ in range(n_sessions):
        cur, length = int(rng.integers(n_items)), int(rng.integers(3, 9))
        items: list[str | None] = []
        types = []
        for _ in range(length):
            if mixed and rng.random() < 0.1:
                items.append(None)
                types.append(SEARCH)
                continue
            items.append(f"i{cur}")
            types.append(PURCHASE if mixed and rng.random() < 0.05 else CLICK)
            cur = (cur + 1) % n_items
        n = len(items)
        queries = np.zeros((n, MAX_QUERY_TOKENS), np.uint32)
        queries[np.array(types) == SEARCH, 0] = 12345
        sessions.append(
            (
                np.array([item_hash(i) if i else 0 for i in items], np.int64),
                np.array(types, np.uint8),
                queries,
            )
        )
        ids.append([i for i in items if i])
    return sessions, ids


def train_tiny(
    sessions: list[Session],
    vocab: ItemVocab,
    progress: Callable[[str], None] | None = None,
    **train: Any,
) -> tuple[SessionTransformer, TrainMetrics]:
    """A :func:`tiny_config` model trained for 4 epochs at lr 3e-3, batch 32, seed 0, one thread;
    ``train`` overrides those (and sets other :class:`TrainConfig` fields)."""
    config = TrainConfig(**{"epochs": 4, "batch_size": 32, "lr": 3e-3, "seed": 0, "threads": 1, **train})
    return train_model(sessions, vocab, tiny_config(len(vocab)), config, progress=progress)
